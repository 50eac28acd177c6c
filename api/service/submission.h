// The submit-and-collect path of an engine call, shared by the HTTP server and `earnserve batch`
// (llama.cpp's one response reader): submit the call's engine requests, read their RequestStreams
// until each has finished, and turn the outputs into the response (api/service/routes.h) or the
// first error into its ApiError.
//
// A Submission owns the streams of one call; destroying it aborts every request whose final
// output it has not read, so a dropped call (a failed submission, an error, a client that went
// away) frees its KV pages. Not thread-safe: one thread reads a submission. The engine is borrowed
// and must outlive it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "api/service/routes.h"
#include "scheduler/engine.h"

namespace earnserve::api {

class Submission {
 public:
  // Submits every engine request of `call` (ids from `base_id`, see ApiCall::engine_requests);
  // a refused one aborts those already submitted and is the error, blamed on the call's prompt.
  // REQUIRES: call.needs_engine().
  static ApiOr<std::unique_ptr<Submission>> submit(Engine& engine, const ApiCall& call,
                                                   const std::string& base_id);
  ~Submission();
  Submission(const Submission&) = delete;
  Submission& operator=(const Submission&) = delete;

  size_t size() const { return streams_.size(); }
  RequestStream& stream(size_t i) { return *streams_[i]; }
  bool finished(size_t i) const { return finished_[i]; }
  // The final output of request i has been read (or its stream ended): no abort on destruction.
  void mark_finished(size_t i) { finished_[i] = true; }

  // Reads every stream until its final output: the final outputs in request order, or the first
  // error (an engine error, or a stream closed without a final output).
  ApiOr<std::vector<RequestOutput>> collect();

 private:
  explicit Submission(Engine& engine) : engine_(engine) {}

  Engine& engine_;
  std::vector<std::string> ids_;
  std::vector<std::shared_ptr<RequestStream>> streams_;
  std::vector<bool> finished_;
};

}  // namespace earnserve::api
