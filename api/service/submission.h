// The submit-and-collect path of an engine call, shared by the HTTP server and `earnserve batch`
// (llama.cpp's one response reader): submit the call's engine requests, read their RequestStreams
// until each has finished, and turn the outputs into the response (api/service/routes.h) or the
// first error into its ApiError.
//
// A Submission owns the streams of one call; destroying it aborts every request whose final
// output it has not read, so a dropped call (a failed submission, an error, a client that went
// away, a timeout) frees its KV pages. Not thread-safe: one thread reads a submission. The engine
// is borrowed and must outlive it.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
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
  // error (an engine error, or a stream closed without a final output). At `deadline` the
  // requests still running are aborted and the answer is request_timeout_error().
  ApiOr<std::vector<RequestOutput>> collect(Clock::time_point deadline = Clock::time_point::max());
  // Reads what has arrived, waiting up to `timeout` for the next output of the first request
  // not yet finished; true once the call is over (collect() then returns at once).
  bool poll(std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  // Aborts every request whose final output has not been read (their KV pages return to the
  // pool); a later collect() returns the first error met before, else a 500 "aborted".
  void abort();

 private:
  explicit Submission(Engine& engine) : engine_(engine) {}

  // Reads the outputs that have arrived on stream i, waiting up to `timeout` for the first.
  void read(size_t i, std::chrono::milliseconds timeout);
  bool done() const;
  ApiOr<std::vector<RequestOutput>> result();

  Engine& engine_;
  std::vector<std::string> ids_;
  std::vector<std::shared_ptr<RequestStream>> streams_;
  std::vector<bool> finished_;
  std::vector<RequestOutput> finals_;  // finals_[i]: request i's final output, once read
  std::optional<ApiError> error_;      // the first error read; the call is over
};

// 408: the call did not finish in time (`earnserve serve --request-timeout-s`).
ApiError request_timeout_error();

}  // namespace earnserve::api
