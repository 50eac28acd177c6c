// The NCCL Communicator (CUDA builds only): CUDA tensors, one rank per GPU. Rank 0 draws the
// ncclUniqueId and passes it through the TcpStore. The communicator is non-blocking
// (ncclConfig_t::blocking = 0) so that initialisation and every collective can be watched against
// the timeout and aborted, instead of blocking forever inside NCCL when a peer is gone.
//
// Collectives run on the communicator's own stream, created with cudaStreamCreate: a blocking
// stream, ordered after work the kernels queued on the legacy default stream. Each call returns
// once its collective has finished on the device.

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "model/parallel/collective_args.h"
#include "model/parallel/communicator.h"

namespace earnserve {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kBackend[] = "nccl";
constexpr char kUniqueIdKey[] = "earnserve/nccl_unique_id";

std::optional<ncclDataType_t> nccl_dtype(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    case DType::kU8:
      return ncclUint8;
    case DType::kI8:
      return ncclInt8;
  }
  return std::nullopt;
}

std::string nccl_error(ncclComm_t comm, ncclResult_t result) {
  std::string text = ncclGetErrorString(result);
  const char* last = comm != nullptr ? ncclGetLastError(comm) : nullptr;
  if (last != nullptr && last[0] != '\0') text += std::string(" (") + last + ")";
  return text;
}

// Polls the communicator's asynchronous state until it leaves ncclInProgress or `deadline`.
ncclResult_t wait_async(ncclComm_t comm, Clock::time_point deadline, bool* timed_out) {
  *timed_out = false;
  while (true) {
    ncclResult_t state = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(comm, &state);
    if (r != ncclSuccess) return r;
    if (state != ncclInProgress) return state;
    if (Clock::now() >= deadline) {
      *timed_out = true;
      return ncclInProgress;
    }
    std::this_thread::yield();
  }
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, int cuda_device, int rank, int world_size,
                   std::chrono::milliseconds timeout, Tensor barrier_buffer)
      : comm_(comm),
        stream_(stream),
        cuda_device_(cuda_device),
        rank_(rank),
        world_size_(world_size),
        timeout_(timeout),
        barrier_buffer_(std::move(barrier_buffer)) {}

  ~NcclCommunicator() override {
    cudaSetDevice(cuda_device_);
    if (comm_ != nullptr) {
      bool timed_out = false;
      if (!broken_ && ncclCommFinalize(comm_) == ncclSuccess &&
          wait_async(comm_, Clock::now() + timeout_, &timed_out) == ncclSuccess) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  Status all_reduce_sum(Tensor& t) override {
    ES_RETURN_IF_ERROR(check_usable());
    ES_RETURN_IF_ERROR(check_collective_tensor(t, Device::kCUDA, kBackend, "all_reduce_sum"));
    std::optional<ncclDataType_t> dtype = nccl_dtype(t.dtype());
    if (!dtype || t.dtype() == DType::kU8 || t.dtype() == DType::kI8) {
      return invalid_argument(std::string("nccl all_reduce_sum: dtype ") + dtype_name(t.dtype()) +
                              " is not supported");
    }
    if (t.numel() == 0) return Status::Ok();
    return run("all_reduce_sum", [&] {
      return ncclAllReduce(t.raw_data(), t.raw_data(), static_cast<size_t>(t.numel()), *dtype,
                           ncclSum, comm_, stream_);
    });
  }

  Status all_gather(const Tensor& in, Tensor& out) override {
    ES_RETURN_IF_ERROR(check_usable());
    ES_RETURN_IF_ERROR(check_collective_tensor(in, Device::kCUDA, kBackend, "all_gather"));
    ES_RETURN_IF_ERROR(prepare_all_gather_output(in, out, world_size_, kBackend));
    if (in.numel() == 0) return Status::Ok();
    return run("all_gather", [&] {
      return ncclAllGather(in.raw_data(), out.raw_data(), in.nbytes(), ncclUint8, comm_, stream_);
    });
  }

  Status broadcast(Tensor& t, int root) override {
    ES_RETURN_IF_ERROR(check_usable());
    ES_RETURN_IF_ERROR(check_collective_tensor(t, Device::kCUDA, kBackend, "broadcast"));
    ES_RETURN_IF_ERROR(check_broadcast_root(root, world_size_, kBackend));
    if (t.numel() == 0) return Status::Ok();
    return run("broadcast", [&] {
      return ncclBroadcast(t.raw_data(), t.raw_data(), t.nbytes(), ncclUint8, root, comm_, stream_);
    });
  }

  // NCCL has no barrier; a one-element all-reduce waits for every rank just the same.
  Status barrier() override {
    ES_RETURN_IF_ERROR(check_usable());
    return run("barrier", [&] {
      return ncclAllReduce(barrier_buffer_.raw_data(), barrier_buffer_.raw_data(), 1, ncclFloat32,
                           ncclSum, comm_, stream_);
    });
  }

 private:
  Status check_usable() const {
    if (broken_) {
      return failed_precondition("nccl communicator (rank " + std::to_string(rank_) +
                                 ") is unusable after an earlier failure: " + broken_->to_string());
    }
    return Status::Ok();
  }

  std::string where(const char* op) const {
    return std::string("nccl ") + op + " (rank " + std::to_string(rank_) + " of " +
           std::to_string(world_size_) + ")";
  }

  // Enqueues one collective and waits for it on the device, up to the timeout. A failure or a
  // timeout aborts the NCCL communicator and breaks this one.
  template <typename F>
  Status run(const char* op, F&& enqueue) {
    const Clock::time_point deadline = Clock::now() + timeout_;
    if (cudaError_t e = cudaSetDevice(cuda_device_); e != cudaSuccess) {
      return internal_error(where(op) + ": cudaSetDevice: " + cudaGetErrorString(e));
    }
    ncclResult_t r = enqueue();
    if (r != ncclSuccess && r != ncclInProgress)
      return fail(unavailable(where(op) + ": " + nccl_error(comm_, r)));
    bool timed_out = false;
    r = wait_async(comm_, deadline, &timed_out);
    if (timed_out) return fail(deadline_exceeded(where(op) + ": not enqueued before the timeout"));
    if (r != ncclSuccess) return fail(unavailable(where(op) + ": " + nccl_error(comm_, r)));
    while (true) {
      cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) {
        return fail(internal_error(where(op) + ": " + cudaGetErrorString(e)));
      }
      ncclResult_t state = ncclSuccess;
      ncclCommGetAsyncError(comm_, &state);
      if (state != ncclSuccess && state != ncclInProgress) {
        return fail(unavailable(where(op) + ": " + nccl_error(comm_, state)));
      }
      if (Clock::now() >= deadline) {
        return fail(deadline_exceeded(where(op) + ": not finished before the timeout"));
      }
      std::this_thread::yield();
    }
  }

  // Aborting releases kernels stuck waiting on a peer that is gone.
  Status fail(Status status) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
    broken_ = status;
    return status;
  }

  // Null once aborted.
  ncclComm_t comm_;
  // Constant after construction
  cudaStream_t stream_;
  int cuda_device_;
  int rank_;
  int world_size_;
  std::chrono::milliseconds timeout_;
  Tensor barrier_buffer_;  // [1] f32 on the GPU
  std::optional<Status> broken_;
};

}  // namespace

StatusOr<std::unique_ptr<Communicator>> create_nccl_communicator(const RendezvousOptions& options,
                                                                 int cuda_device) {
  ES_RETURN_IF_ERROR(validate_rendezvous_options(options));
  const std::string who = "nccl rendezvous (rank " + std::to_string(options.rank) + " of " +
                          std::to_string(options.world_size) + ", GPU " +
                          std::to_string(cuda_device) + ")";
  int num_devices = 0;
  if (cudaError_t e = cudaGetDeviceCount(&num_devices); e != cudaSuccess) {
    return unavailable(who + ": no CUDA device: " + cudaGetErrorString(e));
  }
  if (cuda_device < 0 || cuda_device >= num_devices) {
    return invalid_argument(who + ": GPU " + std::to_string(cuda_device) + " is outside [0, " +
                            std::to_string(num_devices) + ")");
  }
  if (cudaError_t e = cudaSetDevice(cuda_device); e != cudaSuccess) {
    return unavailable(who + ": cudaSetDevice: " + cudaGetErrorString(e));
  }

  ES_ASSIGN_OR_RETURN(std::unique_ptr<TcpStore> store, TcpStore::open(options));
  ncclUniqueId id;
  if (options.rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return unavailable(who + ": ncclGetUniqueId: " + ncclGetErrorString(r));
    }
    std::vector<char> bytes(id.internal, id.internal + sizeof(id.internal));
    ES_RETURN_IF_ERROR(
        store->client().set(kUniqueIdKey, bytes, store->deadline()).with_prefix(who));
  } else {
    ES_RETURN_IF_ERROR(store->client().wait({kUniqueIdKey}, store->deadline()).with_prefix(who));
    StatusOr<std::vector<char>> bytes = store->client().get(kUniqueIdKey, store->deadline());
    if (!bytes.ok()) return bytes.status().with_prefix(who);
    if (bytes->size() != sizeof(id.internal)) {
      return data_loss(who + ": the store holds a " + std::to_string(bytes->size()) +
                       "-byte NCCL id, expected " + std::to_string(sizeof(id.internal)));
    }
    std::memcpy(id.internal, bytes->data(), sizeof(id.internal));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, options.world_size, id, options.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    if (comm != nullptr) ncclCommAbort(comm);
    return unavailable(who + ": ncclCommInitRankConfig: " + ncclGetErrorString(r));
  }
  bool timed_out = false;
  r = wait_async(comm, store->deadline(), &timed_out);
  if (timed_out || r != ncclSuccess) {
    std::string detail = nccl_error(comm, r);
    ncclCommAbort(comm);
    if (timed_out) return deadline_exceeded(who + ": not every rank joined before the timeout");
    return unavailable(who + ": " + detail);
  }

  cudaStream_t stream = nullptr;
  if (cudaError_t e = cudaStreamCreate(&stream); e != cudaSuccess) {
    ncclCommAbort(comm);
    return internal_error(who + ": cudaStreamCreate: " + cudaGetErrorString(e));
  }
  StatusOr<Tensor> barrier_buffer = Tensor::zeros({1}, DType::kF32, Device::kCUDA);
  if (!barrier_buffer.ok()) {
    ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return barrier_buffer.status().with_prefix(who);
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, stream, cuda_device, options.rank,
                                                            options.world_size, options.timeout,
                                                            std::move(barrier_buffer).value()));
}

}  // namespace earnserve
