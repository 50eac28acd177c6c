// TpLeader: rank 0's side of a tensor-parallel group. It accepts every worker's control
// connection (scheduler/parallel/tp_messages.h has the conversation), joins the communicator that
// the model's collectives run on (Gloo for CPU engines, NCCL for CUDA ones), checks that every
// worker loaded the same model with the same KV block counts, then sends each step's inputs to
// every worker before rank 0 runs the same forward. Every message is bounded by options.timeout;
// any failure leaves the group broken (the engine then fails for good: a step that some ranks ran
// and others did not cannot be repeated).
//
// Owned by rank 0's Executor (scheduler/executor/executor.h); used by the engine thread only
// (thread-compatible). The communicator it returns is borrowed by the model and must not outlive
// the leader.
#pragma once

#include <memory>
#include <vector>

#include "core/status.h"
#include "model/forward_batch.h"
#include "model/parallel/communicator.h"
#include "model/parallel/control_channel.h"
#include "scheduler/parallel/tp_messages.h"
#include "scheduler/parallel/tp_options.h"

namespace earnserve {

class TpLeader {
 public:
  // Listens on options.master_addr:resolved_control_port(), accepts one hello from each rank
  // 1..size-1 (checking rank and world size), welcomes them, then joins the communicator.
  // DEADLINE_EXCEEDED names the ranks that never came.
  static StatusOr<std::unique_ptr<TpLeader>> start(const TensorParallelOptions& options,
                                                   Device device);
  // Tells the workers to exit (best effort); those of a broken group see the connection close.
  ~TpLeader();
  TpLeader(const TpLeader&) = delete;
  TpLeader& operator=(const TpLeader&) = delete;

  Communicator& comm() { return *comm_; }
  int size() const { return options_.size; }

  // Waits for every worker's ready message and checks it equals rank 0's `own`: a worker's load
  // error comes back as its message ("rank 2: ..."), a mismatch names both sides.
  Status await_ready(const TpReady& own);
  // Sends one step to every worker.
  Status send_step(const ForwardBatch& batch, const std::vector<BlockCopy>& copies);
  // Without waiting: UNAVAILABLE when a worker closed its connection or reported an error
  // (with its message), else OK.
  Status check_workers();
  // Collects what failed workers said, waiting up to `wait` for their messages; used after a
  // failed step to explain a collective's error. Empty when no worker said anything.
  std::string worker_errors(std::chrono::milliseconds wait);

 private:
  explicit TpLeader(const TensorParallelOptions& options) : options_(options) {}
  ControlDeadline deadline() const;
  // Marks the group broken and tells every worker why (best effort); returns `status`.
  Status abandon(const Status& status);

  // Constant after construction
  TensorParallelOptions options_;
  std::unique_ptr<ControlListener> listener_;
  // connections_[r - 1] talks to rank r.
  std::vector<std::unique_ptr<ControlConnection>> connections_;
  std::unique_ptr<Communicator> comm_;
  bool broken_ = false;
};

}  // namespace earnserve
