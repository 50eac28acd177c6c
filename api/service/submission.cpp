#include "api/service/submission.h"

#include <algorithm>

namespace earnserve::api {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

}  // namespace

ApiError request_timeout_error() {
  return ApiError{408, "invalid_request_error",
                  "the request did not finish within the server's time limit per request "
                  "(--request-timeout-s) and was aborted",
                  "", "request_timeout"};
}

ApiOr<std::unique_ptr<Submission>> Submission::submit(Engine& engine, const ApiCall& call,
                                                      const std::string& base_id) {
  std::unique_ptr<Submission> s(new Submission(engine));
  for (EngineRequest& r : call.engine_requests(base_id)) {
    std::string id = r.request_id;
    StatusOr<std::shared_ptr<RequestStream>> stream = engine.submit(std::move(r));
    // `s` aborts the requests already submitted when it goes away.
    if (!stream.ok()) {
      ApiError e = error_from_status(stream.status(), call.prompt_param());
      if (stream.status().code() == StatusCode::kResourceExhausted) {
        // Engine::validate: the request would never fit in the KV cache, even alone.
        e.message = "the request cannot fit in the KV cache even with nothing else running (" +
                    e.message +
                    "): lower max_tokens, n or beam_width, or give the server more "
                    "--kv-cache-memory";
        e.code = "kv_cache_too_small";
        e.param.clear();  // the product of several fields, not one of them
      }
      return e;
    }
    s->ids_.push_back(std::move(id));
    s->streams_.push_back(*stream);
    s->finished_.push_back(false);
  }
  s->finals_.resize(s->streams_.size());
  return ApiOr<std::unique_ptr<Submission>>(std::move(s));
}

Submission::~Submission() { abort(); }

void Submission::abort() {
  for (size_t i = 0; i < streams_.size(); ++i) {
    if (finished_[i]) continue;
    engine_.abort(ids_[i]);
    finished_[i] = true;
    if (!error_) error_ = ApiError{500, "server_error", "the request was aborted", "", "aborted"};
  }
}

void Submission::read(size_t i, std::chrono::milliseconds timeout) {
  for (std::optional<RequestOutput> out = streams_[i]->next(timeout); out;
       out = streams_[i]->next(std::chrono::milliseconds(0))) {
    if (!out->error.ok()) {
      if (!error_) error_ = error_from_status(out->error);
      finished_[i] = true;
      return;
    }
    if (out->finished) {
      finals_[i] = std::move(*out);
      finished_[i] = true;
      return;
    }
  }
  if (streams_[i]->finished()) {
    if (!error_) {
      error_ = ApiError{500, "server_error", "the engine closed a request without output", "",
                        "internal_error"};
    }
    finished_[i] = true;
  }
}

bool Submission::done() const {
  return error_ || std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; });
}

bool Submission::poll(std::chrono::milliseconds timeout) {
  for (size_t i = 0; i < streams_.size() && !error_; ++i) {
    if (finished_[i]) continue;
    read(i, timeout);
    timeout = std::chrono::milliseconds(0);
  }
  return done();
}

ApiOr<std::vector<RequestOutput>> Submission::collect(Clock::time_point deadline) {
  for (size_t i = 0; i < streams_.size() && !error_; ++i) {
    while (!finished_[i]) {
      const Clock::time_point now = Clock::now();
      if (now >= deadline) {
        error_ = request_timeout_error();
        abort();
        return *error_;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      read(i, std::clamp(left, std::chrono::milliseconds(1), kPollInterval));
      if (error_) break;
    }
  }
  return result();
}

ApiOr<std::vector<RequestOutput>> Submission::result() {
  if (error_) {
    abort();
    return *error_;
  }
  return finals_;
}

}  // namespace earnserve::api
