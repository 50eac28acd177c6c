// HttpServer: the OpenAI-compatible HTTP front end of one Engine (cpp-httplib).
//
// Routes: GET / (the playground page, api/server/playground.h), GET /health, GET /v1/models,
// GET /metrics, the GET routes of the route table (api/service/routes.h: /v1/items, answered from
// the query string) and its POST routes (/tokenize, /detokenize, /v1/completions,
// /v1/chat/completions, /v1/recommendations). Request bodies are parsed and validated by
// api/protocol/; engine calls go through api/service/submission.h, so handler threads reach the
// engine only through Engine::submit/abort/stats/health/options (thread-safe).
//
// Access: with api_keys, every request but GET /health, GET / (and GET /metrics unless
// protect_metrics) needs "Authorization: Bearer KEY", else 401 (api/server/api_keys.h); unknown
// routes included.
//
// Request ids and the access log: every response carries X-Request-Id: the client's own when it
// sent a valid one (api/server/access_log.h), else the response's id for an engine call
// ("cmpl-...", "rec-..."), else one the server makes ("req-..."). With access_log set, one line
// per request (method, path, status, latency, tokens, request id) is written to stdout once the
// response, a whole stream included, has been sent.
//
// Back-pressure: at most `max_queue` requests are in flight (submitted and not yet answered);
// more are answered 429. With request_timeout, a request still unanswered that long after its
// admission is aborted in the engine (its KV pages freed) and answered 408, or its stream ends
// with an error event. A streamed request whose client goes away is aborted in the engine when
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
#include <optional>
#include <string>
#include <vector>

#include "api/protocol/openai_protocol.h"
#include "api/server/access_log.h"
#include "api/server/api_keys.h"
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
  // Bearer keys; non-empty: every path but /health, / (and /metrics) needs one (api_keys.h).
  std::vector<std::string> api_keys;
  bool protect_metrics = false;  // /metrics needs a key too (only with api_keys)
  // A request not answered this long after admission is aborted: 408, or an error event ending
  // its stream. Zero: no limit.
  std::chrono::milliseconds request_timeout{0};
  // One line per request on stdout in this format; unset: no access log.
  std::optional<LogFormat> access_log = LogFormat::kText;
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
  // The pre-routing, post-routing and logger hooks that give each request its id and its
  // access log line.
  void install_request_hooks();
  // A slot among the in-flight requests, or the 429/503 error that refuses one.
  ApiOr<std::shared_ptr<Admission>> admit();
  void reply_error(httplib::Response& res, const ApiError& error);
  void reply_json(httplib::Response& res, const nlohmann::json& body);
  std::string next_request_id(const char* prefix);

  void handle_models(httplib::Response& res);
  // A GET route of the route table: its query string parsed as the body of its endpoint.
  void handle_get(const Route& route, const httplib::Request& req, httplib::Response& res);
  // Any POST route: parse the body for its endpoint, then answer from the tokenizer or run the
  // call through the engine (one response, or a stream).
  void handle_post(const Route& route, const httplib::Request& req, httplib::Response& res);
  // Streams `state`'s completion requests as server-sent events.
  void stream_completion(std::shared_ptr<CallState> state, httplib::Response& res);
  // Refuses a request that needs an API key and lacks the right one; true when refused.
  bool refuse_unauthorized(const httplib::Request& req, httplib::Response& res);

  // Constant after construction
  Engine& engine_;
  const HttpServerOptions options_;
  const ProtocolContext context_;
  const ApiKeys api_keys_;
  std::unique_ptr<httplib::Server> server_;
  const int64_t created_;
  std::unique_ptr<AccessLog> access_log_;  // null: no access log

  ServerMetrics metrics_;
  std::atomic<int> in_flight_{0};
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{0};
  uint64_t id_salt_ = 0;
};

}  // namespace earnserve::api
