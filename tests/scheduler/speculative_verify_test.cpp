#include "scheduler/speculative/speculative_verify.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <vector>

#include "scheduler/sampler.h"

namespace earnserve {
namespace {

using Prefix = std::vector<int32_t>;

uint64_t hash_prefix(const Prefix& prefix, uint64_t salt) {
  uint64_t h = 1469598103934665603ull ^ salt;
  for (int32_t t : prefix) h = (h ^ static_cast<uint64_t>(t + 1)) * 1099511628211ull;
  return h;
}

std::vector<float> normalised(std::vector<float> logits) {
  const float lse = log_sum_exp(logits);
  for (float& x : logits) x -= lse;
  return logits;
}

// A deterministic "model" over a tiny vocabulary: log-probabilities from a hash of the prefix,
// and a catalogue-like constraint (a non-empty pseudo-random subset of tokens per prefix).
struct ToyModel {
  int vocab = 5;
  uint64_t salt = 0;
  float sharpness = 4.0f;
  bool constrained = false;

  std::vector<float> logprobs(const Prefix& prefix) const {
    std::vector<float> logits(vocab);
    const uint64_t h = hash_prefix(prefix, salt);
    for (int v = 0; v < vocab; ++v) {
      logits[v] = static_cast<float>(counter_uniform(h, v) * sharpness);
    }
    return normalised(std::move(logits));
  }
  std::vector<int32_t> allowed(const Prefix& prefix) const {
    std::vector<int32_t> out;
    if (!constrained) return out;
    const uint64_t h = hash_prefix(prefix, 0x5eed);
    for (int32_t v = 0; v < vocab; ++v) {
      if (counter_uniform(h, v) < 0.6) out.push_back(v);
    }
    if (out.empty()) out.push_back(static_cast<int32_t>(h % static_cast<uint64_t>(vocab)));
    return out;
  }
};

// The draft model: the target's logits plus noise from another hash (noise 0 = the target).
std::vector<float> draft_logprobs(const ToyModel& target, const Prefix& prefix, float noise) {
  std::vector<float> lp = target.logprobs(prefix);
  const uint64_t h = hash_prefix(prefix, 0xd2af7);
  for (int v = 0; v < target.vocab; ++v) {
    lp[v] += static_cast<float>(counter_uniform(h, v) * noise);
  }
  return normalised(std::move(lp));
}

// A drafted tree with its storage; nodes() views it as DraftNode spans.
struct Tree {
  struct Node {
    int parent = -1;
    int32_t token = 0;
    Prefix prefix;  // the full generated prefix this node ends (live tokens + drafted path)
    int depth = 0;
    bool scored = true;
    std::vector<float> logprobs;
    std::vector<int32_t> allowed;
  };
  std::vector<Node> storage;

  int add(int parent, int32_t token, Prefix prefix) {
    Node n;
    n.parent = parent;
    n.token = token;
    n.prefix = std::move(prefix);
    n.depth = parent < 0 ? 0 : storage[parent].depth + 1;
    storage.push_back(std::move(n));
    return static_cast<int>(storage.size()) - 1;
  }
  // Fills in the target's logprobs and allowed tokens; nodes at depth >= unscored_depth get none.
  void score(const ToyModel& target, int unscored_depth) {
    for (Node& n : storage) {
      n.scored = n.depth < unscored_depth;
      n.logprobs = n.scored ? target.logprobs(n.prefix) : std::vector<float>{};
      n.allowed = target.allowed(n.prefix);
    }
  }
  std::vector<DraftNode> nodes(bool constrained) const {
    std::vector<DraftNode> out;
    for (const Node& n : storage) {
      DraftNode d;
      d.parent = n.parent;
      d.token = n.token;
      d.logprobs = n.logprobs;
      d.allowed_tokens = n.allowed;
      d.constrained = constrained;
      out.push_back(d);
    }
    return out;
  }
};

std::vector<int32_t> expandable_tokens(const ToyModel& m, const Prefix& prefix) {
  std::vector<int32_t> tokens = m.allowed(prefix);
  if (!m.constrained) {
    for (int32_t v = 0; v < m.vocab; ++v) tokens.push_back(v);
  }
  return tokens;
}

// Depth-0 nodes: the target's live beams (their newest token; none before the first step).
Tree tree_roots(const BeamSearch& target) {
  Tree tree;
  for (int b = 0; b < target.num_live(); ++b) {
    const Prefix& live = target.live_tokens(b);
    tree.add(-1, live.empty() ? -1 : live.back(), live);
  }
  return tree;
}

bool is_stop(const BeamSearch& bs, int32_t token) {
  const auto& stops = bs.options().stop_tokens;
  return std::find(stops.begin(), stops.end(), token) != stops.end();
}

// Every allowed token under every node down to `depth`.
Tree full_tree(const BeamSearch& target, const ToyModel& m, int depth) {
  Tree tree = tree_roots(target);
  for (int i = 0; i < static_cast<int>(tree.storage.size()); ++i) {
    if (tree.storage[i].depth >= depth) continue;
    if (tree.storage[i].depth > 0 && is_stop(target, tree.storage[i].token)) continue;
    for (int32_t t : expandable_tokens(m, tree.storage[i].prefix)) {
      Prefix p = tree.storage[i].prefix;
      p.push_back(t);
      tree.add(i, t, std::move(p));
    }
  }
  return tree;
}

// The draft's beam search: num_beams beams for `depth` steps from the target's live beams.
Tree draft_beam_tree(const BeamSearch& target, const ToyModel& m, int num_beams, int depth,
                     float noise) {
  Tree tree = tree_roots(target);
  std::vector<std::pair<int, float>> frontier;  // (node, draft score)
  for (int b = 0; b < target.num_live(); ++b) frontier.push_back({b, target.live_score(b)});
  for (int d = 0; d < depth && !frontier.empty(); ++d) {
    struct Cand {
      int node;
      int32_t token;
      float score;
    };
    std::vector<Cand> cands;
    for (auto [node, score] : frontier) {
      const Prefix prefix = tree.storage[node].prefix;
      const std::vector<float> lp = draft_logprobs(m, prefix, noise);
      for (int32_t t : expandable_tokens(m, prefix)) cands.push_back({node, t, score + lp[t]});
    }
    std::stable_sort(cands.begin(), cands.end(),
                     [](const Cand& a, const Cand& b) { return a.score > b.score; });
    frontier.clear();
    for (size_t i = 0; i < cands.size() && static_cast<int>(i) < num_beams; ++i) {
      Prefix p = tree.storage[cands[i].node].prefix;
      p.push_back(cands[i].token);
      const int child = tree.add(cands[i].node, cands[i].token, std::move(p));
      if (!is_stop(target, cands[i].token)) frontier.push_back({child, cands[i].score});
    }
  }
  return tree;
}

// Each node expands each allowed token with probability 1/2.
Tree random_tree(const BeamSearch& target, const ToyModel& m, int depth, uint64_t seed) {
  Tree tree = tree_roots(target);
  uint64_t counter = 0;
  for (int i = 0; i < static_cast<int>(tree.storage.size()); ++i) {
    if (tree.storage[i].depth >= depth) continue;
    for (int32_t t : expandable_tokens(m, tree.storage[i].prefix)) {
      if (counter_uniform(seed, counter++) >= 0.5) continue;
      Prefix p = tree.storage[i].prefix;
      p.push_back(t);
      tree.add(i, t, std::move(p));
    }
  }
  return tree;
}

// A full tree without the target's first-step choices: nothing can be accepted.
Tree tree_missing_first_choices(const BeamSearch& target, const ToyModel& m, int depth) {
  BeamSearch probe = target;
  std::vector<std::vector<float>> rows;
  std::vector<std::vector<int32_t>> allowed;
  std::vector<BeamStepInput> inputs;
  for (int b = 0; b < probe.num_live(); ++b) {
    rows.push_back(m.logprobs(probe.live_tokens(b)));
    allowed.push_back(m.allowed(probe.live_tokens(b)));
  }
  for (int b = 0; b < probe.num_live(); ++b) inputs.push_back({rows[b], allowed[b], m.constrained});
  std::set<Prefix> chosen;
  for (const BeamChoice& c : probe.step(inputs)) {
    Prefix p = target.live_tokens(c.parent);
    p.push_back(c.token);
    chosen.insert(p);
  }
  Tree full = full_tree(target, m, depth);
  Tree tree;
  std::map<int, int> remap;
  for (int i = 0; i < static_cast<int>(full.storage.size()); ++i) {
    const Tree::Node& n = full.storage[i];
    if (n.parent >= 0 && remap.count(n.parent) == 0) continue;  // under a removed node
    if (n.depth == 1 && chosen.count(n.prefix)) continue;
    remap[i] = tree.add(n.parent < 0 ? -1 : remap[n.parent], n.token, n.prefix);
  }
  return tree;
}

// Steps `bs` with the model's logprobs of its live beams.
std::vector<BeamChoice> reference_step(BeamSearch& bs, const ToyModel& m) {
  std::vector<std::vector<float>> rows;
  std::vector<std::vector<int32_t>> allowed;
  for (int b = 0; b < bs.num_live(); ++b) {
    rows.push_back(m.logprobs(bs.live_tokens(b)));
    allowed.push_back(m.allowed(bs.live_tokens(b)));
  }
  std::vector<BeamStepInput> inputs;
  for (int b = 0; b < bs.num_live(); ++b) inputs.push_back({rows[b], allowed[b], m.constrained});
  return bs.step(inputs);
}

void expect_same_choices(const std::vector<BeamChoice>& a, const std::vector<BeamChoice>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].parent, b[i].parent);
    EXPECT_EQ(a[i].token, b[i].token);
    EXPECT_EQ(a[i].score, b[i].score);
  }
}

enum class Policy { kFull, kDraftBeam, kNoisyDraftBeam, kRandom, kNone };

Tree make_tree(Policy policy, const BeamSearch& target, const ToyModel& m, int depth,
               int draft_beams, uint64_t seed) {
  switch (policy) {
    case Policy::kFull:
      return full_tree(target, m, depth);
    case Policy::kDraftBeam:
      return draft_beam_tree(target, m, draft_beams, depth, 0.0f);
    case Policy::kNoisyDraftBeam:
      return draft_beam_tree(target, m, draft_beams, depth, 3.0f);
    case Policy::kRandom:
      return random_tree(target, m, depth, seed);
    case Policy::kNone:
      return tree_missing_first_choices(target, m, depth);
  }
  return {};
}

struct RoundCounts {
  int rounds = 0;
  int accepted = 0;
  int applied = 0;
};

// Runs a whole request by verification rounds and, beside it, plain BeamSearch one step at a
// time; every applied step must equal the reference's, and the accepted count must equal the
// definition evaluated on token prefixes.
RoundCounts run_against_reference(const BeamSearchOptions& opts, const ToyModel& m, Policy policy,
                                  int depth, int draft_beams, bool score_leaves, uint64_t seed) {
  RoundCounts counts;
  BeamSearch verified(opts);
  BeamSearch reference(opts);
  while (!verified.done()) {
    Tree tree = make_tree(policy, verified, m, depth, draft_beams, mix_seed(seed, counts.rounds));
    tree.score(m, score_leaves ? depth + 1 : depth);
    std::set<Prefix> drafted;
    std::set<Prefix> scored;
    for (const Tree::Node& n : tree.storage) {
      drafted.insert(n.prefix);
      if (n.scored) scored.insert(n.prefix);
    }
    const std::vector<DraftNode> nodes = tree.nodes(m.constrained);
    StrictVerifyResult r = verify_strict_top_k(verified, nodes);

    // The definition, on prefixes: run while the live beams were scored; accept a step when all
    // new live prefixes were drafted.
    int expected_accepted = 0;
    int expected_applied = 0;
    StrictVerifyStop expected_stop = StrictVerifyStop::kRejected;
    while (true) {
      if (reference.done()) {
        expected_stop = StrictVerifyStop::kDone;
        break;
      }
      bool all_scored = true;
      for (int b = 0; b < reference.num_live(); ++b) {
        all_scored = all_scored && scored.count(reference.live_tokens(b)) > 0;
      }
      if (!all_scored) {
        expected_stop = StrictVerifyStop::kDepthExhausted;
        break;
      }
      std::vector<Prefix> before;
      for (int b = 0; b < reference.num_live(); ++b) before.push_back(reference.live_tokens(b));
      std::vector<BeamChoice> choices = reference_step(reference, m);
      EXPECT_LT(expected_applied, r.num_applied());
      if (expected_applied >= r.num_applied()) return counts;
      expect_same_choices(r.steps[expected_applied], choices);
      const std::vector<int>& step_nodes = r.step_nodes[expected_applied];
      EXPECT_EQ(step_nodes.size(), before.size());
      for (size_t j = 0; j < step_nodes.size() && j < before.size(); ++j) {
        EXPECT_EQ(tree.storage[step_nodes[j]].prefix, before[j]);
      }
      ++expected_applied;
      bool all_drafted = true;
      for (int b = 0; b < reference.num_live(); ++b) {
        all_drafted = all_drafted && drafted.count(reference.live_tokens(b)) > 0;
      }
      if (!all_drafted) break;
      ++expected_accepted;
    }
    EXPECT_EQ(r.num_accepted, expected_accepted);
    EXPECT_EQ(r.num_applied(), expected_applied);
    EXPECT_EQ(r.stop, expected_stop);
    EXPECT_EQ(r.num_applied(), r.num_accepted + (r.stop == StrictVerifyStop::kRejected ? 1 : 0));
    // The final live beams: as the reference's, and the accepted nodes when the round ended
    // inside the tree.
    EXPECT_EQ(r.state.num_live(), reference.num_live());
    for (int b = 0; b < reference.num_live() && b < r.state.num_live(); ++b) {
      EXPECT_EQ(r.state.live_tokens(b), reference.live_tokens(b));
      EXPECT_EQ(r.state.live_score(b), reference.live_score(b));
    }
    if (r.stop == StrictVerifyStop::kDepthExhausted) {
      EXPECT_EQ(static_cast<int>(r.live_nodes.size()), reference.num_live());
      for (size_t j = 0; j < r.live_nodes.size(); ++j) {
        EXPECT_EQ(tree.storage[r.live_nodes[j]].prefix, reference.live_tokens(j));
      }
    } else {
      EXPECT_TRUE(r.live_nodes.empty());
    }
    if (policy == Policy::kFull && r.stop != StrictVerifyStop::kDone) {
      EXPECT_EQ(r.num_accepted, depth);
    }
    // Missing the target's first choices accepts nothing, unless that step ended the search.
    if (policy == Policy::kNone && r.stop != StrictVerifyStop::kDone) {
      EXPECT_EQ(r.num_accepted, 0);
    }
    // A round always makes progress unless the depth-0 beams were left unscored.
    EXPECT_GE(r.num_applied(), 1);
    if (r.num_applied() == 0 || testing::Test::HasFailure()) return counts;

    verified = r.state;
    ++counts.rounds;
    counts.accepted += r.num_accepted;
    counts.applied += r.num_applied();
  }
  EXPECT_TRUE(reference.done());
  const auto& a = verified.finished();
  const auto& b = reference.finished();
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens);
    EXPECT_EQ(a[i].score, b[i].score);
    EXPECT_EQ(a[i].cumulative_logprob, b[i].cumulative_logprob);
  }
  return counts;
}

TEST(SpeculativeVerifyTest, RoundsEqualPlainBeamSearchForEveryDraft) {
  const Policy policies[] = {Policy::kFull, Policy::kDraftBeam, Policy::kNoisyDraftBeam,
                             Policy::kRandom, Policy::kNone};
  std::map<Policy, RoundCounts> totals;
  for (uint64_t seed = 0; seed < 24; ++seed) {
    ToyModel m;
    m.vocab = 3 + static_cast<int>(seed % 4);
    m.salt = seed;
    m.constrained = seed % 3 == 1;
    BeamSearchOptions opts;
    opts.width = 1 + static_cast<int>(seed % 3);
    opts.max_tokens = 4 + static_cast<int>(seed % 5);
    if (seed % 2 == 0) opts.stop_tokens = {0};
    opts.early_stopping = seed % 4 == 2;
    opts.length_penalty = seed % 5 == 3 ? 0.5f : 1.0f;
    const int depth = 1 + static_cast<int>(seed % 3);
    const int draft_beams = opts.width + 1 + static_cast<int>(seed % 2) * 2;
    for (Policy policy : policies) {
      for (bool score_leaves : {true, false}) {
        SCOPED_TRACE(testing::Message() << "seed " << seed << " policy " << static_cast<int>(policy)
                                        << " leaves scored " << score_leaves);
        RoundCounts c =
            run_against_reference(opts, m, policy, depth, draft_beams, score_leaves, seed);
        if (testing::Test::HasFailure()) return;
        totals[policy].accepted += c.accepted;
        totals[policy].applied += c.applied;
        totals[policy].rounds += c.rounds;
      }
    }
  }
  // Better drafts are accepted more often: the drafts must not all degenerate to one case.
  EXPECT_GT(totals[Policy::kFull].accepted, totals[Policy::kDraftBeam].accepted);
  EXPECT_GT(totals[Policy::kDraftBeam].accepted, 0);
  EXPECT_LT(totals[Policy::kDraftBeam].accepted, totals[Policy::kDraftBeam].applied);
  EXPECT_GT(totals[Policy::kNone].rounds, 0);
}

// Hand-made: width 2 over tokens {0, 1, 2, 3}, one live beam before the first step.
class SpeculativeStrictTest : public testing::Test {
 protected:
  static std::vector<float> logs(std::vector<float> probs) {
    for (float& p : probs) p = std::log(p);
    return probs;
  }
  BeamSearch fresh(int max_tokens = 8, std::vector<int32_t> stops = {}) const {
    BeamSearchOptions o;
    o.width = 2;
    o.max_tokens = max_tokens;
    o.stop_tokens = std::move(stops);
    return BeamSearch(o);
  }
  int add(int parent, int32_t token, const std::vector<float>* logprobs) {
    DraftNode n;
    n.parent = parent;
    n.token = token;
    if (logprobs) n.logprobs = *logprobs;
    nodes_.push_back(n);
    return static_cast<int>(nodes_.size()) - 1;
  }

  // Step 1 from the root keeps tokens 0 (0.5) and 1 (0.3).
  const std::vector<float> root_ = logs({0.5f, 0.3f, 0.15f, 0.05f});
  // Step 2: after token 0, token 1 (0.5 * 0.7 = 0.35); after token 1, token 0 (0.3 * 0.9 = 0.27).
  const std::vector<float> after0_ = logs({0.1f, 0.7f, 0.1f, 0.1f});
  const std::vector<float> after1_ = logs({0.9f, 0.05f, 0.025f, 0.025f});
  const std::vector<float> flat_ = logs({0.25f, 0.25f, 0.25f, 0.25f});
  std::vector<DraftNode> nodes_;
};

TEST_F(SpeculativeStrictTest, AcceptsUntilAChoiceLeavesTheTree) {
  const int root = add(-1, 7, &root_);
  const int n0 = add(root, 0, &after0_);
  const int n1 = add(root, 1, &after1_);
  add(root, 2, &flat_);
  add(n0, 1, &flat_);
  add(n1, 3, &flat_);  // the target wants token 0 here
  StrictVerifyResult r = verify_strict_top_k(fresh(), nodes_);
  EXPECT_EQ(r.num_accepted, 1);
  EXPECT_EQ(r.num_applied(), 2);
  EXPECT_EQ(r.stop, StrictVerifyStop::kRejected);
  ASSERT_EQ(r.steps.size(), 2u);
  ASSERT_EQ(r.steps[0].size(), 2u);
  EXPECT_EQ(r.steps[0][0].token, 0);
  EXPECT_EQ(r.steps[0][1].token, 1);
  EXPECT_EQ(r.step_nodes[0], std::vector<int>({root}));
  EXPECT_EQ(r.step_nodes[1], std::vector<int>({n0, n1}));
  ASSERT_EQ(r.steps[1].size(), 2u);
  EXPECT_EQ(r.steps[1][0].parent, 0);
  EXPECT_EQ(r.steps[1][0].token, 1);
  EXPECT_EQ(r.steps[1][1].parent, 1);
  EXPECT_EQ(r.steps[1][1].token, 0);
  EXPECT_NEAR(r.steps[1][0].score, std::log(0.35f), 1e-5);
  EXPECT_EQ(r.state.live_tokens(0), std::vector<int32_t>({0, 1}));
  EXPECT_EQ(r.state.live_tokens(1), std::vector<int32_t>({1, 0}));
  EXPECT_TRUE(r.live_nodes.empty());
}

TEST_F(SpeculativeStrictTest, RejectsAtTheFirstStepWhenTheDraftMissesTheTopK) {
  const int root = add(-1, 7, &root_);
  add(root, 0, &after0_);  // token 1 is missing
  add(root, 2, &flat_);
  StrictVerifyResult r = verify_strict_top_k(fresh(), nodes_);
  EXPECT_EQ(r.num_accepted, 0);
  EXPECT_EQ(r.num_applied(), 1);
  EXPECT_EQ(r.stop, StrictVerifyStop::kRejected);
  EXPECT_EQ(r.state.live_tokens(0), std::vector<int32_t>({0}));
  EXPECT_EQ(r.state.live_tokens(1), std::vector<int32_t>({1}));
}

TEST_F(SpeculativeStrictTest, ScoredLeavesGiveOneMoreStepAndUnscoredLeavesEndTheRound) {
  for (bool leaves_scored : {true, false}) {
    nodes_.clear();
    const int root = add(-1, 7, &root_);
    const int n0 = add(root, 0, &after0_);
    const int n1 = add(root, 1, &after1_);
    const int n01 = add(n0, 1, leaves_scored ? &flat_ : nullptr);
    const int n10 = add(n1, 0, leaves_scored ? &flat_ : nullptr);
    StrictVerifyResult r = verify_strict_top_k(fresh(), nodes_);
    EXPECT_EQ(r.num_accepted, 2);
    if (leaves_scored) {
      EXPECT_EQ(r.num_applied(), 3);
      EXPECT_EQ(r.stop, StrictVerifyStop::kRejected);
      EXPECT_EQ(r.step_nodes[2], std::vector<int>({n01, n10}));
      EXPECT_EQ(r.state.live_tokens(0).size(), 3u);
    } else {
      EXPECT_EQ(r.num_applied(), 2);
      EXPECT_EQ(r.stop, StrictVerifyStop::kDepthExhausted);
      EXPECT_EQ(r.live_nodes, std::vector<int>({n01, n10}));
      EXPECT_EQ(r.state.live_tokens(0), std::vector<int32_t>({0, 1}));
    }
  }
}

TEST_F(SpeculativeStrictTest, AFinishedSearchCountsItsLastStepAsAccepted) {
  const int root = add(-1, 7, &root_);
  add(root, 0, &after0_);
  add(root, 1, &after1_);
  StrictVerifyResult r = verify_strict_top_k(fresh(/*max_tokens=*/2), nodes_);
  EXPECT_EQ(r.num_accepted, 2);
  EXPECT_EQ(r.num_applied(), 2);
  EXPECT_EQ(r.stop, StrictVerifyStop::kDone);
  EXPECT_TRUE(r.steps[1].empty());
  EXPECT_TRUE(r.state.done());
  ASSERT_EQ(r.state.finished().size(), 2u);
  EXPECT_EQ(r.state.finished()[0].tokens, std::vector<int32_t>({0, 1}));
  EXPECT_EQ(r.state.finished()[1].tokens, std::vector<int32_t>({1, 0}));
}

TEST_F(SpeculativeStrictTest, AStopTokenNeedsNoNode) {
  // Token 3 is best and stops: it becomes a hypothesis, and the live beams are tokens 0 and 1.
  const std::vector<float> root = logs({0.3f, 0.2f, 0.1f, 0.4f});
  const int r0 = add(-1, 7, &root);
  add(r0, 0, &flat_);
  add(r0, 1, &flat_);
  StrictVerifyResult r = verify_strict_top_k(fresh(8, {3}), nodes_);
  EXPECT_EQ(r.num_accepted, 1);
  EXPECT_EQ(r.num_applied(), 2);
  ASSERT_EQ(r.state.finished().size(), 1u);
  EXPECT_EQ(r.state.finished()[0].tokens, std::vector<int32_t>({3}));
  EXPECT_EQ(r.steps[0].size(), 2u);
}

TEST_F(SpeculativeStrictTest, ADoneSearchAppliesNothing) {
  add(-1, 7, &root_);
  BeamSearch done = fresh(/*max_tokens=*/1);
  std::vector<BeamStepInput> in = {{root_, {}, false}};
  done.step(in);
  ASSERT_TRUE(done.done());
  StrictVerifyResult r = verify_strict_top_k(done, nodes_);
  EXPECT_EQ(r.num_applied(), 0);
  EXPECT_EQ(r.stop, StrictVerifyStop::kDone);
}

DraftNode node(int parent, int32_t token, std::span<const float> logprobs) {
  DraftNode n;
  n.parent = parent;
  n.token = token;
  n.logprobs = logprobs;
  return n;
}

TEST(SpeculativeVerifyDeathTest, MalformedTreesAbort) {
  BeamSearch bs(BeamSearchOptions{});
  std::vector<float> lp = {std::log(0.5f), std::log(0.5f)};
  std::vector<DraftNode> later_parent = {node(-1, 0, lp), node(2, 1, lp), node(0, 1, lp)};
  EXPECT_DEATH(verify_strict_top_k(bs, later_parent), "parent");
  std::vector<DraftNode> repeated = {node(-1, 0, lp), node(0, 1, lp), node(0, 1, lp)};
  EXPECT_DEATH(verify_strict_top_k(bs, repeated), "repeats a child");
  std::vector<DraftNode> two_roots = {node(-1, 0, lp), node(-1, 1, lp)};
  EXPECT_DEATH(verify_strict_top_k(bs, two_roots), "parent");
}

// ---- Relaxed sampling verification ----

// Index of a draw from `probs` with uniform u.
int draw_from(const std::vector<double>& probs, double u) {
  double acc = 0.0;
  int last = -1;
  for (int c = 0; c < static_cast<int>(probs.size()); ++c) {
    if (probs[c] <= 0.0) continue;
    last = c;
    acc += probs[c];
    if (u < acc) return c;
  }
  return last;
}

std::vector<double> residual(const std::vector<double>& p, const std::vector<double>& q) {
  std::vector<double> r(p.size());
  double sum = 0.0;
  for (size_t c = 0; c < p.size(); ++c) sum += r[c] = std::max(0.0, p[c] - q[c]);
  for (double& v : r) v /= sum;
  return r;
}

// |frequency - expected| within 5 standard errors for every candidate.
void expect_frequencies(const std::vector<int>& counts, int total,
                        const std::vector<double>& want) {
  ASSERT_GT(total, 0);
  for (size_t c = 0; c < want.size(); ++c) {
    const double f = static_cast<double>(counts[c]) / total;
    const double se = std::sqrt(std::max(want[c] * (1.0 - want[c]), 1e-12) / total);
    EXPECT_LE(std::abs(f - want[c]), 5.0 * se + 1e-12)
        << "candidate " << c << ": frequency " << f << " vs " << want[c];
  }
}

class SpeculativeRelaxedTest : public testing::Test {
 protected:
  const std::vector<double> p_ = {0.1, 0.4, 0.2, 0.3, 0.0};
  const std::vector<double> q_ = {0.3, 0.1, 0.2, 0.2, 0.2};
  static constexpr int kTrials = 20000;
  static constexpr uint64_t kDraftSeed = 0xd4af7;
};

TEST_F(SpeculativeRelaxedTest, OneDrawOneKeepIsDistributedAsTheTarget) {
  std::vector<int> counts(p_.size(), 0);
  int accepted = 0;
  double min_sum = 0.0;
  for (size_t c = 0; c < p_.size(); ++c) min_sum += std::min(p_[c], q_[c]);
  for (int t = 0; t < kTrials; ++t) {
    const int draw = draw_from(q_, counter_uniform(kDraftSeed, t));
    RelaxedVerifyInput in;
    in.target_probs = p_;
    in.draft_probs = q_;
    in.draws = std::span<const int>(&draw, 1);
    in.num_keep = 1;
    in.seed = mix_seed(42, t);
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    ASSERT_EQ(r.chosen.size(), 1u);
    ++counts[r.chosen[0]];
    accepted += r.num_accepted;
    EXPECT_EQ(r.num_accepted, r.num_accepted_draws);
  }
  expect_frequencies(counts, kTrials, p_);
  EXPECT_EQ(counts[4], 0);
  // The acceptance rate of one draw is sum_c min(p, q).
  const double se = std::sqrt(min_sum * (1 - min_sum) / kTrials);
  EXPECT_NEAR(static_cast<double>(accepted) / kTrials, min_sum, 5 * se);
}

// A plain relaxed step (no tree: no draws, q = p) keeps K candidates drawn one after another
// from p without replacement: the ordered pair (a, b) has probability p[a] * p[b] / (1 - p[a]).
// The residual max(0, p - q) is empty from the start, so every draw comes from p.
TEST_F(SpeculativeRelaxedTest, NoDrawsKeepsASampleWithoutReplacementFromTheTarget) {
  const int n = static_cast<int>(p_.size());
  std::vector<int> counts(static_cast<size_t>(n * n), 0);
  for (int t = 0; t < kTrials; ++t) {
    RelaxedVerifyInput in;
    in.target_probs = p_;
    in.draft_probs = p_;
    in.num_keep = 2;
    in.seed = mix_seed(11, t);
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    ASSERT_EQ(r.chosen.size(), 2u);
    EXPECT_EQ(r.num_accepted, 0);
    ASSERT_NE(r.chosen[0], r.chosen[1]);
    ++counts[static_cast<size_t>(r.chosen[0] * n + r.chosen[1])];
  }
  std::vector<double> want(counts.size(), 0.0);
  for (int a = 0; a < n; ++a) {
    for (int b = 0; b < n; ++b) {
      if (a != b) want[static_cast<size_t>(a * n + b)] = p_[a] * p_[b] / (1.0 - p_[a]);
    }
  }
  expect_frequencies(counts, kTrials, want);
}

// When the residual runs out part-way (one candidate holds all of it), the remaining picks come
// from p over the candidates still free, and no candidate repeats.
TEST_F(SpeculativeRelaxedTest, ResidualRunningOutSwitchesToTheTarget) {
  const std::vector<double> p = {0.5, 0.2, 0.2, 0.1};
  const std::vector<double> q = {0.2, 0.3, 0.3, 0.2};  // residual: all on candidate 0
  std::vector<int> second(p.size(), 0);
  for (int t = 0; t < kTrials; ++t) {
    RelaxedVerifyInput in;
    in.target_probs = p;
    in.draft_probs = q;
    in.num_keep = 3;
    in.seed = mix_seed(12, t);
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    ASSERT_EQ(r.chosen.size(), 3u);
    ASSERT_EQ(r.chosen[0], 0);
    EXPECT_EQ(std::set<int>(r.chosen.begin(), r.chosen.end()).size(), 3u);
    ++second[static_cast<size_t>(r.chosen[1])];
  }
  expect_frequencies(second, kTrials, {0.0, 0.4, 0.4, 0.2});
}

TEST_F(SpeculativeRelaxedTest, RejectedDrawsAreReplacedFromTheResidual) {
  std::vector<int> counts(p_.size(), 0);
  int rejected = 0;
  for (int t = 0; t < kTrials; ++t) {
    const int draw = draw_from(q_, counter_uniform(kDraftSeed, t));
    RelaxedVerifyInput in;
    in.target_probs = p_;
    in.draft_probs = q_;
    in.draws = std::span<const int>(&draw, 1);
    in.seed = mix_seed(7, t);
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    if (r.num_accepted > 0) continue;
    ++rejected;
    ASSERT_EQ(r.chosen.size(), 1u);
    ++counts[r.chosen[0]];
  }
  EXPECT_GT(rejected, kTrials / 4);
  expect_frequencies(counts, rejected, residual(p_, q_));
}

TEST_F(SpeculativeRelaxedTest, DisjointSupportAcceptsNothingAndSamplesTheTarget) {
  const std::vector<double> p = {0.5, 0.0, 0.25, 0.0, 0.25};
  const std::vector<double> q = {0.0, 0.6, 0.0, 0.4, 0.0};
  std::vector<int> counts(p.size(), 0);
  for (int t = 0; t < kTrials; ++t) {
    int draws[3];
    for (int i = 0; i < 3; ++i) draws[i] = draw_from(q, counter_uniform(kDraftSeed, 3 * t + i));
    RelaxedVerifyInput in;
    in.target_probs = p;
    in.draft_probs = q;
    in.draws = draws;
    in.seed = mix_seed(9, t);
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    EXPECT_EQ(r.num_accepted_draws, 0);
    EXPECT_EQ(r.num_accepted, 0);
    ASSERT_EQ(r.chosen.size(), 1u);
    ++counts[r.chosen[0]];
  }
  expect_frequencies(counts, kTrials, p);
}

TEST_F(SpeculativeRelaxedTest, EqualDistributionsAcceptEveryDrawAndKeepTheMostLikely) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const int draws[] = {0, 2, 0, 3, 2};
    RelaxedVerifyInput in;
    in.target_probs = p_;
    in.draft_probs = p_;
    in.draws = draws;
    in.num_keep = 2;
    in.seed = seed;
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    EXPECT_EQ(r.num_accepted_draws, 5);
    EXPECT_EQ(r.num_accepted, 2);
    EXPECT_EQ(r.chosen, std::vector<int>({3, 2}));  // p = 0.3, 0.2 among {0, 2, 3}
  }
}

TEST_F(SpeculativeRelaxedTest, FewAcceptedAreToppedUpWithoutDuplicates) {
  // p == q: every draw passes but only candidate 0 was drawn, and the residual is zero, so the
  // rest come from p over the candidates not yet chosen.
  std::vector<int> second(p_.size(), 0);
  for (int t = 0; t < kTrials; ++t) {
    const int draws[] = {0, 0};
    RelaxedVerifyInput in;
    in.target_probs = p_;
    in.draft_probs = p_;
    in.draws = draws;
    in.num_keep = 3;
    in.seed = mix_seed(3, t);
    RelaxedVerifyResult r = verify_relaxed_sampling(in);
    EXPECT_EQ(r.num_accepted, 1);
    ASSERT_EQ(r.chosen.size(), 3u);
    EXPECT_EQ(r.chosen[0], 0);
    EXPECT_EQ(std::set<int>(r.chosen.begin(), r.chosen.end()).size(), 3u);
    for (int c : r.chosen) EXPECT_GT(p_[c], 0.0);
    ++second[r.chosen[1]];
  }
  // The first top-up is p restricted to candidates other than 0.
  expect_frequencies(second, kTrials, {0.0, 0.4 / 0.9, 0.2 / 0.9, 0.3 / 0.9, 0.0});
}

TEST_F(SpeculativeRelaxedTest, KeepsFewerOnlyWhenTheTargetHasNoMoreCandidates) {
  const std::vector<double> p = {0.0, 0.7, 0.3};
  const std::vector<double> q = {1.0, 0.0, 0.0};
  const int draws[] = {0, 0, 0};
  RelaxedVerifyInput in;
  in.target_probs = p;
  in.draft_probs = q;
  in.draws = draws;
  in.num_keep = 3;
  RelaxedVerifyResult r = verify_relaxed_sampling(in);
  EXPECT_EQ(r.num_accepted, 0);
  EXPECT_EQ(std::set<int>(r.chosen.begin(), r.chosen.end()), std::set<int>({1, 2}));
}

TEST_F(SpeculativeRelaxedTest, SameSeedSameResult) {
  const int draws[] = {1, 0, 3, 0};
  RelaxedVerifyInput in;
  in.target_probs = p_;
  in.draft_probs = q_;
  in.draws = draws;
  in.num_keep = 3;
  in.seed = 11;
  in.counter = 100;
  RelaxedVerifyResult a = verify_relaxed_sampling(in);
  RelaxedVerifyResult b = verify_relaxed_sampling(in);
  EXPECT_EQ(a.chosen, b.chosen);
  EXPECT_EQ(a.num_accepted_draws, b.num_accepted_draws);
}

TEST(SpeculativeVerifyDeathTest, RelaxedRejectsADrawTheDraftCouldNotMake) {
  const std::vector<double> p = {0.5, 0.5};
  const std::vector<double> q = {1.0, 0.0};
  const int draws[] = {1};
  RelaxedVerifyInput in;
  in.target_probs = p;
  in.draft_probs = q;
  in.draws = draws;
  EXPECT_DEATH(verify_relaxed_sampling(in), "draft probability 0");
  const std::vector<double> not_normalised = {0.5, 0.2};
  in.draft_probs = not_normalised;
  EXPECT_DEATH(verify_relaxed_sampling(in), "sums to");
}

TEST(SpeculativeCandidateDistributionTest, IsTheNormalisedProductOfBeamAndTokenProbabilities) {
  const std::vector<float> beam_scores = {-1000.0f, -1001.0f};
  const std::vector<int> beams = {0, 0, 1, 1};
  const std::vector<float> token_lp = {std::log(0.5f), std::log(0.5f), 0.0f,
                                       -std::numeric_limits<float>::infinity()};
  std::vector<double> p = candidate_distribution(beam_scores, beams, token_lp);
  ASSERT_EQ(p.size(), 4u);
  const double w0 = 1.0, w1 = std::exp(-1.0);  // beam weights relative to beam 0
  const double z = w0 * 0.5 + w0 * 0.5 + w1;
  EXPECT_NEAR(p[0], 0.5 / z, 1e-6);
  EXPECT_NEAR(p[1], 0.5 / z, 1e-6);
  EXPECT_NEAR(p[2], w1 / z, 1e-6);
  EXPECT_EQ(p[3], 0.0);
  const std::vector<float> none = {-std::numeric_limits<float>::infinity()};
  const std::vector<int> one = {0};
  EXPECT_EQ(candidate_distribution(beam_scores, one, none), std::vector<double>({0.0}));
}

}  // namespace
}  // namespace earnserve
