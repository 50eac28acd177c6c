#include "scheduler/request.h"

namespace earnserve {

const char* score_over_name(ScoreOver s) {
  return s == ScoreOver::kCatalogue ? "catalogue" : "vocabulary";
}

std::optional<ScoreOver> parse_score_over(const std::string& name) {
  if (name == "vocabulary") return ScoreOver::kVocabulary;
  if (name == "catalogue") return ScoreOver::kCatalogue;
  return std::nullopt;
}

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kAbort:
      return "abort";
    case FinishReason::kNone:
      return "";
  }
  return "";
}

void RequestStream::push(RequestOutput output) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (output.finished) finished_ = true;
    queue_.push_back(std::move(output));
  }
  cv_.notify_all();
}

std::optional<RequestOutput> RequestStream::next(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return !queue_.empty() || finished_; })) {
    return std::nullopt;
  }
  if (queue_.empty()) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_ && queue_.empty();
}

}  // namespace earnserve
