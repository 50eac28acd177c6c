// HttpServer: the OpenAI-compatible HTTP front end of one Engine (cpp-httplib).
//
// Routes: GET /health, GET /v1/models, GET /metrics, and the POST routes of the route table
// (api/service/routes.h: /tokenize, /detokenize, /v1/completions, /v1/chat/completions,
// /v1/recommendations). Request bodies are parsed and validated by api/protocol/; engine calls go
// through api/service/submission.h, so handler threads reach the engine only through
// Engine::submit/abort/stats/health/options (thread-safe).
//
// Back-pressure: at most `max_queue` requests are in flight (submitted and not yet answered);
// more are answered 429. A streamed request whose client goes away is aborted in the engine when
// the next chunk cannot be written. cpp-httplib 0.11 has no Request::is_connection_closed, so a
// non-streamed request runs to completion (bounded by its max_tokens) even if its client left.
// shutdown() stops admitting (503), waits for in-flight requests, then stops listening.
//
// The engine is borrowed and must outlive the server. All methods are thread-safe; serve()
// blocks the calling thread until shutdown().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "api/protocol/openai_protocol.h"
#include "api/server/metrics.h"
#include "api/service/routes.h"
#include "core/status.h"
#include "scheduler/engine.h"

namespace httplib {
class Server;
class Request;
class Response;
}  // namespace httplib

namespace earnserve::api {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see bind())
  int max_queue = 256;
  int64_t max_body_bytes = 4 << 20;
};

class HttpServer {
 public:
  // `context` describes the served model (name, tokenizer, limits, catalogue, chat template).
  HttpServer(Engine& engine, HttpServerOptions options, ProtocolContext context);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket; returns the port (useful with port 0).
  StatusOr<int> bind();
  // Serves until shutdown(). REQUIRES: bind() succeeded.
  void serve();
  // Stops admitting requests, waits up to `drain_timeout` for in-flight ones, stops serving.
  void shutdown(std::chrono::milliseconds drain_timeout);

  int num_in_flight() const { return in_flight_.load(); }

 private:
  class Admission;
  struct CallState;

  void install_routes();
  // A slot among the in-flight requests, or the 429/503 error that refuses one.
  ApiOr<std::shared_ptr<Admission>> admit();
  void reply_error(httplib::Response& res, const ApiError& error);
  void reply_json(httplib::Response& res, const nlohmann::json& body);
  std::string next_request_id(const char* prefix);

  void handle_models(httplib::Response& res);
  // Any POST route: parse the body for its endpoint, then answer from the tokenizer or run the
  // call through the engine (one response, or a stream).
  void handle_post(const Route& route, const httplib::Request& req, httplib::Response& res);
  // Streams `state`'s completion requests as server-sent events.
  void stream_completion(std::shared_ptr<CallState> state, httplib::Response& res);

  // Constant after construction
  Engine& engine_;
  const HttpServerOptions options_;
  const ProtocolContext context_;
  std::unique_ptr<httplib::Server> server_;
  const int64_t created_;

  ServerMetrics metrics_;
  std::atomic<int> in_flight_{0};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{0};
  uint64_t id_salt_ = 0;
};

}  // namespace earnserve::api
