#include "scheduler/executor/executor.h"

#include <chrono>
#include <string>

#include "core/device.h"
#include "core/logging.h"
#include "model/registry.h"
#include "scheduler/executor/kv_layout.h"
#include "scheduler/executor/model_input.h"
#include "scheduler/parallel/tp_leader.h"

namespace earnserve {

StatusOr<std::unique_ptr<Executor>> Executor::create(const ExecutorOptions& options, int rank) {
  const TensorParallelOptions& tp = options.tensor_parallel;
  ES_CHECK(rank == 0 || (rank >= 1 && rank < tp.size)) << "rank " << rank;
  if (options.block_size < 1 || options.block_size > 256) {
    return invalid_argument("block_size must be in [1, 256]");
  }
  if (options.earn_block_size < 0 || options.earn_block_size > 256) {
    return invalid_argument("earn_block_size must be in [1, 256], or 0 for block_size");
  }
  std::unique_ptr<Executor> e(new Executor(options));
  if (options.device == Device::kCUDA && tp.size <= 1 && options.cuda_device >= 0) {
    ES_RETURN_IF_ERROR(select_cuda_device(options.cuda_device));
  }
  LoadOptions load;
  load.weight_dtype = options.weight_dtype;
  load.device = options.device;
  if (tp.size > 1) {
    if (rank == 0) {
      ES_ASSIGN_OR_RETURN(e->tp_, TpLeader::start(tp, options.device));
      load.tensor_parallel.comm = &e->tp_->comm();
    } else {
      ES_ASSIGN_OR_RETURN(e->comm_, join_communicator(tp, rank, options.device));
      load.tensor_parallel.comm = e->comm_.get();
    }
    load.tensor_parallel.rank = rank;
    load.tensor_parallel.size = tp.size;
  }
  ES_ASSIGN_OR_RETURN(e->model_, load_causal_lm(options.model_dir, load));
  // Under tensor parallelism each rank stores its share of the KV heads; block ids are the same
  // on every rank.
  ES_ASSIGN_OR_RETURN(KvCache cache, KvCache::create(kv_cache_options(
                                         options, e->config(), e->model_->num_local_kv_heads())));
  e->kv_cache_ = std::make_unique<KvCache>(std::move(cache));
  if (e->tp_) ES_RETURN_IF_ERROR(e->tp_->await_ready(e->tp_ready()));
  return e;
}

Executor::Executor(const ExecutorOptions& options) : options_(options) {}

Executor::~Executor() = default;

TpReady Executor::tp_ready() const {
  const ModelConfig& cfg = config();
  TpReady ready;
  ready.num_hidden_layers = cfg.num_hidden_layers;
  ready.vocab_size = cfg.vocab_size;
  ready.head_dim = cfg.head_dim;
  ready.num_local_kv_heads = model_->num_local_kv_heads();
  ready.block_size = options_.block_size;
  for (const KvGroupSpec& g : kv_groups()) ready.block_size_per_group.push_back(g.block_size);
  for (int n : num_blocks_per_group()) ready.num_blocks_per_group.push_back(n);
  return ready;
}

StatusOr<Tensor> Executor::execute(const SchedulerStep& step, BlockManager& block_manager,
                                   std::span<const int32_t> logits_tokens) {
  const std::vector<BlockCopy> copies = block_manager.take_pending_copies();
  const int num_layers = static_cast<int>(config().num_hidden_layers);
  const ModelInput input =
      build_model_input(step, block_manager, num_layers, options_.device, logits_tokens);
  ES_ASSIGN_OR_RETURN(Tensor logits, forward(input.batch, copies));
  if (options_.device == Device::kCPU) return logits;
  return logits.to(Device::kCPU);
}

StatusOr<Tensor> Executor::forward(const ForwardBatch& batch,
                                   const std::vector<BlockCopy>& copies) {
  const bool subset = batch.logits_token_ids.defined();
  if (subset && (tp_ || comm_)) {
    return invalid_argument("logits for a subset of the vocabulary need a single rank");
  }
  const int64_t width = subset ? batch.logits_token_ids.numel() : config().vocab_size;
  ES_ASSIGN_OR_RETURN(Tensor logits, Tensor::empty({batch.logits_indices.numel(), width},
                                                   DType::kF32, options_.device));
  if (tp_) ES_RETURN_IF_ERROR(tp_->send_step(batch, copies));
  if (!copies.empty()) ES_RETURN_IF_ERROR(kv_cache_->execute_copies(copies));
  Status status = model_->forward(batch, kv_cache_->refs(), logits);
  if (!status.ok() && tp_) {
    // A collective fails when a peer dies; what the workers said says why.
    const std::string workers = tp_->worker_errors(std::chrono::milliseconds(500));
    return unavailable("tensor-parallel step failed: " + status.message() +
                       (workers.empty() ? "" : " (" + workers + ")"));
  }
  ES_RETURN_IF_ERROR(status);
  return logits;
}

Status Executor::check_workers() { return tp_ ? tp_->check_workers() : Status::Ok(); }

}  // namespace earnserve
