#include "scheduler/speculative/speculation_policy.h"

#include <algorithm>

namespace earnserve {
namespace {

constexpr int kWidthMultiples[] = {1, 2, 4, 0};

struct TreeStep {
  double levels = 0;
  double seconds = 0;  // unscaled by the tree cost factor
};

// The step's predicted levels and time with every request drafting `shape`; no levels when no
// request can draft it.
TreeStep predict_tree_step(const PolicyInput& in, const TreeShape& shape,
                           const StepCostTable& target, const StepCostTable& draft,
                           const AcceptanceTable& acceptance) {
  double target_rows = in.step_rows;
  double levels = in.step_levels;
  int budget = in.row_budget;
  // Draft rows per forward: [0] prefills, [d] depth d.
  std::vector<double> draft_rows(static_cast<size_t>(shape.depth) + 1, 0.0);
  bool any = false;
  for (const PolicyRequest& r : in.requests) {
    const int n = draft_beams_for(shape, r);
    const int depth = std::min({shape.depth, r.max_depth, std::max(budget, 0) / n});
    if (depth <= 0) continue;
    any = true;
    budget -= depth * n;
    const double expected = acceptance.expected_levels(r.mode, n, r.beam_width, r.position, depth);
    target_rows += depth * n + r.beam_width * expected;
    levels += expected;
    draft_rows[0] += r.draft_prefill_rows;
    draft_rows[1] += r.beam_width * (1.0 + expected);
    for (int d = 2; d <= depth; ++d) draft_rows[d] += n;
  }
  if (!any) return {};
  double seconds = target.predict(static_cast<int>(target_rows + 0.5));
  for (double rows : draft_rows) {
    if (rows > 0) seconds += draft.predict(static_cast<int>(rows + 0.5));
  }
  return {levels, seconds};
}

}  // namespace

int draft_beams_for(const TreeShape& shape, const PolicyRequest& request) {
  const int k = std::max(request.beam_width, 1);
  const int most = std::max(request.max_draft_beams, k);
  return shape.width_multiple == 0 ? most : std::min(shape.width_multiple * k, most);
}

PolicyDecision decide_speculation(const PolicyInput& in, const StepCostTable& target,
                                  const StepCostTable& draft, const AcceptanceTable& acceptance) {
  PolicyDecision d;
  if (in.requests.empty() || target.empty() || draft.empty()) return d;
  const double plain_seconds = target.predict(std::max(in.step_rows, 1));
  d.plain_levels_per_s = plain_seconds > 0 ? in.step_levels / plain_seconds : 0.0;
  int max_depth = 0;
  for (const PolicyRequest& r : in.requests) max_depth = std::max(max_depth, r.max_depth);
  for (int multiple : kWidthMultiples) {
    for (int depth = 1; depth <= max_depth; ++depth) {
      const TreeShape shape{multiple, depth};
      const TreeStep t = predict_tree_step(in, shape, target, draft, acceptance);
      const double seconds = t.seconds * in.tree_cost_factor;
      const double rate = t.levels > 0 && seconds > 0 ? t.levels / seconds : 0.0;
      if (rate > d.spec_levels_per_s) {
        d.spec_levels_per_s = rate;
        d.spec_seconds = t.seconds;
        d.shape = shape;
      }
    }
  }
  d.speculate = d.spec_levels_per_s > d.plain_levels_per_s * (1.0 + kMinGain);
  return d;
}

}  // namespace earnserve
