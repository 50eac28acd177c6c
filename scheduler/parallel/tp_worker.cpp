#include "scheduler/parallel/tp_worker.h"

#include "core/logging.h"
#include "model/parallel/control_channel.h"
#include "scheduler/executor/executor.h"
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

// Everything after the welcome: communicator, shard and KV pages (the executor), then the step
// loop.
Status serve_steps(const ExecutorOptions& options, int rank, ControlConnection& conn) {
  ES_ASSIGN_OR_RETURN(std::unique_ptr<Executor> executor, Executor::create(options, rank));
  ES_RETURN_IF_ERROR(conn.send(encode_tp_ready(executor->tp_ready()),
                               std::chrono::steady_clock::now() + options.tensor_parallel.timeout));
  while (true) {
    // Idle time is unbounded: the engine may wait hours for a request. A dead rank 0 closes the
    // connection; a vanished host is caught by TCP keepalive.
    StatusOr<ControlMessage> message = conn.receive(no_control_deadline());
    if (!message.ok()) {
      return unavailable("rank 0 went away: " + message.status().message());
    }
    if (message->type == static_cast<uint16_t>(TpMessageType::kShutdown)) return Status::Ok();
    ES_ASSIGN_OR_RETURN(TpStep step, decode_tp_step(*message));
    ES_RETURN_IF_ERROR(move_batch(step.batch, options.device));
    // Rank 0 samples; a worker's logits are discarded.
    ES_RETURN_IF_ERROR(executor->forward(step.batch, step.copies).status());
  }
}

}  // namespace

Status run_tp_worker(const ExecutorOptions& options, int rank) {
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
