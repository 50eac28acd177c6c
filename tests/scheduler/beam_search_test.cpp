#include "scheduler/beam_search.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "scheduler/sampler.h"

namespace earnserve {
namespace {

// A deterministic "model": next-token log-probabilities from a hash of the prefix.
std::vector<float> fake_logprobs(const std::vector<int32_t>& prefix, int vocab) {
  std::vector<float> logits(vocab);
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : prefix) h = (h ^ static_cast<uint64_t>(t + 1)) * 1099511628211ull;
  for (int v = 0; v < vocab; ++v) logits[v] = static_cast<float>(counter_uniform(h, v) * 4.0);
  float lse = log_sum_exp(logits);
  for (float& x : logits) x -= lse;
  return logits;
}

std::vector<BeamHypothesis> run(BeamSearchOptions opts, int vocab,
                                const std::vector<int32_t>* allowed = nullptr) {
  BeamSearch bs(opts);
  while (!bs.done()) {
    std::vector<std::vector<float>> rows;
    std::vector<BeamStepInput> inputs;
    for (int b = 0; b < bs.num_live(); ++b) rows.push_back(fake_logprobs(bs.live_tokens(b), vocab));
    for (auto& r : rows) {
      BeamStepInput in;
      in.logprobs = r;
      if (allowed) {
        in.allowed_tokens = *allowed;
        in.constrained = true;
      }
      inputs.push_back(in);
    }
    bs.step(inputs);
  }
  return bs.finished();
}

TEST(BeamSearchTest, WidthOneIsGreedy) {
  BeamSearchOptions o;
  o.width = 1;
  o.max_tokens = 6;
  o.stop_tokens = {0};
  auto hyps = run(o, 12);
  ASSERT_EQ(hyps.size(), 1u);
  std::vector<int32_t> prefix;
  float total = 0;
  for (int i = 0; i < 6; ++i) {
    auto lp = fake_logprobs(prefix, 12);
    int best = 0;
    for (int v = 1; v < 12; ++v)
      if (lp[v] > lp[best]) best = v;
    prefix.push_back(best);
    total += lp[best];
    if (best == 0) break;
  }
  EXPECT_EQ(hyps[0].tokens, prefix);
  EXPECT_NEAR(hyps[0].cumulative_logprob, total, 1e-5);
}

TEST(BeamSearchTest, FindsTheBestFixedLengthSequencesExhaustively) {
  // Without stop tokens every hypothesis has max_tokens tokens; with width = vocab^(len-1) beam
  // search cannot prune the optimum, so the best hypothesis equals exhaustive search.
  const int vocab = 5, len = 3;
  BeamSearchOptions o;
  o.width = 25;
  o.max_tokens = len;
  auto hyps = run(o, vocab);
  std::multimap<float, std::vector<int32_t>, std::greater<float>> all;
  for (int a = 0; a < vocab; ++a)
    for (int b = 0; b < vocab; ++b)
      for (int c = 0; c < vocab; ++c) {
        std::vector<int32_t> s = {a, b, c};
        float lp = fake_logprobs({}, vocab)[a] + fake_logprobs({a}, vocab)[b] +
                   fake_logprobs({a, b}, vocab)[c];
        all.emplace(lp, s);
      }
  ASSERT_EQ(hyps.size(), 25u);
  auto it = all.begin();
  for (int i = 0; i < 5; ++i, ++it) {
    EXPECT_EQ(hyps[i].tokens, it->second) << i;
    EXPECT_NEAR(hyps[i].score, it->first / std::pow(3.0f, 1.0f), 1e-5);
  }
}

TEST(BeamSearchTest, HypothesesAreSortedAndRespectConstraints) {
  BeamSearchOptions o;
  o.width = 4;
  o.max_tokens = 5;
  o.stop_tokens = {2};
  std::vector<int32_t> allowed = {2, 5, 7};
  auto hyps = run(o, 10, &allowed);
  ASSERT_EQ(hyps.size(), 4u);
  for (size_t i = 0; i < hyps.size(); ++i) {
    if (i) EXPECT_GE(hyps[i - 1].score, hyps[i].score);
    for (int32_t t : hyps[i].tokens) EXPECT_TRUE(t == 2 || t == 5 || t == 7);
    float norm = std::pow(static_cast<float>(hyps[i].tokens.size()), 1.0f);
    EXPECT_NEAR(hyps[i].score, hyps[i].cumulative_logprob / norm, 1e-5);
  }
}

// apply(): the caller picks each step's candidates (relaxed speculative verification).
TEST(BeamSearchTest, ApplyKeepsChosenBeamsAndFinishesStopTokens) {
  BeamSearchOptions o;
  o.width = 3;
  o.max_tokens = 8;
  o.length_penalty = 2.0f;
  o.stop_tokens = {0};
  BeamSearch bs(o);
  // Step 1: a stop token finishes a hypothesis, the others live on in the given order.
  std::vector<BeamChoice> chosen = {{0, 5, -1.0f}, {0, 0, -0.5f}, {0, 7, -2.0f}};
  auto live = bs.apply(chosen);
  ASSERT_EQ(live.size(), 2u);
  EXPECT_EQ(live[0].token, 5);
  EXPECT_EQ(live[1].token, 7);
  ASSERT_EQ(bs.num_live(), 2);
  EXPECT_EQ(bs.live_tokens(0), (std::vector<int32_t>{5}));
  EXPECT_EQ(bs.live_tokens(1), (std::vector<int32_t>{7}));
  EXPECT_FLOAT_EQ(bs.live_score(1), -2.0f);
  ASSERT_EQ(bs.finished().size(), 1u);
  EXPECT_EQ(bs.finished()[0].tokens, (std::vector<int32_t>{0}));
  EXPECT_FLOAT_EQ(bs.finished()[0].score, -0.5f);  // 1^2
  EXPECT_FALSE(bs.done());
  // Step 2: parents index the current live beams; the score divides by length^penalty as step().
  chosen = {{1, 3, -2.5f}, {0, 0, -1.2f}};
  live = bs.apply(chosen);
  ASSERT_EQ(live.size(), 1u);
  EXPECT_EQ(bs.live_tokens(0), (std::vector<int32_t>{7, 3}));
  ASSERT_EQ(bs.finished().size(), 2u);
  // -1.2 / 2^2 = -0.3 beats [0]'s -0.5: best first.
  EXPECT_EQ(bs.finished()[0].tokens, (std::vector<int32_t>{5, 0}));
  EXPECT_FLOAT_EQ(bs.finished()[0].cumulative_logprob, -1.2f);
  EXPECT_FLOAT_EQ(bs.finished()[0].score, -1.2f / 4.0f);
  EXPECT_EQ(bs.finished()[1].tokens, (std::vector<int32_t>{0}));
  // Step 3: width hypotheses finished ends the search, best first.
  live = bs.apply(std::vector<BeamChoice>{{0, 0, -2.25f}, {0, 4, -3.0f}});
  EXPECT_TRUE(live.empty());
  EXPECT_TRUE(bs.done());
  EXPECT_EQ(bs.num_live(), 0);
  ASSERT_EQ(bs.finished().size(), 3u);
  EXPECT_EQ(bs.finished()[0].tokens, (std::vector<int32_t>{7, 3, 0}));  // -2.25 / 9 = -0.25
  EXPECT_EQ(bs.finished()[1].tokens, (std::vector<int32_t>{5, 0}));     // -1.2 / 4 = -0.3
  EXPECT_EQ(bs.finished()[2].tokens, (std::vector<int32_t>{0}));        // -0.5
}

TEST(BeamSearchTest, ApplyAtMaxTokensFinishesEveryChoice) {
  BeamSearchOptions o;
  o.width = 2;
  o.max_tokens = 2;
  BeamSearch bs(o);
  ASSERT_EQ(bs.apply(std::vector<BeamChoice>{{0, 4, -1.0f}, {0, 6, -0.25f}}).size(), 2u);
  EXPECT_TRUE(bs.apply(std::vector<BeamChoice>{{1, 1, -3.0f}, {0, 2, -1.5f}}).empty());
  EXPECT_TRUE(bs.done());
  ASSERT_EQ(bs.finished().size(), 2u);
  EXPECT_EQ(bs.finished()[0].tokens, (std::vector<int32_t>{4, 2}));
  EXPECT_EQ(bs.finished()[1].tokens, (std::vector<int32_t>{6, 1}));
  EXPECT_FLOAT_EQ(bs.finished()[1].score, -1.5f);
}

TEST(BeamSearchTest, ApplyWithNothingChosenOrOnlyStopsEnds) {
  BeamSearchOptions o;
  o.width = 3;
  o.stop_tokens = {9};
  BeamSearch empty(o);
  EXPECT_TRUE(empty.apply({}).empty());
  EXPECT_TRUE(empty.done());
  EXPECT_TRUE(empty.finished().empty());
  // Fewer than width finished but no live beam left: done with what finished.
  BeamSearch stops(o);
  EXPECT_TRUE(stops.apply(std::vector<BeamChoice>{{0, 9, -0.1f}}).empty());
  EXPECT_TRUE(stops.done());
  ASSERT_EQ(stops.finished().size(), 1u);
  EXPECT_EQ(stops.finished()[0].tokens, (std::vector<int32_t>{9}));
}

// Applying step()'s own choices (when no candidate stops) gives step()'s live beams.
TEST(BeamSearchTest, ApplyOfStepsChoicesMatchesStep) {
  BeamSearchOptions o;
  o.width = 3;
  o.max_tokens = 4;
  BeamSearch by_step(o), by_apply(o);
  const int vocab = 9;
  while (!by_step.done()) {
    std::vector<std::vector<float>> rows;
    for (int b = 0; b < by_step.num_live(); ++b) {
      rows.push_back(fake_logprobs(by_step.live_tokens(b), vocab));
    }
    std::vector<BeamStepInput> inputs(rows.size());
    for (size_t b = 0; b < rows.size(); ++b) inputs[b].logprobs = rows[b];
    std::vector<BeamChoice> choices = by_step.step(inputs);
    if (by_step.done()) break;
    by_apply.apply(choices);
    ASSERT_EQ(by_apply.num_live(), by_step.num_live());
    for (int b = 0; b < by_step.num_live(); ++b) {
      EXPECT_EQ(by_apply.live_tokens(b), by_step.live_tokens(b));
      EXPECT_FLOAT_EQ(by_apply.live_score(b), by_step.live_score(b));
    }
  }
}

}  // namespace
}  // namespace earnserve
