// GET /metrics: every error status counts in http_errors_total, refused API keys (401) and
// request timeouts (408) also on their own; the KV gauges (target and draft) follow the engine.
#include "api/server/metrics.h"

#include <gtest/gtest.h>

#include <string>

#include "kernels/backend_info.h"
#include "tests/api/metrics_text.h"

namespace earnserve::api {
namespace {

TEST(ServerMetricsTest, CountsUnauthorizedAndTimedOutRequestsApart) {
  ServerMetrics metrics("tiny");
  std::string text = metrics.render(EngineStats{});
  EXPECT_EQ(metric_sample(text, "earnserve:http_errors_total"), 0.0);
  EXPECT_EQ(metric_sample(text, "earnserve:http_unauthorized_total"), 0.0);
  EXPECT_EQ(metric_sample(text, "earnserve:request_timeouts_total"), 0.0);
  for (int status : {401, 401, 408, 400, 429, 404, 408, 401, 503}) metrics.count_http_error(status);
  text = metrics.render(EngineStats{});
  EXPECT_EQ(metric_sample(text, "earnserve:http_errors_total"), 9.0);
  EXPECT_EQ(metric_sample(text, "earnserve:http_unauthorized_total"), 3.0);
  EXPECT_EQ(metric_sample(text, "earnserve:request_timeouts_total"), 2.0);
}

TEST(ServerMetricsTest, KvGaugesFollowTheEngineStats) {
  ServerMetrics metrics("tiny");
  EngineStats stats;
  stats.kv_usage = 0.25;
  stats.draft_kv_usage = 0.5;
  std::string text = metrics.render(stats);
  EXPECT_EQ(metric_sample(text, "earnserve:kv_cache_usage_perc"), 0.25);
  EXPECT_EQ(metric_sample(text, "earnserve:draft_kv_cache_usage_perc"), 0.5);
  text = metrics.render(EngineStats{});
  EXPECT_EQ(metric_sample(text, "earnserve:kv_cache_usage_perc"), 0.0);
  EXPECT_EQ(metric_sample(text, "earnserve:draft_kv_cache_usage_perc"), 0.0);
}

TEST(ServerMetricsTest, ForcedTokensCountWhatTheEngineSkipped) {
  ServerMetrics metrics("tiny");
  EngineStats stats;
  EXPECT_EQ(metric_sample(metrics.render(stats), "earnserve:forced_tokens_total"), 0.0);
  stats.num_forced_tokens = 7;
  EXPECT_EQ(metric_sample(metrics.render(stats), "earnserve:forced_tokens_total"), 7.0);
  stats.num_forced_tokens = 12;
  EXPECT_EQ(metric_sample(metrics.render(stats), "earnserve:forced_tokens_total"), 12.0);
}

TEST(ServerMetricsTest, ExportsTheBackendAsAnInfoMetric) {
  ServerMetrics metrics("m");
  const std::string text = metrics.render(EngineStats{});
  const BackendInfo info = backend_info();
  const size_t at = text.find("earnserve:backend_info{");
  ASSERT_NE(at, std::string::npos) << text;
  const std::string line = text.substr(at, text.find('\n', at) - at);
  EXPECT_NE(line.find("gemm_core=\"" + info.gemm_core + "\""), std::string::npos) << line;
  EXPECT_NE(line.find("kernel_isa=\"" + info.kernel_isa + "\""), std::string::npos) << line;
  EXPECT_NE(line.find("cpu_features=\"" + info.cpu_features + "\""), std::string::npos) << line;
  EXPECT_NE(line.find("threads=\"" + std::to_string(info.threads) + "\""), std::string::npos);
  EXPECT_EQ(line.substr(line.rfind(' ') + 1), "1") << line;
}

}  // namespace
}  // namespace earnserve::api
