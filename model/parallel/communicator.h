// Communicator: the collectives that tensor-parallel workers need, one object per rank. Two
// implementations: Gloo over TCP for CPU tensors (gloo_communicator.cpp) and NCCL for CUDA
// tensors (nccl_communicator.cpp, CUDA builds only; elsewhere its factory returns "built
// without CUDA"). Both meet through the TcpStore that rank 0 hosts (tcp_store.h).
//
// Every rank calls the same collectives in the same order with tensors of the same shape and
// dtype. Each call is bounded by RendezvousOptions::timeout: a rank that never arrives gives
// DEADLINE_EXCEEDED, a rank that dies gives UNAVAILABLE or DEADLINE_EXCEEDED. After a failed
// collective the communicator is broken and every later call returns FAILED_PRECONDITION.
//
// Thread-compatible: a communicator is used by one thread at a time (its rank's worker).
#pragma once

#include <memory>

#include "core/status.h"
#include "core/tensor.h"
#include "model/parallel/tcp_store.h"

namespace earnserve {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In place: every rank ends with the element-wise sum over ranks. f32, bf16, f16, i32, i64.
  virtual Status all_reduce_sum(Tensor& t) = 0;
  // in:  [n, ...] on every rank, same shape.
  // out: [world_size * n, ...], rank r's `in` at rows [r * n, (r + 1) * n). Allocated when
  //      undefined, else it must have exactly that shape and in's dtype and device.
  virtual Status all_gather(const Tensor& in, Tensor& out) = 0;
  // In place: every rank ends with `root`'s t. Any dtype.
  virtual Status broadcast(Tensor& t, int root) = 0;
  // Returns once every rank has entered the barrier.
  virtual Status barrier() = 0;
};

// CPU tensors over Gloo's TCP transport. Returns once all world_size ranks have joined, or
// DEADLINE_EXCEEDED after options.timeout. Sets SIGPIPE to ignored when it has the default
// action, so that a dead peer is an error rather than the end of this process.
StatusOr<std::unique_ptr<Communicator>> create_gloo_communicator(const RendezvousOptions& options);

// CUDA tensors on GPU `cuda_device` over NCCL; the ncclUniqueId travels through the TcpStore.
// One rank per GPU. UNIMPLEMENTED in builds without CUDA.
StatusOr<std::unique_ptr<Communicator>> create_nccl_communicator(const RendezvousOptions& options,
                                                                 int cuda_device);

}  // namespace earnserve
