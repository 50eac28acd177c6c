#include "api/service/submission.h"

#include <chrono>

namespace earnserve::api {
namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

}  // namespace

ApiOr<std::unique_ptr<Submission>> Submission::submit(Engine& engine, const ApiCall& call,
                                                      const std::string& base_id) {
  std::unique_ptr<Submission> s(new Submission(engine));
  for (EngineRequest& r : call.engine_requests(base_id)) {
    std::string id = r.request_id;
    StatusOr<std::shared_ptr<RequestStream>> stream = engine.submit(std::move(r));
    // `s` aborts the requests already submitted when it goes away.
    if (!stream.ok()) return error_from_status(stream.status(), call.prompt_param());
    s->ids_.push_back(std::move(id));
    s->streams_.push_back(*stream);
    s->finished_.push_back(false);
  }
  return ApiOr<std::unique_ptr<Submission>>(std::move(s));
}

Submission::~Submission() {
  for (size_t i = 0; i < streams_.size(); ++i) {
    if (!finished_[i]) engine_.abort(ids_[i]);
  }
}

ApiOr<std::vector<RequestOutput>> Submission::collect() {
  std::vector<RequestOutput> finals(streams_.size());
  for (size_t i = 0; i < streams_.size(); ++i) {
    while (true) {
      std::optional<RequestOutput> out = streams_[i]->next(kPollInterval);
      if (!out) {
        if (streams_[i]->finished()) {
          return ApiError{500, "server_error", "the engine closed a request without output", "",
                          "internal_error"};
        }
        continue;
      }
      if (!out->error.ok()) return error_from_status(out->error);
      if (out->finished) {
        finals[i] = std::move(*out);
        break;
      }
    }
  }
  for (size_t i = 0; i < streams_.size(); ++i) finished_[i] = true;
  return finals;
}

}  // namespace earnserve::api
