// Prometheus metrics of the HTTP server (`GET /metrics`), vLLM-like names under `earnserve:`.
// Gauges and token/prefix-cache counters mirror the engine's EngineStats at scrape time; error
// counters (all errors; 401 and 408 also on their own), latency histograms (time to first token,
// inter-token, end to end) and each request's peak KV pages per KV group are observed by the HTTP
// handlers as requests finish. Thread-safe: handlers observe and scrapes render concurrently.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "scheduler/engine.h"
#include "scheduler/request.h"

namespace prometheus {
class Counter;
template <typename T>
class Family;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace earnserve::api {

class ServerMetrics {
 public:
  explicit ServerMetrics(const std::string& model_name);
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // A finished request: TTFT and end-to-end latency from its engine metrics; when it was not
  // streamed, one inter-token latency per generated token after the first (their mean).
  void observe_finished(const RequestMetrics& metrics, bool streamed);
  // A streamed request: `seconds` between two outputs, `num_tokens` new tokens in the later one.
  void observe_inter_token(double seconds, int num_tokens);
  // A request answered with an error status (a stream's error event included); 401 and 408
  // are also counted on their own.
  void count_http_error(int http_status);

  // The text exposition format, with gauges and counters brought up to `stats`.
  std::string render(const EngineStats& stats);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  const std::string model_name_;
  // Constant after construction (owned by registry_)
  prometheus::Gauge* running_;
  prometheus::Gauge* waiting_;
  prometheus::Gauge* kv_usage_;
  prometheus::Gauge* draft_kv_usage_;
  prometheus::Counter* prefix_queries_;
  prometheus::Counter* prefix_hits_;
  prometheus::Counter* prompt_tokens_;
  prometheus::Counter* generation_tokens_;
  prometheus::Counter* forced_tokens_;
  prometheus::Counter* preemptions_;
  prometheus::Counter* spec_rounds_;
  prometheus::Counter* spec_accepted_steps_;
  prometheus::Counter* target_calls_;
  prometheus::Counter* draft_calls_;
  prometheus::Counter* spec_plain_cost_;     // spec_plain_steps_total{reason="cost"}
  prometheus::Counter* spec_plain_no_room_;  // spec_plain_steps_total{reason="no_room"}
  prometheus::Counter* request_success_;
  prometheus::Counter* http_errors_;
  prometheus::Counter* unauthorized_;
  prometheus::Counter* request_timeouts_;
  prometheus::Histogram* ttft_;
  prometheus::Histogram* itl_;
  prometheus::Histogram* e2e_;
  prometheus::Family<prometheus::Histogram>* kv_blocks_;  // labelled by kv_group

  std::mutex mu_;
  EngineStats last_;  // Guarded by mu_: the stats the counters were last brought up to
};

}  // namespace earnserve::api
