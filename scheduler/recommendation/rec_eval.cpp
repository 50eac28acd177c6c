#include "scheduler/recommendation/rec_eval.h"

#include <cmath>
#include <set>
#include <string>

#include "core/logging.h"

namespace earnserve::data {

RankingMetrics ranking_metrics(const RecommendationSpec& spec, const std::vector<TestUser>& users,
                               const std::vector<RequestOutput>& outputs,
                               const std::vector<int>& ks) {
  ES_CHECK(!users.empty());
  RankingMetrics m;
  m.ks = ks;
  m.recall.assign(ks.size(), 0.0);
  m.ndcg.assign(ks.size(), 0.0);
  const Catalogue& catalogue = spec.catalogue();
  for (size_t u = 0; u < outputs.size(); ++u) {
    const TestUser& user = users[u % users.size()];
    const std::vector<RecommendedItem> items = spec.items(outputs[u]);
    m.invalid_items += static_cast<int64_t>(outputs[u].outputs.size() - items.size());
    std::set<std::string> targets;
    for (const std::string& t : user.targets) {
      const int64_t index = catalogue.find_item(t);
      if (index >= 0) targets.insert(catalogue.item(index).identifier);
    }
    const double num_targets = static_cast<double>(user.targets.size());
    for (size_t j = 0; j < ks.size(); ++j) {
      double hits = 0, dcg = 0, idcg = 0;
      for (int i = 0; i < ks[j] && i < static_cast<int>(items.size()); ++i) {
        if (targets.count(items[i].identifier)) {
          hits += 1;
          dcg += 1.0 / std::log2(i + 2.0);
        }
      }
      for (int i = 0; i < ks[j] && i < static_cast<int>(num_targets); ++i) {
        idcg += 1.0 / std::log2(i + 2.0);
      }
      m.recall[j] += num_targets > 0 ? hits / num_targets : 0.0;
      m.ndcg[j] += idcg > 0 ? dcg / idcg : 0.0;
    }
  }
  m.num_requests = static_cast<int64_t>(outputs.size());
  for (size_t j = 0; j < ks.size() && m.num_requests > 0; ++j) {
    m.recall[j] /= static_cast<double>(m.num_requests);
    m.ndcg[j] /= static_cast<double>(m.num_requests);
  }
  return m;
}

SpeculativeSummary summarize_speculative(const std::vector<RequestOutput>& outputs) {
  SpeculativeSummary s;
  for (const RequestOutput& o : outputs) {
    if (!o.speculative) continue;
    ++s.num_requests;
    s.num_rounds += o.speculative->num_rounds;
    for (int a : o.speculative->accepted_steps) s.accepted_steps += a;
    s.target_calls += o.speculative->num_target_calls;
    s.draft_calls += o.speculative->num_draft_calls;
  }
  return s;
}

}  // namespace earnserve::data
