// The error counters of GET /metrics: every error status counts in http_errors_total; refused
// API keys (401) and request timeouts (408) also count on their own.
#include "api/server/metrics.h"

#include <gtest/gtest.h>

#include <string>

namespace earnserve::api {
namespace {

// The value of the sample line of `name` in the exposition text, or -1 when absent.
double sample(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + "{");
  if (at == std::string::npos) return -1.0;
  const size_t space = text.find("} ", at);
  return std::stod(text.substr(space + 2, text.find('\n', space) - space - 2));
}

TEST(ServerMetricsTest, CountsUnauthorizedAndTimedOutRequestsApart) {
  ServerMetrics metrics("tiny");
  std::string text = metrics.render(EngineStats{});
  EXPECT_EQ(sample(text, "earnserve:http_errors_total"), 0.0);
  EXPECT_EQ(sample(text, "earnserve:http_unauthorized_total"), 0.0);
  EXPECT_EQ(sample(text, "earnserve:request_timeouts_total"), 0.0);
  for (int status : {401, 401, 408, 400, 429, 404, 408, 401, 503}) metrics.count_http_error(status);
  text = metrics.render(EngineStats{});
  EXPECT_EQ(sample(text, "earnserve:http_errors_total"), 9.0);
  EXPECT_EQ(sample(text, "earnserve:http_unauthorized_total"), 3.0);
  EXPECT_EQ(sample(text, "earnserve:request_timeouts_total"), 2.0);
}

}  // namespace
}  // namespace earnserve::api
