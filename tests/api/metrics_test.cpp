// The error counters of GET /metrics: every error status counts in http_errors_total; refused
// API keys (401) and request timeouts (408) also count on their own.
#include "api/server/metrics.h"

#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace earnserve::api
