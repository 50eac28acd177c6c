// Measures of a recommendation run on the sequential test protocol
// (scheduler/recommendation/sequential_data.h), shared by `earnserve eval` and the benchmarks:
// Recall@K and NDCG@K of the ranked items against each user's test targets, and the speculative
// beam search stats of the run's requests. Free functions over plain data; thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "scheduler/recommendation/recommendation.h"
#include "scheduler/recommendation/sequential_data.h"
#include "scheduler/request.h"

namespace earnserve::data {

struct RankingMetrics {
  std::vector<int> ks;               // cut-offs, e.g. 5, 10, 20
  std::vector<double> recall, ndcg;  // means over the requests, parallel to ks
  int64_t num_requests = 0;
  int64_t invalid_items = 0;  // returned sequences that are no catalogue item
};

// outputs[i] answers users[i % users.size()]. Recall@K = hits in the top K / number of targets;
// NDCG@K with binary gains. Hits compare identifiers: items sharing a code sequence are the same
// answer. REQUIRES: !users.empty().
RankingMetrics ranking_metrics(const RecommendationSpec& spec, const std::vector<TestUser>& users,
                               const std::vector<RequestOutput>& outputs,
                               const std::vector<int>& ks = {5, 10, 20});

struct SpeculativeSummary {
  int64_t num_requests = 0;  // requests that speculated
  int64_t num_rounds = 0;
  int64_t accepted_steps = 0;
  int64_t target_calls = 0;
  int64_t draft_calls = 0;
  double accepted_steps_per_round() const {
    return num_rounds ? static_cast<double>(accepted_steps) / num_rounds : 0.0;
  }
  double target_calls_per_request() const {
    return num_requests ? static_cast<double>(target_calls) / num_requests : 0.0;
  }
  double draft_calls_per_request() const {
    return num_requests ? static_cast<double>(draft_calls) / num_requests : 0.0;
  }
};

// Sums RequestOutput::speculative over the outputs that have it.
SpeculativeSummary summarize_speculative(const std::vector<RequestOutput>& outputs);

}  // namespace earnserve::data
