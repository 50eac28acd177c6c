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
    for (int v = 1; v < 12; ++v) if (lp[v] > lp[best]) best = v;
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

}  // namespace
}  // namespace earnserve
