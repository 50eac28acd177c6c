// The speculation policy: before each step, whether the speculative requests of policy `auto`
// (SpeculativeParams::Policy) draft a tree this step, and which one. It predicts levels per
// second (beam steps completed, over every request in the step) for the step as plain beam steps
// and for each tree shape of a small grid -- N draft beams per level from K up (K, 2K, 4K and the
// request's own N, never above it) and gamma from 1 to the request's num_speculative_steps --
// from the measured cost of target and draft forwards by rows (StepCostTable) and the measured
// acceptance per level (AcceptanceTable), and picks the fastest, "do not speculate now"
// included. A tree must promise kMinGain (10%) more levels per second than the plain step.
//
// A round of shape (N, gamma) for a request with K live beams at generated-token index t:
//  - target rows: the step's own rows + gamma * N drafted nodes + K * E[accepted] rows that the
//    next forward recomputes (accepted tokens are recomputed after a round);
//  - draft forwards: the prompt prefill when the request holds no draft beams, then one forward
//    of K * (1 + E[accepted]) rows (the beams' pending tokens) and gamma - 1 of N rows;
//  - levels: 1 + E[accepted], E[accepted] = sum over d of prod_{j <= d} P(level t + j accepted).
// Free functions over plain data; thread-safe.
#pragma once

#include <vector>

#include "scheduler/speculative/speculation_cost_model.h"

namespace earnserve {

// One speculative request of policy auto whose live beams all end this step.
struct PolicyRequest {
  int beam_width = 1;       // K, live beams
  int position = 0;         // generated tokens so far (the next level's index)
  int max_depth = 0;        // levels a round may draft (gamma cap, tokens left, draft context)
  int max_draft_beams = 1;  // the request's N: the grid's largest width
  AcceptanceTable::Mode mode = AcceptanceTable::Mode::kStrict;
  int draft_prefill_rows = 0;  // rows the draft computes before drafting (0 when it holds beams)
};

struct PolicyInput {
  int step_rows = 0;    // rows the step computes without trees (other requests' trees included)
  int step_levels = 0;  // beam or sampling steps the step completes without trees
  int row_budget = 0;   // rows left for trees under max_num_batched_tokens
  std::vector<PolicyRequest> requests;
  // Measured over predicted time of past steps with trees (running average; 1 before any): what
  // the tables miss about a round (its bookkeeping, a draft that must prefill again) scales the
  // prediction of every tree.
  double tree_cost_factor = 1.0;
};

struct TreeShape {
  int width_multiple = 0;  // N = min(width_multiple * K, the request's N); 0: the request's N
  int depth = 0;           // gamma
};

struct PolicyDecision {
  bool speculate = false;
  TreeShape shape;                // when speculate
  double plain_levels_per_s = 0;  // predicted, without trees
  double spec_levels_per_s = 0;   // predicted, best tree (0 when no tree fits)
  double spec_seconds = 0;        // the tables' time for the best tree's step, unscaled
};

// The draft beams a request drafts per level under `shape` (at least K).
int draft_beams_for(const TreeShape& shape, const PolicyRequest& request);

// The policy's rule. With empty cost tables (nothing measured yet) it does not speculate.
PolicyDecision decide_speculation(const PolicyInput& input, const StepCostTable& target,
                                  const StepCostTable& draft, const AcceptanceTable& acceptance);

// Required predicted gain of a tree over the plain step (noise in the measurements, and the
// bookkeeping a round adds that the tables do not see).
inline constexpr double kMinGain = 0.10;

}  // namespace earnserve
