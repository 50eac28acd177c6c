// The Gloo Communicator: CPU tensors over Gloo's TCP transport, full mesh connected through the
// TcpStore. Gloo reports failures by throwing; every call here catches and returns a Status.

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <optional>
#include <string>

#include "core/half.h"
#include "model/parallel/collective_args.h"
#include "model/parallel/communicator.h"

namespace earnserve {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kBackend[] = "gloo";

// Carries the TcpStore's Status through Gloo's rendezvous, which only knows exceptions.
struct StoreError : gloo::IoException {
  explicit StoreError(Status s) : gloo::IoException(s.message()), status(std::move(s)) {}
  Status status;
};

// gloo::rendezvous::Store over a TcpStoreClient. No call outlives the rendezvous deadline.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  explicit GlooStoreAdapter(TcpStore& store) : store_(store) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    throw_if_error(store_.client().set(key, data, store_.deadline()));
  }

  // Gloo's stores block in get() until the key exists.
  std::vector<char> get(const std::string& key) override {
    throw_if_error(store_.client().wait({key}, store_.deadline()));
    StatusOr<std::vector<char>> value = store_.client().get(key, store_.deadline());
    throw_if_error(value.status());
    return std::move(value).value();
  }

  void wait(const std::vector<std::string>& keys) override {
    throw_if_error(store_.client().wait(keys, store_.deadline()));
  }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    throw_if_error(store_.client().wait(keys, std::min(store_.deadline(), Clock::now() + timeout)));
  }

 private:
  static void throw_if_error(const Status& s) {
    if (!s.ok()) throw StoreError(s);
  }

  TcpStore& store_;
};

// Element-wise c = a + b for 16-bit floats, through fp32.
void sum_bf16(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<uint16_t*>(c);
  const auto* x = static_cast<const uint16_t*>(a);
  const auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_bf16(bf16_to_float(x[i]) + bf16_to_float(y[i]));
}

void sum_fp16(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<uint16_t*>(c);
  const auto* x = static_cast<const uint16_t*>(a);
  const auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = float_to_fp16(fp16_to_float(x[i]) + fp16_to_float(y[i]));
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::chrono::milliseconds timeout)
      : context_(std::move(context)), timeout_(timeout) {}

  int rank() const override { return context_->rank; }
  int world_size() const override { return context_->size; }

  Status all_reduce_sum(Tensor& t) override {
    ES_RETURN_IF_ERROR(check_usable());
    ES_RETURN_IF_ERROR(check_collective_tensor(t, Device::kCPU, kBackend, "all_reduce_sum"));
    if (t.numel() == 0) return Status::Ok();
    gloo::AllreduceOptions opts(context_);
    const size_t n = static_cast<size_t>(t.numel());
    switch (t.dtype()) {
      case DType::kF32:
        opts.setOutput(t.data<float>(), n);
        opts.setReduceFunction(
            [](void* c, const void* a, const void* b, size_t k) { gloo::sum<float>(c, a, b, k); });
        break;
      case DType::kI32:
        opts.setOutput(t.data<int32_t>(), n);
        opts.setReduceFunction([](void* c, const void* a, const void* b, size_t k) {
          gloo::sum<int32_t>(c, a, b, k);
        });
        break;
      case DType::kI64:
        opts.setOutput(t.data<int64_t>(), n);
        opts.setReduceFunction([](void* c, const void* a, const void* b, size_t k) {
          gloo::sum<int64_t>(c, a, b, k);
        });
        break;
      case DType::kBF16:
        opts.setOutput(t.data_u16(), n);
        opts.setReduceFunction(&sum_bf16);
        break;
      case DType::kF16:
        opts.setOutput(t.data_u16(), n);
        opts.setReduceFunction(&sum_fp16);
        break;
      default:
        return invalid_argument(std::string("gloo all_reduce_sum: dtype ") + dtype_name(t.dtype()) +
                                " is not supported");
    }
    opts.setTag(next_tag());
    opts.setTimeout(timeout_);
    return run("all_reduce_sum", [&] { gloo::allreduce(opts); });
  }

  Status all_gather(const Tensor& in, Tensor& out) override {
    ES_RETURN_IF_ERROR(check_usable());
    ES_RETURN_IF_ERROR(check_collective_tensor(in, Device::kCPU, kBackend, "all_gather"));
    ES_RETURN_IF_ERROR(prepare_all_gather_output(in, out, world_size(), kBackend));
    if (in.numel() == 0) return Status::Ok();
    gloo::AllgatherOptions opts(context_);
    opts.setInput(static_cast<char*>(in.raw_data()), in.nbytes());
    opts.setOutput(static_cast<char*>(out.raw_data()), out.nbytes());
    opts.setTag(next_tag());
    opts.setTimeout(timeout_);
    return run("all_gather", [&] { gloo::allgather(opts); });
  }

  Status broadcast(Tensor& t, int root) override {
    ES_RETURN_IF_ERROR(check_usable());
    ES_RETURN_IF_ERROR(check_collective_tensor(t, Device::kCPU, kBackend, "broadcast"));
    ES_RETURN_IF_ERROR(check_broadcast_root(root, world_size(), kBackend));
    if (t.numel() == 0) return Status::Ok();
    gloo::BroadcastOptions opts(context_);
    opts.setOutput(static_cast<char*>(t.raw_data()), t.nbytes());
    opts.setRoot(root);
    opts.setTag(next_tag());
    opts.setTimeout(timeout_);
    return run("broadcast", [&] { gloo::broadcast(opts); });
  }

  Status barrier() override {
    ES_RETURN_IF_ERROR(check_usable());
    gloo::BarrierOptions opts(context_);
    opts.setTag(next_tag());
    opts.setTimeout(timeout_);
    return run("barrier", [&] { gloo::barrier(opts); });
  }

 private:
  Status check_usable() const {
    if (broken_) {
      return failed_precondition("gloo communicator (rank " + std::to_string(rank()) +
                                 ") is unusable after an earlier failure: " + broken_->to_string());
    }
    return Status::Ok();
  }

  // Every rank issues the same collectives in the same order, so the tags agree.
  uint32_t next_tag() { return next_tag_++; }

  // Runs one Gloo collective; a throw breaks the communicator.
  template <typename F>
  Status run(const char* op, F&& collective) {
    const Clock::time_point start = Clock::now();
    try {
      collective();
      return Status::Ok();
    } catch (const std::exception& e) {
      const std::string message = std::string("gloo ") + op + " (rank " + std::to_string(rank()) +
                                  " of " + std::to_string(world_size()) + "): " + e.what();
      // Gloo throws the same exception type for a timeout and a lost peer; only the clock tells.
      broken_ =
          Clock::now() - start >= timeout_ ? deadline_exceeded(message) : unavailable(message);
      return *broken_;
    }
  }

  // Constant after construction
  std::shared_ptr<gloo::Context> context_;
  std::chrono::milliseconds timeout_;
  // Per call
  uint32_t next_tag_ = 1;
  std::optional<Status> broken_;
};

StatusOr<std::shared_ptr<gloo::transport::Device>> create_device(const RendezvousOptions& options) {
  gloo::transport::tcp::attr attr;
  if (!options.iface.empty()) {
    attr.iface = options.iface;
  } else if (!options.hostname.empty()) {
    attr.hostname = options.hostname;
  } else {
    char name[256] = {};
    if (gethostname(name, sizeof(name) - 1) != 0) {
      return unavailable("gloo: gethostname failed; set RendezvousOptions::hostname");
    }
    attr.hostname = name;
  }
  try {
    return gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    const std::string what = !options.iface.empty() ? "interface '" + options.iface + "'"
                                                    : "host '" + attr.hostname + "'";
    return unavailable("gloo: no TCP device for " + what + ": " + e.what());
  }
}

// Gloo writes to its sockets with writev, which raises SIGPIPE when a peer has died; the default
// action would kill this process before Gloo could report the lost peer. A handler the program
// installed itself is left alone.
void ignore_sigpipe_unless_handled() {
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

StatusOr<std::unique_ptr<Communicator>> create_gloo_communicator(const RendezvousOptions& options) {
  ignore_sigpipe_unless_handled();
  ES_ASSIGN_OR_RETURN(std::unique_ptr<TcpStore> store, TcpStore::open(options));
  ES_ASSIGN_OR_RETURN(std::shared_ptr<gloo::transport::Device> device, create_device(options));
  const std::string who = "gloo rendezvous (rank " + std::to_string(options.rank) + " of " +
                          std::to_string(options.world_size) + ")";
  auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.world_size);
  context->setTimeout(options.timeout);
  GlooStoreAdapter adapter(*store);
  try {
    context->connectFullMesh(adapter, device);
  } catch (const StoreError& e) {
    return e.status.with_prefix(who);
  } catch (const std::exception& e) {
    if (Clock::now() >= store->deadline()) return deadline_exceeded(who + ": " + e.what());
    return unavailable(who + ": " + e.what());
  }
  auto comm = std::make_unique<GlooCommunicator>(std::move(context), options.timeout);
  // Nobody reads the store after this barrier, so rank 0 may close it.
  Status joined = comm->barrier();
  if (!joined.ok()) return joined.with_prefix(who);
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace earnserve
