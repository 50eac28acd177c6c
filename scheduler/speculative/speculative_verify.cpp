#include "scheduler/speculative/speculative_verify.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/logging.h"
#include "scheduler/sampler.h"

namespace earnserve {
namespace {

constexpr double kSumTolerance = 1e-3;

// Children of every node, for (node, token) lookups. Checks the tree's shape once.
std::vector<std::vector<int>> children_of(std::span<const DraftNode> tree, int num_roots) {
  ES_CHECK_GE(static_cast<int>(tree.size()), num_roots) << "the tree lacks depth-0 nodes";
  std::vector<std::vector<int>> children(tree.size());
  for (int i = 0; i < static_cast<int>(tree.size()); ++i) {
    const int parent = tree[i].parent;
    if (i < num_roots) {
      ES_CHECK_EQ(parent, -1) << "node " << i << " must be depth 0";
      continue;
    }
    ES_CHECK(parent >= 0 && parent < i) << "node " << i << " has parent " << parent;
    for (int sibling : children[parent]) {
      ES_CHECK_NE(tree[sibling].token, tree[i].token) << "node " << parent << " repeats a child";
    }
    children[parent].push_back(i);
  }
  return children;
}

int find_child(std::span<const DraftNode> tree, const std::vector<int>& children, int32_t token) {
  for (int c : children) {
    if (tree[c].token == token) return c;
  }
  return -1;
}

double checked_sum(std::span<const double> probs, const char* name) {
  double sum = 0.0;
  for (double v : probs) {
    ES_CHECK(v >= 0.0 && std::isfinite(v)) << name << " has entry " << v;
    sum += v;
  }
  ES_CHECK(std::abs(sum - 1.0) <= kSumTolerance) << name << " sums to " << sum;
  return sum;
}

}  // namespace

StrictVerifyResult verify_strict_top_k(const BeamSearch& target, std::span<const DraftNode> tree) {
  StrictVerifyResult result(target);
  BeamSearch& state = result.state;
  if (state.done()) {
    result.stop = StrictVerifyStop::kDone;
    return result;
  }
  const std::vector<std::vector<int>> children = children_of(tree, state.num_live());

  std::vector<int> live(state.num_live());
  std::iota(live.begin(), live.end(), 0);
  std::vector<BeamStepInput> inputs;
  while (true) {
    if (state.done()) {
      result.stop = StrictVerifyStop::kDone;
      break;
    }
    const bool all_scored = std::all_of(live.begin(), live.end(),
                                        [&](int node) { return !tree[node].logprobs.empty(); });
    if (!all_scored) {
      result.stop = StrictVerifyStop::kDepthExhausted;
      break;
    }
    inputs.clear();
    for (int node : live) {
      inputs.push_back(
          {tree[node].logprobs, tree[node].allowed_tokens, tree[node].constrained, {}});
    }
    std::vector<BeamChoice> choices = state.step(inputs);

    std::vector<int> next;
    for (const BeamChoice& choice : choices) {
      const int child = find_child(tree, children[live[choice.parent]], choice.token);
      if (child < 0) break;
      next.push_back(child);
    }
    const bool accepted = next.size() == choices.size();
    result.steps.push_back(std::move(choices));
    result.step_nodes.push_back(std::move(live));
    if (!accepted) {
      result.stop = StrictVerifyStop::kRejected;
      live.clear();
      break;
    }
    ++result.num_accepted;
    live = std::move(next);
  }
  result.live_nodes = std::move(live);
  return result;
}

RelaxedVerifyResult verify_relaxed_sampling(const RelaxedVerifyInput& input) {
  const std::span<const double> p = input.target_probs;
  const std::span<const double> q = input.draft_probs;
  ES_CHECK_EQ(p.size(), q.size());
  ES_CHECK_GE(input.num_keep, 1);
  checked_sum(p, "target_probs");
  checked_sum(q, "draft_probs");
  const int num_candidates = static_cast<int>(p.size());
  const size_t num_keep = static_cast<size_t>(input.num_keep);

  RelaxedVerifyResult result;
  std::vector<char> chosen(num_candidates, 0);
  std::vector<int> accepted;
  for (size_t i = 0; i < input.draws.size(); ++i) {
    const int c = input.draws[i];
    ES_CHECK(c >= 0 && c < num_candidates) << "draw " << i << " is candidate " << c;
    ES_CHECK_GT(q[c], 0.0) << "draw " << i << " has draft probability 0";
    // Drawn even for a repeat, so that draw i always uses counter + i.
    const double u = counter_uniform(input.seed, input.counter + i);
    if (!(u < p[c] / q[c])) continue;
    ++result.num_accepted_draws;
    if (!chosen[c]) {
      chosen[c] = 1;
      accepted.push_back(c);
    }
  }
  std::sort(accepted.begin(), accepted.end(), [&](int a, int b) {
    if (p[a] != p[b]) return p[a] > p[b];
    return a < b;
  });
  if (accepted.size() > num_keep) accepted.resize(num_keep);
  result.chosen = accepted;
  result.num_accepted = static_cast<int>(accepted.size());
  std::fill(chosen.begin(), chosen.end(), 0);
  for (int c : result.chosen) chosen[c] = 1;

  // The residual, renormalised over the candidates still free at each draw: max(0, p - q) while
  // any of it is left, then p itself. The weights are built once and a taken candidate's weight
  // leaves the running totals, so a draw costs one partial scan instead of three full passes
  // (a plain relaxed step of 20 beams has thousands of candidates and draws 20 of them).
  std::vector<double> residual(num_candidates, 0.0);
  std::vector<double> target(num_candidates, 0.0);
  double residual_total = 0.0;
  double target_total = 0.0;
  for (int c = 0; c < num_candidates; ++c) {
    if (chosen[c]) continue;
    residual[c] = std::max(0.0, p[c] - q[c]);
    target[c] = p[c];
    residual_total += residual[c];
    target_total += target[c];
  }
  uint64_t counter = input.counter + input.draws.size();
  // One draw from `weights` (total `total`): the last positive weight absorbs rounding at the
  // top end; -1 when no weight is positive.
  auto draw = [&](const std::vector<double>& weights, double total) {
    const double u = counter_uniform(input.seed, counter) * total;
    int pick = -1;
    double acc = 0.0;
    for (int c = 0; c < num_candidates; ++c) {
      if (weights[c] <= 0.0) continue;
      pick = c;
      acc += weights[c];
      if (u < acc) break;
    }
    return pick;
  };
  while (result.chosen.size() < num_keep) {
    int pick = residual_total > 0.0 ? draw(residual, residual_total) : -1;
    if (pick < 0) {
      residual_total = 0.0;  // only rounding was left of the residual
      if (!(target_total > 0.0)) break;
      pick = draw(target, target_total);
      if (pick < 0) break;
    }
    ++counter;
    result.chosen.push_back(pick);
    residual_total -= residual[pick];
    target_total -= target[pick];
    residual[pick] = 0.0;
    target[pick] = 0.0;
  }
  return result;
}

std::vector<double> candidate_distribution(std::span<const float> beam_scores,
                                           std::span<const int> candidate_beams,
                                           std::span<const float> token_logprobs) {
  ES_CHECK_EQ(candidate_beams.size(), token_logprobs.size());
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  std::vector<double> logits(candidate_beams.size());
  double max_logit = kNegInf;
  for (size_t c = 0; c < logits.size(); ++c) {
    const int beam = candidate_beams[c];
    ES_CHECK(beam >= 0 && beam < static_cast<int>(beam_scores.size()))
        << "candidate " << c << " names beam " << beam;
    logits[c] = static_cast<double>(beam_scores[beam]) + static_cast<double>(token_logprobs[c]);
    max_logit = std::max(max_logit, logits[c]);
  }
  std::vector<double> probs(logits.size(), 0.0);
  if (max_logit == kNegInf) return probs;
  double sum = 0.0;
  for (size_t c = 0; c < logits.size(); ++c) {
    probs[c] = std::exp(logits[c] - max_logit);
    sum += probs[c];
  }
  for (double& v : probs) v /= sum;
  return probs;
}

}  // namespace earnserve
