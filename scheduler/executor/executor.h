// Executor: runs the model. It owns the model (its shard under tensor parallelism) and the
// model's paged KV storage; on rank 0 of a tensor-parallel group it also owns the TpLeader that
// sends every step to the workers (scheduler/parallel/tp_leader.h), on a worker rank the
// communicator its shard's collectives run on. Every caller runs the model through it: the
// engine (the target model), the draft model of speculative beam search
// (scheduler/speculative/beam_drafter.h) and each tensor-parallel worker
// (scheduler/parallel/tp_worker.h). The forward sequence, written once:
//   execute(): take the block manager's pending block copies -> build the model input
//              (scheduler/executor/model_input.h) -> forward() -> logits on the host
//   forward(): [rank 0 of a group: send the step to the workers] -> execute the block copies
//              -> run the model -> logits; a failed step under tensor parallelism names what
//              the workers said
// Which sequence holds which block is the block manager's business (cache/block_manager.h);
// build it from kv_groups() and num_blocks_per_group().
//
// Not thread-safe: owned and driven by one thread (the engine thread, or a worker's).
#pragma once

#include <memory>
#include <vector>

#include "cache/block_copy.h"
#include "cache/block_manager.h"
#include "cache/kv_cache.h"
#include "core/status.h"
#include "core/tensor.h"
#include "model/causal_lm.h"
#include "model/forward_batch.h"
#include "model/parallel/communicator.h"
#include "scheduler/executor/executor_options.h"
#include "scheduler/parallel/tp_messages.h"
#include "scheduler/scheduler.h"

namespace earnserve {

class TpLeader;

class Executor {
 public:
  // Makes the GPU current (device kCUDA without tensor parallelism), joins the tensor-parallel
  // group as `rank` (rank 0 waits for every worker to connect), loads the model (this rank's
  // shard) and allocates the KV pages with kv_cache_options(). Rank 0 of a group then checks
  // that every worker loaded the same (TpLeader::await_ready); a worker reports its tp_ready()
  // itself. REQUIRES: rank == 0, or 1 <= rank < options.tensor_parallel.size.
  static StatusOr<std::unique_ptr<Executor>> create(const ExecutorOptions& options, int rank = 0);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  const ExecutorOptions& options() const { return options_; }
  const ModelConfig& config() const { return model_->config(); }
  const std::vector<KvGroupSpec>& kv_groups() const { return kv_cache_->groups(); }
  const std::vector<int>& num_blocks_per_group() const { return kv_cache_->num_blocks_per_group(); }
  // What this rank loaded, as a tensor-parallel worker reports it to rank 0.
  TpReady tp_ready() const;

  // Runs `step`: the block manager's pending copies, then the model over the step's tokens.
  // Returns the logits of the rows that need them, in step order, on the host:
  // [num_logits, vocab_size] f32, or with `logits_tokens` (ascending token ids) only those
  // tokens' columns: [num_logits, logits_tokens.size()]. REQUIRES: `block_manager` was built
  // from this executor's layout, and Scheduler::schedule (or the drafter) gave every scheduled
  // sequence its slots.
  StatusOr<Tensor> execute(const SchedulerStep& step, BlockManager& block_manager,
                           std::span<const int32_t> logits_tokens = {});
  // One model step on this rank: [rank 0 of a group: sends it to the workers first] executes
  // `copies`, then runs the model. `batch` lives on the executor's device. Returns the logits on
  // the device: [batch.logits_indices.numel(), vocab_size or batch.logits_token_ids.numel()]
  // f32. Tensor-parallel groups compute the whole vocabulary only.
  StatusOr<Tensor> forward(const ForwardBatch& batch, const std::vector<BlockCopy>& copies);

  // Whether this executor leads tensor-parallel workers (rank 0 of a group of size > 1).
  bool leads_workers() const { return tp_ != nullptr; }
  // Rank 0 of a group: UNAVAILABLE when a worker went away or reported an error, without
  // waiting (TpLeader::check_workers). OK otherwise.
  Status check_workers();

 private:
  explicit Executor(const ExecutorOptions& options);

  // Constant after construction.
  ExecutorOptions options_;
  // Before model_, which borrows the communicator of one of them.
  std::unique_ptr<TpLeader> tp_;        // rank 0 of a group
  std::unique_ptr<Communicator> comm_;  // a worker rank
  std::unique_ptr<CausalLM> model_;
  std::unique_ptr<KvCache> kv_cache_;
};

}  // namespace earnserve
