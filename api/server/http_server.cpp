#include "api/server/http_server.h"

#include <httplib.h>

#include <cstdio>
#include <ctime>
#include <random>
#include <thread>

#include "api/server/playground.h"
#include "api/service/submission.h"
#include "core/logging.h"

namespace earnserve::api {

using nlohmann::json;

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(50);

// Writes the last event of a stream and closes it.
bool end_stream(httplib::DataSink& sink) {
  static constexpr char kDone[] = "data: [DONE]\n\n";
  if (!sink.write(kDone, sizeof(kDone) - 1)) return false;
  sink.done();
  return true;
}

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// What the access log and the X-Request-Id header need to know about the request this thread is
// answering. httplib runs a request's routing, handler, response writing (a whole stream
// included) and logger on one thread, so a thread-local entry set by the pre-routing hook is the
// request's own until the logger has written it.
struct RequestScope {
  Clock::time_point start;
  std::string request_id;  // empty until the client's or the engine call's id is known
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = -1;
  bool routed = false;  // false for requests httplib refused before routing (malformed)
};
thread_local RequestScope t_request;

// The engine call's token counts for the access log, from a response's "usage".
void note_usage(const json& body) {
  if (!body.contains("usage")) return;
  const json& usage = body["usage"];
  t_request.prompt_tokens = usage.value("prompt_tokens", int64_t{-1});
  t_request.completion_tokens = usage.value("completion_tokens", int64_t{-1});
}

}  // namespace

// Holds one in-flight slot; releasing it is the destructor.
class HttpServer::Admission {
 public:
  explicit Admission(std::atomic<int>& counter) : counter_(counter) {}
  ~Admission() { counter_.fetch_sub(1); }
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;

 private:
  std::atomic<int>& counter_;
};

// One engine call of an HTTP request. Its submission aborts whatever has not finished when it
// goes away (before the admission slot is released), so a stream dropped by httplib after a
// failed write frees its KV pages.
struct HttpServer::CallState {
  std::shared_ptr<Admission> admission;
  Clock::time_point deadline = Clock::time_point::max();
  ApiCall call;
  ResponseMeta meta;
  std::unique_ptr<Submission> submission;
};

HttpServer::HttpServer(Engine& engine, HttpServerOptions options, ProtocolContext context)
    : engine_(engine),
      options_(std::move(options)),
      context_(std::move(context)),
      api_keys_(options_.api_keys),
      server_(std::make_unique<httplib::Server>()),
      created_(static_cast<int64_t>(std::time(nullptr))),
      access_log_(options_.access_log ? std::make_unique<AccessLog>(*options_.access_log, stdout)
                                      : nullptr),
      metrics_(context_.served_model_name) {
  std::random_device rd;
  id_salt_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  // Every admitted request holds a worker thread; keep spare workers for /health, /metrics
  // and for answering 429s.
  const int num_threads = std::min(options_.max_queue + 16, 2048);
  server_->new_task_queue = [num_threads] { return new httplib::ThreadPool(num_threads); };
  server_->set_payload_max_length(static_cast<size_t>(options_.max_body_bytes));
  install_request_hooks();
  install_routes();
}

HttpServer::~HttpServer() = default;

StatusOr<int> HttpServer::bind() {
  int port = options_.port;
  if (port == 0) {
    port = server_->bind_to_any_port(options_.host.c_str());
  } else if (!server_->bind_to_port(options_.host.c_str(), port)) {
    port = -1;
  }
  if (port < 0) {
    return unavailable("cannot listen on " + options_.host + ":" + std::to_string(options_.port));
  }
  return port;
}

void HttpServer::serve() { server_->listen_after_bind(); }

void HttpServer::shutdown(std::chrono::milliseconds drain_timeout) {
  draining_ = true;
  const Clock::time_point deadline = Clock::now() + drain_timeout;
  while (in_flight_.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (in_flight_.load() > 0) {
    ES_LOG(Warning) << "shutdown: " << in_flight_.load() << " requests still in flight";
  }
  server_->stop();
}

ApiOr<std::shared_ptr<HttpServer::Admission>> HttpServer::admit() {
  if (draining_) {
    return ApiError{503, "server_error", "the server is shutting down", "", "service_unavailable"};
  }
  if (in_flight_.fetch_add(1) >= options_.max_queue) {
    in_flight_.fetch_sub(1);
    return ApiError{
        429, "rate_limit_error",
        "too many requests in flight (max " + std::to_string(options_.max_queue) + "); retry later",
        "", "queue_full"};
  }
  return std::make_shared<Admission>(in_flight_);
}

void HttpServer::reply_error(httplib::Response& res, const ApiError& error) {
  metrics_.count_http_error(error.http_status);
  res.status = error.http_status;
  res.set_content(error.to_json().dump(), "application/json");
}

void HttpServer::reply_json(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

std::string HttpServer::next_request_id(const char* prefix) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s-%016llx%08llx", prefix,
                static_cast<unsigned long long>(id_salt_),
                static_cast<unsigned long long>(next_id_.fetch_add(1)));
  return buf;
}

bool HttpServer::refuse_unauthorized(const httplib::Request& req, httplib::Response& res) {
  if (!api_keys_.enabled() || !ApiKeys::protects(req.path, options_.protect_metrics)) return false;
  const std::string authorization = req.get_header_value("Authorization");
  if (api_keys_.accepts(authorization)) return false;
  res.set_header("WWW-Authenticate", "Bearer");
  reply_error(res, ApiKeys::unauthorized(authorization));
  return true;
}

void HttpServer::install_request_hooks() {
  server_->set_pre_routing_handler([](const httplib::Request& req, httplib::Response&) {
    t_request = RequestScope{Clock::now(), "", -1, -1, true};
    const std::string id = req.get_header_value("X-Request-Id");
    if (is_valid_request_id(id)) t_request.request_id = id;
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // Runs for every response, just before its headers are written.
  server_->set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    if (!t_request.routed) t_request = RequestScope{Clock::now(), "", -1, -1, false};
    if (t_request.request_id.empty()) t_request.request_id = next_request_id("req");
    res.set_header("X-Request-Id", t_request.request_id);
  });
  server_->set_logger([this](const httplib::Request& req, const httplib::Response& res) {
    if (access_log_) {
      access_log_->write(AccessEntry{req.method, req.path, res.status,
                                     seconds_between(t_request.start, Clock::now()),
                                     t_request.prompt_tokens, t_request.completion_tokens,
                                     t_request.request_id, req.remote_addr});
    }
    t_request = RequestScope{};
  });
}

void HttpServer::install_routes() {
  httplib::Server& s = *server_;
  s.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(playground_html()), "text/html; charset=utf-8");
  });
  // Keys are checked in each handler, after httplib has read the body: a pre-routing handler
  // answers before it, and the unread body would then be parsed as the connection's next request.
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining_) {
      reply_error(res, ApiError{503, "server_error", "the server is shutting down", "",
                                "service_unavailable"});
    } else if (Status health = engine_.health(); !health.ok()) {
      // A failed engine (a tensor-parallel rank died) never recovers: take this replica out.
      reply_error(res, error_from_status(health));
    } else {
      res.status = 200;
    }
  });
  s.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!refuse_unauthorized(req, res)) handle_models(res);
  });
  s.Get("/metrics", [this](const httplib::Request& req, httplib::Response& res) {
    if (refuse_unauthorized(req, res)) return;
    res.set_content(metrics_.render(engine_.stats()), "text/plain; version=0.0.4");
  });
  for (const Route& route : get_routes()) {
    s.Get(route.path, [this, &route](const httplib::Request& req, httplib::Response& res) {
      if (!refuse_unauthorized(req, res)) handle_get(route, req, res);
    });
  }
  for (const Route& route : post_routes()) {
    s.Post(route.path, [this, &route](const httplib::Request& req, httplib::Response& res) {
      if (!refuse_unauthorized(req, res)) handle_post(route, req, res);
    });
  }
  // Statuses httplib sets itself (unknown route, body too large, unreadable request) get an
  // OpenAI-style body; responses that already carry one pass through.
  s.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                  httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Handled;
    // Unknown routes need a key too: without one, nothing says which routes exist.
    if (res.status == 404 && refuse_unauthorized(req, res)) {
      return httplib::Server::HandlerResponse::Handled;
    }
    ApiError e;
    e.http_status = res.status;
    if (res.status == 404) {
      e.message = "no route " + req.method + " " + req.path;
      e.code = "not_found";
    } else if (res.status == 413) {
      e.message =
          "the request body is larger than " + std::to_string(options_.max_body_bytes) + " bytes";
      e.code = "request_too_large";
    } else {
      e.message = "the request could not be handled (HTTP " + std::to_string(res.status) + ")";
      if (res.status >= 500) e.type = "server_error";
    }
    metrics_.count_http_error(e.http_status);
    res.set_content(e.to_json().dump(), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  s.set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        ES_LOG(Error) << "request handler failed: " << what;
        reply_error(res,
                    ApiError{500, "server_error", "internal error: " + what, "", "internal_error"});
      });
}

void HttpServer::handle_models(httplib::Response& res) {
  json model = {{"id", context_.served_model_name},
                {"object", "model"},
                {"created", created_},
                {"owned_by", "earnserve"},
                {"root", engine_.options().model_dir},
                {"parent", nullptr},
                {"max_model_len", context_.max_model_len}};
  reply_json(res, {{"object", "list"}, {"data", json::array({model})}});
}

void HttpServer::handle_get(const Route& route, const httplib::Request& req,
                            httplib::Response& res) {
  json query = json::object();
  for (const auto& [name, value] : req.params) {
    if (!query.contains(name)) {
      query[name] = value;
    } else {
      if (!query[name].is_array()) query[name] = json::array({query[name]});
      query[name].push_back(value);
    }
  }
  ApiOr<ApiCall> call = parse_call(route.endpoint, query, context_);
  if (!call.ok()) return reply_error(res, call.error());
  reply_json(res, immediate_response(*call, context_));
}

void HttpServer::handle_post(const Route& route, const httplib::Request& req,
                             httplib::Response& res) {
  ApiOr<json> body = parse_json_body(req.body);
  if (!body.ok()) return reply_error(res, body.error());
  ApiOr<ApiCall> call = parse_call(route.endpoint, *body, context_);
  if (!call.ok()) return reply_error(res, call.error());
  if (!call->needs_engine()) return reply_json(res, immediate_response(*call, context_));
  ApiOr<std::shared_ptr<Admission>> admission = admit();
  if (!admission.ok()) return reply_error(res, admission.error());

  auto state = std::make_shared<CallState>();
  state->admission = *admission;
  if (options_.request_timeout.count() > 0) {
    state->deadline = Clock::now() + options_.request_timeout;
  }
  state->call = std::move(*call);
  state->meta = {next_request_id(route.id_prefix), static_cast<int64_t>(std::time(nullptr)),
                 context_.served_model_name};
  if (t_request.request_id.empty()) t_request.request_id = state->meta.id;
  ApiOr<std::unique_ptr<Submission>> submission =
      Submission::submit(engine_, state->call, state->meta.id);
  if (!submission.ok()) return reply_error(res, submission.error());
  state->submission = std::move(*submission);
  if (state->call.stream()) return stream_completion(std::move(state), res);

  ApiOr<std::vector<RequestOutput>> outputs = state->submission->collect(state->deadline);
  if (!outputs.ok()) return reply_error(res, outputs.error());
  for (const RequestOutput& o : *outputs) metrics_.observe_finished(o.metrics, false);
  const json answer = final_response(state->call, state->meta, *outputs, context_);
  note_usage(answer);
  reply_json(res, answer);
}

void HttpServer::stream_completion(std::shared_ptr<CallState> state, httplib::Response& res) {
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [this, state](size_t, httplib::DataSink& sink) -> bool {
        auto send = [&](const json& j) {
          const std::string line =
              "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
          return sink.write(line.data(), line.size());
        };
        const CompletionRequest& r = std::get<CompletionRequest>(state->call.request);
        Submission& sub = *state->submission;
        const int num_choices = static_cast<int>(r.prompts.size()) * r.num_returned;
        if (r.chat && !send(chat_role_chunk(state->meta, num_choices))) return false;
        if (r.echo && !send(echo_chunk(state->meta, r))) return false;
        int64_t prompt_tokens = 0, completion_tokens = 0;
        std::vector<Clock::time_point> last_output(sub.size(), Clock::now());
        size_t num_done = 0;
        auto done = [&](size_t i) {
          sub.mark_finished(i);
          ++num_done;
        };
        while (num_done < sub.size()) {
          if (Clock::now() >= state->deadline) {
            // Out of time: free the pages, say why, and end the stream.
            sub.abort();
            const ApiError timeout = request_timeout_error();
            metrics_.count_http_error(timeout.http_status);
            if (!send(timeout.to_json())) return false;
            return end_stream(sink);
          }
          for (size_t i = 0; i < sub.size(); ++i) {
            if (sub.finished(i)) continue;
            std::optional<RequestOutput> out =
                sub.stream(i).next(sub.size() == 1 ? kPollInterval : std::chrono::milliseconds(5));
            if (!out) {
              // Idle: make sure the client is still there.
              if (!sink.is_writable()) return false;
              if (sub.stream(i).finished()) done(i);
              continue;
            }
            if (!out->error.ok()) {
              done(i);
              const ApiError error = error_from_status(out->error);
              metrics_.count_http_error(error.http_status);
              if (!send(error.to_json())) return false;
              continue;
            }
            int new_tokens = 0;
            for (const SequenceOutput& o : out->outputs) {
              new_tokens += static_cast<int>(o.token_ids.size());
            }
            completion_tokens += new_tokens;
            t_request.completion_tokens = completion_tokens;
            const Clock::time_point now = Clock::now();
            if (new_tokens > 0 && out->metrics.first_token &&
                last_output[i] > *out->metrics.first_token) {
              metrics_.observe_inter_token(seconds_between(last_output[i], now), new_tokens);
            }
            if (new_tokens > 0) last_output[i] = now;
            json chunk =
                completion_chunk(state->meta, r, static_cast<int>(i), *out, *context_.tokenizer);
            if (!chunk["choices"].empty() && !send(chunk)) return false;
            if (out->finished) {
              done(i);
              prompt_tokens += static_cast<int64_t>(r.prompts[i].size());
              t_request.prompt_tokens = prompt_tokens;
              metrics_.observe_finished(out->metrics, true);
            }
          }
        }
        if (r.include_usage &&
            !send(usage_chunk(state->meta, r.chat, prompt_tokens, completion_tokens))) {
          return false;
        }
        return end_stream(sink);
      });
}

}  // namespace earnserve::api
