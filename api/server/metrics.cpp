#include "api/server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <sstream>

#include "kernels/backend_info.h"

namespace earnserve::api {
namespace {

const prometheus::Histogram::BucketBoundaries kTtftBuckets = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0};
const prometheus::Histogram::BucketBoundaries kItlBuckets = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};
const prometheus::Histogram::BucketBoundaries kE2eBuckets = {
    0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0};
const prometheus::Histogram::BucketBoundaries kKvBlockBuckets = {1,   2,   4,   8,    16,   32,  64,
                                                                 128, 256, 512, 1024, 2048, 4096};

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace

ServerMetrics::ServerMetrics(const std::string& model_name)
    : registry_(std::make_shared<prometheus::Registry>()), model_name_(model_name) {
  const prometheus::Labels labels = {{"model_name", model_name}};
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_).Add(labels);
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_).Add(labels);
  };
  auto histogram = [&](const char* name, const char* help,
                       const prometheus::Histogram::BucketBoundaries& buckets) {
    return &prometheus::BuildHistogram()
                .Name(name)
                .Help(help)
                .Register(*registry_)
                .Add(labels, buckets);
  };
  running_ = gauge("earnserve:num_requests_running", "Requests in the running batch.");
  waiting_ = gauge("earnserve:num_requests_waiting", "Requests waiting to be scheduled.");
  kv_usage_ = gauge("earnserve:kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1).");
  draft_kv_usage_ = gauge("earnserve:draft_kv_cache_usage_perc",
                          "Fraction of the draft model's KV cache blocks in use (0-1; 0 without "
                          "--draft-model).");
  prefix_queries_ = counter("earnserve:prefix_cache_queries_total",
                            "Prompt tokens looked up in the prefix cache.");
  prefix_hits_ =
      counter("earnserve:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.");
  prompt_tokens_ = counter("earnserve:prompt_tokens_total", "Prefilled prompt tokens.");
  generation_tokens_ = counter("earnserve:generation_tokens_total", "Generated tokens.");
  forced_tokens_ = counter("earnserve:forced_tokens_total",
                           "Beam tokens taken without a forward: the rest of an item's identifier "
                           "was forced (score_over catalogue).");
  preemptions_ = counter("earnserve:num_preemptions_total", "Sequence group preemptions.");
  spec_rounds_ =
      counter("earnserve:spec_rounds_total", "Speculative beam search draft-then-verify rounds.");
  spec_accepted_steps_ = counter("earnserve:spec_accepted_steps_total",
                                 "Beam steps the draft proposed and the target kept.");
  target_calls_ = counter("earnserve:target_calls_total", "Target model forward passes.");
  draft_calls_ = counter("earnserve:draft_calls_total", "Draft model forward passes.");
  {
    // Speculative requests of policy auto stepping without a tree, by reason.
    auto& plain = prometheus::BuildCounter()
                      .Name("earnserve:spec_plain_steps_total")
                      .Help("Speculative beam steps taken without a drafted tree (policy auto).")
                      .Register(*registry_);
    prometheus::Labels cost = labels, no_room = labels;
    cost["reason"] = "cost";
    no_room["reason"] = "no_room";
    spec_plain_cost_ = &plain.Add(cost);
    spec_plain_no_room_ = &plain.Add(no_room);
  }
  {
    // What this process computes on (earnserve info): a constant 1 whose labels say it.
    const BackendInfo info = backend_info();
    prometheus::Labels backend = labels;
    backend["cpu_features"] = info.cpu_features;
    backend["kernel_isa"] = info.kernel_isa;
    backend["weights"] = info.weights;
    backend["gemm"] = info.gemm;
    backend["gemm_core"] = info.gemm_core;
    backend["threads"] = std::to_string(info.threads);
    backend["cuda_devices"] = std::to_string(info.cuda_devices.size());
    prometheus::BuildGauge()
        .Name("earnserve:backend_info")
        .Help(
            "The compute backend: CPU features, kernel path, weight layout, GEMM library and "
            "core, threads, GPUs (value 1).")
        .Register(*registry_)
        .Add(backend)
        .Set(1);
  }
  request_success_ = counter("earnserve:request_success_total", "Requests that finished.");
  http_errors_ = counter("earnserve:http_errors_total", "Requests answered with an error status.");
  unauthorized_ = counter("earnserve:http_unauthorized_total",
                          "Requests refused with 401: a missing or wrong API key.");
  request_timeouts_ =
      counter("earnserve:request_timeouts_total",
              "Requests aborted after --request-timeout-s: 408, or a stream's error event.");
  ttft_ = histogram("earnserve:time_to_first_token_seconds", "Time to first token.", kTtftBuckets);
  itl_ = histogram("earnserve:inter_token_latency_seconds", "Time between output tokens.",
                   kItlBuckets);
  e2e_ = histogram("earnserve:e2e_request_latency_seconds", "Arrival to finish.", kE2eBuckets);
  kv_blocks_ = &prometheus::BuildHistogram()
                    .Name("earnserve:request_peak_kv_blocks")
                    .Help(
                        "KV pages a finished request held at most, per KV group (EARN: group 0 "
                        "= layers below the split, 1 = register and generated tokens above it).")
                    .Register(*registry_);
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::observe_finished(const RequestMetrics& m, bool streamed) {
  request_success_->Increment();
  if (m.first_token) ttft_->Observe(seconds(m.arrival, *m.first_token));
  if (m.finished) e2e_->Observe(seconds(m.arrival, *m.finished));
  for (size_t g = 0; g < m.peak_kv_blocks.size(); ++g) {
    // Family::Add returns the existing series for known labels; it is thread-safe.
    kv_blocks_->Add({{"model_name", model_name_}, {"kv_group", std::to_string(g)}}, kKvBlockBuckets)
        .Observe(m.peak_kv_blocks[g]);
  }
  if (!streamed && m.first_token && m.finished && m.num_generated_tokens > 1) {
    const double mean = seconds(*m.first_token, *m.finished) / (m.num_generated_tokens - 1);
    for (int i = 1; i < m.num_generated_tokens; ++i) itl_->Observe(mean);
  }
}

void ServerMetrics::observe_inter_token(double s, int num_tokens) {
  if (num_tokens <= 0) return;
  for (int i = 0; i < num_tokens; ++i) itl_->Observe(s / num_tokens);
}

void ServerMetrics::count_http_error(int http_status) {
  http_errors_->Increment();
  if (http_status == 401) unauthorized_->Increment();
  if (http_status == 408) request_timeouts_->Increment();
}

std::string ServerMetrics::render(const EngineStats& stats) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_->Set(stats.num_running);
    waiting_->Set(stats.num_waiting);
    kv_usage_->Set(stats.kv_usage);
    draft_kv_usage_->Set(stats.draft_kv_usage);
    // The engine keeps totals; counters advance by what is new since the last scrape.
    auto advance = [](prometheus::Counter* c, int64_t now, int64_t before) {
      if (now > before) c->Increment(static_cast<double>(now - before));
    };
    advance(prefix_queries_, stats.prefix_cache_queries, last_.prefix_cache_queries);
    advance(prefix_hits_, stats.prefix_cache_hits, last_.prefix_cache_hits);
    advance(prompt_tokens_, stats.num_prompt_tokens, last_.num_prompt_tokens);
    advance(generation_tokens_, stats.num_generation_tokens, last_.num_generation_tokens);
    advance(forced_tokens_, stats.num_forced_tokens, last_.num_forced_tokens);
    advance(preemptions_, stats.num_preemptions, last_.num_preemptions);
    advance(spec_rounds_, stats.num_spec_rounds, last_.num_spec_rounds);
    advance(spec_accepted_steps_, stats.num_spec_accepted_steps, last_.num_spec_accepted_steps);
    advance(target_calls_, stats.num_target_calls, last_.num_target_calls);
    advance(draft_calls_, stats.num_draft_calls, last_.num_draft_calls);
    advance(spec_plain_cost_, stats.num_spec_plain_steps_cost, last_.num_spec_plain_steps_cost);
    advance(spec_plain_no_room_, stats.num_spec_plain_steps_no_room,
            last_.num_spec_plain_steps_no_room);
    last_ = stats;
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

}  // namespace earnserve::api
