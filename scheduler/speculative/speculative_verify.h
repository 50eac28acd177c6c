// Speculative beam search verification (AtSpeed, arXiv 2410.05165): a draft model runs beam search
// from the target's live beams for a few steps and the target scores every drafted token in one
// forward pass; these functions decide what the target keeps. Two rules:
//  - verify_strict_top_k: replays the target's own BeamSearch over the drafted tree, so results
//    are exactly those of ordinary beam search; steps are accepted while the target's choices are
//    all in the tree.
//  - verify_relaxed_sampling: one step of speculative sampling over (beam, token) candidates; the
//    kept set follows the target's distribution rather than its exact top-K.
// Model-free and engine-free: the caller owns all inputs (spans are borrowed for the call only);
// results are returned by value. Stateless functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "scheduler/beam_search.h"

namespace earnserve {

// One node of a drafted tree. Nodes 0..R-1 (R = the target's num_live()) are depth 0: the newest
// token of live beam i, chosen but not yet fed to the target. Every deeper node extends a parent.
struct DraftNode {
  int parent = -1;    // parent node index, smaller than this node's; -1 exactly at depth 0
  int32_t token = 0;  // the token this node feeds
  // The target's next-token log-probabilities after this node's prefix, [vocab], normalised;
  // empty when the node was not scored (e.g. leaves the engine kept out of the forward pass).
  std::span<const float> logprobs;
  std::span<const int32_t> allowed_tokens;  // ascending; the catalogue's tokens after this node
  bool constrained = false;                 // false: any token
};

enum class StrictVerifyStop {
  kRejected,        // the last applied step chose a (beam, token) that is not in the tree
  kDone,            // the search finished (every applied step was accepted)
  kDepthExhausted,  // the accepted beams include a node without logprobs
};

struct StrictVerifyResult {
  explicit StrictVerifyResult(BeamSearch initial) : state(std::move(initial)) {}

  // Steps whose live choices all exist as child nodes in the tree (a finishing step, which has
  // no live choice, counts as accepted).
  int num_accepted = 0;
  // Steps applied to `state`: num_accepted + 1 after kRejected, num_accepted otherwise.
  int num_applied() const { return static_cast<int>(steps.size()); }
  StrictVerifyStop stop = StrictVerifyStop::kRejected;
  // Each applied step's choices exactly as BeamSearch::step() returned them; the engine forks
  // and frees KV as for ordinary steps.
  std::vector<std::vector<BeamChoice>> steps;
  // For each applied step, the tree node of each live beam it ran from: steps[i][j].parent
  // indexes step_nodes[i].
  std::vector<std::vector<int>> step_nodes;
  // The tree node of each live beam of `state` when the last applied step was accepted (kDone:
  // empty; kDepthExhausted: the accepted nodes); empty after kRejected (the new beams' tokens are
  // outside the tree and must be fed next round as depth 0).
  std::vector<int> live_nodes;
  // The target's BeamSearch after the applied steps.
  BeamSearch state;
};

// Runs the target's beam search over a drafted tree: from the depth-0 nodes, step() a copy of
// `target` with the logprobs of the nodes that are the live beams; a step is accepted when every
// chosen (parent node, token) is a child node, and the next step runs from those children. The
// first step with a choice outside the tree is still applied (it is the target's own top-K) and
// ends the round; so do a finished search and live beams that were not scored. The result equals
// ordinary beam search step by step.
// A finished `target` applies nothing (kDone) and ignores the tree.
// REQUIRES: tree[0..target.num_live()) are the depth-0 nodes and no other node has parent -1;
// every other node's parent is an earlier node; no two children of a node share a token; scored
// nodes' logprobs cover every token the search may consider.
StrictVerifyResult verify_strict_top_k(const BeamSearch& target, std::span<const DraftNode> tree);

struct RelaxedVerifyInput {
  std::span<const double> draft_probs;   // [num_candidates] q over the candidate set, sums to 1
  std::span<const double> target_probs;  // [num_candidates] p over the candidate set, sums to 1
  std::span<const int> draws;            // [N] candidate indices the draft sampled i.i.d. from q
  int num_keep = 1;                      // K, the beams to keep
  // Randomness: draw i's acceptance uses counter_uniform(seed, counter + i); the j-th residual
  // draw uses counter_uniform(seed, counter + N + j).
  uint64_t seed = 0;
  uint64_t counter = 0;
};

struct RelaxedVerifyResult {
  // Distinct candidate indices, at most num_keep: the kept accepted draws by descending p (ties:
  // smaller index), then residual draws in the order drawn.
  std::vector<int> chosen;
  int num_accepted = 0;        // entries of `chosen` that came from accepted draws
  int num_accepted_draws = 0;  // draws that passed the test, repeats counted
};

// Speculative sampling over (beam, token) candidates. Each draw c is accepted when
// u < p[c] / q[c] (u uniform in [0, 1); strict so that p = 0 never passes and p = q always does,
// with probability min(1, p/q) either way). If at least K distinct candidates are accepted, the K
// with the highest p are kept (the target's most likely among those the draft proposed);
// otherwise all accepted are kept and the rest are drawn one at a time from the residual
// norm(max(0, p - q)) restricted to candidates not yet chosen, falling back to p when that
// residual is all zero. Fewer than K are returned only when every remaining candidate has p = 0.
// With N = K = 1 the chosen candidate is distributed exactly as p.
// REQUIRES: p and q of equal size, non-negative, each summing to 1 (within 1e-3); every draw
// indexes a candidate with q > 0; num_keep >= 1.
RelaxedVerifyResult verify_relaxed_sampling(const RelaxedVerifyInput& input);

// The candidate distribution both rules compare: p[c] proportional to
// exp(beam_scores[candidate_beams[c]] + token_logprobs[c]), i.e. the beam's weight times the
// token's probability, normalised over the candidates (computed stably in log space). All zero
// when every candidate has -inf log-probability.
// beam_scores: [num_beams] cumulative log-probabilities; candidate_beams, token_logprobs:
// [num_candidates].
std::vector<double> candidate_distribution(std::span<const float> beam_scores,
                                           std::span<const int> candidate_beams,
                                           std::span<const float> token_logprobs);

}  // namespace earnserve
