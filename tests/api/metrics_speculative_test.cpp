// The speculative decoding counters of GET /metrics follow the engine's totals: each scrape
// advances them by what is new since the previous one.
#include <gtest/gtest.h>

#include <string>

#include "api/server/metrics.h"
#include "tests/api/metrics_text.h"

namespace earnserve::api {
namespace {

TEST(ServerMetricsTest, SpeculativeCountersFollowTheEngineTotals) {
  ServerMetrics metrics("tiny");
  EngineStats stats;
  stats.num_spec_rounds = 3;
  stats.num_spec_accepted_steps = 7;
  stats.num_target_calls = 5;
  stats.num_draft_calls = 11;
  std::string text = metrics.render(stats);
  EXPECT_EQ(metric_sample(text, "earnserve:spec_rounds_total"), 3.0);
  EXPECT_EQ(metric_sample(text, "earnserve:spec_accepted_steps_total"), 7.0);
  EXPECT_EQ(metric_sample(text, "earnserve:target_calls_total"), 5.0);
  EXPECT_EQ(metric_sample(text, "earnserve:draft_calls_total"), 11.0);
  stats.num_spec_rounds = 4;
  stats.num_draft_calls = 15;
  text = metrics.render(stats);
  EXPECT_EQ(metric_sample(text, "earnserve:spec_rounds_total"), 4.0);
  EXPECT_EQ(metric_sample(text, "earnserve:spec_accepted_steps_total"), 7.0);
  EXPECT_EQ(metric_sample(text, "earnserve:draft_calls_total"), 15.0);
}

}  // namespace
}  // namespace earnserve::api
