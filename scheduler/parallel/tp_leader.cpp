#include "scheduler/parallel/tp_leader.h"

#include <thread>

#include "core/device.h"

namespace earnserve {

StatusOr<std::unique_ptr<TpLeader>> TpLeader::start(const TensorParallelOptions& options,
                                                    Device device) {
  ES_RETURN_IF_ERROR(validate_rendezvous_options(options.rendezvous(0)));
  if (options.size < 2) return invalid_argument("tensor parallelism needs at least 2 ranks");
  std::unique_ptr<TpLeader> leader(new TpLeader(options));
  const ControlDeadline deadline = leader->deadline();
  ES_ASSIGN_OR_RETURN(leader->listener_, ControlListener::listen(options.master_addr,
                                                                 options.resolved_control_port()));
  leader->connections_.resize(static_cast<size_t>(options.size - 1));
  for (int joined = 0; joined < options.size - 1; ++joined) {
    StatusOr<std::unique_ptr<ControlConnection>> conn = leader->listener_->accept(deadline);
    if (!conn.ok()) {
      std::string missing;
      for (int r = 1; r < options.size; ++r) {
        if (!leader->connections_[static_cast<size_t>(r - 1)]) {
          missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        }
      }
      return Status(conn.status().code(), "tensor parallelism: worker rank(s) " + missing +
                                              " did not connect to " + options.master_addr + ":" +
                                              std::to_string(options.resolved_control_port()) +
                                              " within " + std::to_string(options.timeout.count()) +
                                              " ms");
    }
    StatusOr<ControlMessage> message = (*conn)->receive(deadline);
    if (!message.ok()) return message.status().with_prefix("tensor parallelism: worker hello");
    StatusOr<TpHello> hello = decode_tp_hello(*message);
    if (!hello.ok()) return hello.status().with_prefix("tensor parallelism: worker hello");
    std::string problem;
    if (hello->world_size != options.size) {
      problem = "rank " + std::to_string(hello->rank) + " was started with tensor-parallel size " +
                std::to_string(hello->world_size) + ", rank 0 with " + std::to_string(options.size);
    } else if (hello->rank < 1 || hello->rank >= options.size) {
      problem = "a worker claims rank " + std::to_string(hello->rank) + ", outside [1, " +
                std::to_string(options.size) + ")";
    } else if (leader->connections_[static_cast<size_t>(hello->rank - 1)]) {
      problem = "two workers claim rank " + std::to_string(hello->rank);
    }
    if (!problem.empty()) {
      (void)(*conn)->send(encode_tp_error(problem), deadline);
      return invalid_argument("tensor parallelism: " + problem);
    }
    leader->connections_[static_cast<size_t>(hello->rank - 1)] = std::move(conn).value();
  }
  for (auto& conn : leader->connections_) {
    ES_RETURN_IF_ERROR(conn->send(encode_tp_empty(TpMessageType::kWelcome), deadline));
  }
  ES_ASSIGN_OR_RETURN(leader->comm_, join_communicator(options, /*rank=*/0, device));
  return leader;
}

TpLeader::~TpLeader() {
  // A broken group's workers see their connection close and exit with an error.
  if (broken_) return;
  const ControlDeadline deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& conn : connections_) {
    if (conn) (void)conn->send(encode_tp_empty(TpMessageType::kShutdown), deadline);
  }
}

Status TpLeader::abandon(const Status& status) {
  broken_ = true;
  const ControlDeadline deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& conn : connections_) {
    (void)conn->send(encode_tp_error("rank 0 gave up: " + status.message()), deadline);
  }
  return status;
}

ControlDeadline TpLeader::deadline() const {
  return std::chrono::steady_clock::now() + options_.timeout;
}

Status TpLeader::await_ready(const TpReady& own) {
  const ControlDeadline deadline = this->deadline();
  for (size_t i = 0; i < connections_.size(); ++i) {
    const std::string rank = "rank " + std::to_string(i + 1);
    StatusOr<ControlMessage> message = connections_[i]->receive(deadline);
    if (!message.ok()) {
      return abandon(
          message.status().with_prefix("tensor parallelism: " + rank + " did not get ready"));
    }
    StatusOr<TpReady> ready = decode_tp_ready(*message);
    if (!ready.ok()) return abandon(ready.status().with_prefix("tensor parallelism: " + rank));
    if (!(*ready == own)) {
      return abandon(failed_precondition(
          "tensor parallelism: " + rank + " loaded " + describe_tp_ready(*ready) + "; rank 0 has " +
          describe_tp_ready(own) +
          " (start every rank with the same --model, --block-size and --kv-cache-memory)"));
    }
  }
  return Status::Ok();
}

Status TpLeader::send_step(const ForwardBatch& batch, const std::vector<BlockCopy>& copies) {
  if (broken_) return failed_precondition("tensor parallelism: the group failed earlier");
  ES_ASSIGN_OR_RETURN(ControlMessage message, encode_tp_step(batch, copies));
  const ControlDeadline deadline = this->deadline();
  for (size_t i = 0; i < connections_.size(); ++i) {
    Status s = connections_[i]->send(message, deadline);
    if (!s.ok()) {
      broken_ = true;
      return unavailable("tensor parallelism: rank " + std::to_string(i + 1) +
                         " cannot take the step: " + s.message());
    }
  }
  return Status::Ok();
}

Status TpLeader::check_workers() {
  for (size_t i = 0; i < connections_.size(); ++i) {
    if (!connections_[i]->has_input()) continue;
    // A worker only speaks up to say it failed, or by going away.
    StatusOr<ControlMessage> message =
        connections_[i]->receive(std::chrono::steady_clock::now() + std::chrono::seconds(1));
    broken_ = true;
    const std::string rank = "tensor parallelism: rank " + std::to_string(i + 1);
    if (!message.ok()) return unavailable(rank + " is gone: " + message.status().message());
    if (message->type == static_cast<uint16_t>(TpMessageType::kError)) {
      return unavailable(
          rank + " failed: " + std::string(message->payload.begin(), message->payload.end()));
    }
    return unavailable(rank + " sent an unexpected " + tp_message_name(message->type) + " message");
  }
  return Status::Ok();
}

std::string TpLeader::worker_errors(std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  std::string errors;
  std::vector<bool> reported(connections_.size(), false);
  while (true) {
    for (size_t i = 0; i < connections_.size(); ++i) {
      if (reported[i] || !connections_[i]->has_input()) continue;
      reported[i] = true;
      StatusOr<ControlMessage> message =
          connections_[i]->receive(std::chrono::steady_clock::now() + std::chrono::seconds(1));
      std::string what = !message.ok() ? "gone (" + message.status().message() + ")"
                         : message->type == static_cast<uint16_t>(TpMessageType::kError)
                             ? std::string(message->payload.begin(), message->payload.end())
                             : std::string("unexpected ") + tp_message_name(message->type);
      errors += (errors.empty() ? "" : "; ") + ("rank " + std::to_string(i + 1) + ": " + what);
    }
    if (!errors.empty() || std::chrono::steady_clock::now() >= until) return errors;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace earnserve
