#include "scheduler/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

#include "kernels/cpu/cpu_features.h"

namespace earnserve {
namespace {

std::vector<float> make_logits() { return {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 0.5f}; }

TEST(SamplerTest, GreedyPicksFirstMaximum) {
  SamplingParams p;
  p.temperature = 0.0f;
  std::vector<float> logits = make_logits();
  SampledToken t = sample_token(logits, p, {});
  EXPECT_EQ(t.token, 1);
  std::vector<float> raw = make_logits();
  EXPECT_NEAR(t.logprob, raw[1] - log_sum_exp(raw), 1e-6);
}

// log_sum_exp on both CPU paths against a double-precision reference: a vocabulary-sized row
// (logits spread like a model's, some masked to -inf), rows shorter than a vector, a row with a
// single finite entry, and an all -inf row.
TEST(SamplerTest, LogSumExpMatchesDoubleReferenceOnEveryPath) {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  std::vector<float> big(151936);
  for (size_t i = 0; i < big.size(); ++i) big[i] = i % 97 == 0 ? -kInf : normal(rng);
  const std::vector<std::vector<float>> rows = {
      big, {0.5f}, {1.0f, -2.0f, 3.0f}, {-kInf, 2.5f, -kInf}, {-kInf, -kInf}, make_logits()};
  const cpu::CpuIsa saved = cpu::cpu_isa();
  for (cpu::CpuIsa isa : cpu::kAllCpuIsas) {
    if (!cpu::cpu_isa_supported(isa)) continue;
    cpu::set_cpu_isa(isa);
    for (const std::vector<float>& row : rows) {
      double max_value = -std::numeric_limits<double>::infinity();
      for (float v : row) max_value = std::max<double>(max_value, v);
      const float got = log_sum_exp(row);
      if (std::isinf(max_value)) {
        EXPECT_EQ(got, -kInf);
        continue;
      }
      double sum = 0;
      for (float v : row) sum += std::exp(double(v) - max_value);
      EXPECT_NEAR(got, max_value + std::log(sum), 2e-6 * std::max(1.0, std::fabs(max_value)))
          << "row of " << row.size() << " on isa " << static_cast<int>(isa);
    }
  }
  cpu::set_cpu_isa(saved);
}

TEST(SamplerTest, ConstraintRestrictsChoices) {
  SamplingParams p;
  p.temperature = 0.0f;
  std::vector<int32_t> allowed = {0, 4, 5};
  SamplingContext ctx;
  ctx.allowed_tokens = allowed;
  ctx.constrained = true;
  std::vector<float> logits = make_logits();
  EXPECT_EQ(sample_token(logits, p, ctx).token, 0);
}

TEST(SamplerTest, SeededSamplingIsReproducibleAndFollowsDistribution) {
  SamplingParams p;
  p.temperature = 1.0f;
  std::vector<int32_t> history;
  std::map<int32_t, int> counts;
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) {
    SamplingContext ctx;
    ctx.seed = mix_seed(7, i);
    std::vector<float> logits = make_logits();
    counts[sample_token(logits, p, ctx).token]++;
  }
  std::vector<float> raw = make_logits();
  float lse = log_sum_exp(raw);
  for (int32_t t = 0; t < 6; ++t) {
    double expected = std::exp(raw[t] - lse);
    double observed = static_cast<double>(counts[t]) / draws;
    EXPECT_NEAR(observed, expected, 4 * std::sqrt(expected * (1 - expected) / draws) + 1e-3) << t;
  }
  SamplingContext ctx;
  ctx.seed = 99;
  std::vector<float> a = make_logits(), b = make_logits();
  EXPECT_EQ(sample_token(a, p, ctx).token, sample_token(b, p, ctx).token);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  SamplingParams p;
  p.top_k = 1;
  for (uint64_t s = 0; s < 50; ++s) {
    SamplingContext ctx;
    ctx.seed = s;
    std::vector<float> logits = make_logits();
    EXPECT_EQ(sample_token(logits, p, ctx).token, 1);
  }
}

TEST(SamplerTest, TopPKeepsSmallestNucleus) {
  SamplingParams p;
  p.top_p = 0.5f;  // tokens 1 and 3 tie at the top and hold ~0.6 of the mass together
  std::map<int32_t, int> counts;
  for (uint64_t s = 0; s < 2000; ++s) {
    SamplingContext ctx;
    ctx.seed = s;
    std::vector<float> logits = make_logits();
    counts[sample_token(logits, p, ctx).token]++;
  }
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[3], 0);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  SamplingParams p;
  p.min_p = 0.3f;  // keeps tokens with p >= 0.3 * p_max: 1, 3 (equal) and 2 (e^-1 = 0.37)
  std::map<int32_t, int> counts;
  for (uint64_t s = 0; s < 3000; ++s) {
    SamplingContext ctx;
    ctx.seed = s;
    std::vector<float> logits = make_logits();
    counts[sample_token(logits, p, ctx).token]++;
  }
  EXPECT_EQ(counts.size(), 3u);
  EXPECT_EQ(counts.count(0), 0u);
}

TEST(SamplerTest, RepetitionAndFrequencyPenaltiesChangeGreedyChoice) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.frequency_penalty = 2.0f;
  std::vector<int32_t> output = {1, 3};
  SamplingContext ctx;
  ctx.output_tokens = output;
  std::vector<float> logits = make_logits();
  EXPECT_EQ(sample_token(logits, p, ctx).token, 2);

  SamplingParams r;
  r.temperature = 0.0f;
  r.repetition_penalty = 2.0f;
  std::vector<int32_t> prompt = {1, 3};
  SamplingContext rctx;
  rctx.prompt_tokens = prompt;
  std::vector<float> logits2 = make_logits();
  EXPECT_EQ(sample_token(logits2, r, rctx).token, 2);  // 3/2 = 1.5 < 2
}

TEST(SamplerTest, TopLogprobsAreSortedAndNormalised) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logprobs = 3;
  std::vector<float> logits = make_logits();
  SampledToken t = sample_token(logits, p, {});
  ASSERT_EQ(t.top_logprobs.size(), 3u);
  EXPECT_EQ(t.top_logprobs[0].first, 1);
  EXPECT_EQ(t.top_logprobs[1].first, 3);
  EXPECT_EQ(t.top_logprobs[2].first, 2);
  EXPECT_NEAR(t.top_logprobs[0].second, t.logprob, 1e-6);
}

TEST(SamplingParamsTest, RejectsOutOfRangeValues) {
  SamplingParams p;
  EXPECT_TRUE(p.validate().ok());
  p.max_tokens = 0;
  EXPECT_FALSE(p.validate().ok());
  p = SamplingParams();
  p.use_beam_search = true;
  p.beam_width = 513;
  EXPECT_NE(p.validate().message().find("beam_width"), std::string::npos);
  p = SamplingParams();
  p.top_p = 0.0f;
  EXPECT_FALSE(p.validate().ok());
}

}  // namespace
}  // namespace earnserve
