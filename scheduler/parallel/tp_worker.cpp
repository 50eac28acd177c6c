#include "scheduler/parallel/tp_worker.h"

#include "cache/kv_cache.h"
#include "core/logging.h"
#include "model/parallel/communicator.h"
#include "model/parallel/control_channel.h"
#include "model/registry.h"
#include "scheduler/executor/kv_layout.h"
#include "scheduler/parallel/tp_messages.h"

namespace earnserve {
namespace {

Status to_device(Tensor& t, Device device) {
  if (!t.defined() || t.device() == device) return Status::Ok();
  ES_ASSIGN_OR_RETURN(t, t.to(device));
  return Status::Ok();
}

Status move_batch(ForwardBatch& batch, Device device) {
  for (Tensor* t : {&batch.token_ids, &batch.positions, &batch.logits_indices}) {
    ES_RETURN_IF_ERROR(to_device(*t, device));
  }
  for (AttentionMetadata& g : batch.groups) {
    for (Tensor* t : {&g.token_indices, &g.slot_mapping, &g.block_tables, &g.seq_lens,
                      &g.query_start_loc, &g.seq_prefix, &g.prefix_lens, &g.query_parents}) {
      ES_RETURN_IF_ERROR(to_device(*t, device));
    }
  }
  return Status::Ok();
}

// Everything after the welcome: communicator, shard, KV pages, then the step loop.
Status serve_steps(const EngineOptions& options, int rank, ControlConnection& conn) {
  const TensorParallelOptions& tp = options.tensor_parallel;
  const RendezvousOptions rendezvous = tp.rendezvous(rank);
  std::unique_ptr<Communicator> comm;
  if (options.device == Device::kCUDA) {
    ES_ASSIGN_OR_RETURN(comm, create_nccl_communicator(rendezvous, rank % tp.gpus_per_node));
  } else {
    ES_ASSIGN_OR_RETURN(comm, create_gloo_communicator(rendezvous));
  }
  LoadOptions load;
  load.weight_dtype = options.weight_dtype;
  load.device = options.device;
  load.tensor_parallel.rank = rank;
  load.tensor_parallel.size = tp.size;
  load.tensor_parallel.comm = comm.get();
  ES_ASSIGN_OR_RETURN(std::unique_ptr<CausalLM> model, load_causal_lm(options.model_dir, load));
  const ModelConfig& config = model->config();
  ES_ASSIGN_OR_RETURN(KvCache kv_cache, KvCache::create(engine_kv_cache_options(
                                            options, config, model->num_local_kv_heads())));
  TpReady ready;
  ready.num_hidden_layers = config.num_hidden_layers;
  ready.vocab_size = config.vocab_size;
  ready.head_dim = config.head_dim;
  ready.num_local_kv_heads = model->num_local_kv_heads();
  ready.block_size = options.block_size;
  for (int n : kv_cache.num_blocks_per_group()) ready.num_blocks_per_group.push_back(n);
  ES_RETURN_IF_ERROR(conn.send(encode_tp_ready(ready),
                               std::chrono::steady_clock::now() + tp.timeout));
  const KvCacheRefs refs{kv_cache.refs().key, kv_cache.refs().value};
  while (true) {
    // Idle time is unbounded: the engine may wait hours for a request. A dead rank 0 closes the
    // connection; a vanished host is caught by TCP keepalive.
    StatusOr<ControlMessage> message = conn.receive(no_control_deadline());
    if (!message.ok()) {
      return unavailable("rank 0 went away: " + message.status().message());
    }
    if (message->type == static_cast<uint16_t>(TpMessageType::kShutdown)) return Status::Ok();
    ES_ASSIGN_OR_RETURN(TpStep step, decode_tp_step(*message));
    if (!step.copies.empty()) ES_RETURN_IF_ERROR(kv_cache.execute_copies(step.copies));
    ES_RETURN_IF_ERROR(move_batch(step.batch, options.device));
    ES_ASSIGN_OR_RETURN(Tensor logits, Tensor::empty({step.batch.logits_indices.numel(),
                                                      config.vocab_size},
                                                     DType::kF32, options.device));
    ES_RETURN_IF_ERROR(model->forward(step.batch, refs, logits));
  }
}

}  // namespace

Status run_tp_worker(const EngineOptions& options, int rank) {
  const TensorParallelOptions& tp = options.tensor_parallel;
  ES_CHECK(rank >= 1 && rank < tp.size);
  ES_RETURN_IF_ERROR(validate_rendezvous_options(tp.rendezvous(rank)));
  const ControlDeadline deadline = std::chrono::steady_clock::now() + tp.timeout;
  ES_ASSIGN_OR_RETURN(
      std::unique_ptr<ControlConnection> conn,
      ControlConnection::connect(tp.master_addr, tp.resolved_control_port(), deadline));
  ES_RETURN_IF_ERROR(conn->send(encode_tp_hello({rank, tp.size}), deadline));
  ES_ASSIGN_OR_RETURN(ControlMessage welcome, conn->receive(deadline));
  ES_RETURN_IF_ERROR(decode_tp_empty(welcome, TpMessageType::kWelcome)
                         .with_prefix("rank 0 refused rank " + std::to_string(rank)));
  Status status = serve_steps(options, rank, *conn);
  if (!status.ok()) {
    // Tell rank 0 why, if it still listens; it fails its requests with this message.
    (void)conn->send(encode_tp_error("rank " + std::to_string(rank) + ": " + status.message()),
                     std::chrono::steady_clock::now() + std::chrono::seconds(1));
  }
  return status;
}

}  // namespace earnserve
