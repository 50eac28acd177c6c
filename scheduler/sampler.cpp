#include "scheduler/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "core/logging.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct Candidate {
  int32_t token;
  float logit;
};

// Best first; ties by smaller token id, so results never depend on the order of evaluation.
bool better(const Candidate& a, const Candidate& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.token < b.token;
}

}  // namespace

double counter_uniform(uint64_t seed, uint64_t counter) {
  uint64_t bits = splitmix64(splitmix64(seed) ^ (counter * 0xd1b54a32d192ed03ull));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t mix_seed(uint64_t seed, uint64_t index) {
  return splitmix64(seed + 0x632be59bd9b4e019ull * (index + 1));
}

float log_sum_exp(std::span<const float> x) {
  if (x.empty()) return kNegInf;
  const int64_t n = static_cast<int64_t>(x.size());
  const float max_value = cpu::max_value(x.data(), n);
  if (max_value == kNegInf) return kNegInf;
  // The exponentials on the CPU's vector path (a whole vocabulary row per beam and step: at beam
  // 10 over 152k tokens, scalar double exps cost about 10 ms a step), summed in f32 over chunks
  // short enough that the f32 error stays near 1e-6 relative, the chunk sums in double.
  constexpr int64_t kChunk = 256;
  double sum = 0.0;
  for (int64_t i = 0; i < n; i += kChunk) {
    sum += cpu::exp_shifted(x.data() + i, max_value, nullptr, std::min(kChunk, n - i));
  }
  return max_value + static_cast<float>(std::log(sum));
}

std::vector<std::pair<int32_t, float>> top_n(std::span<const float> x, int n) {
  n = std::min<int>(n, static_cast<int>(x.size()));
  std::vector<Candidate> c;
  c.reserve(x.size());
  for (size_t i = 0; i < x.size(); ++i) c.push_back({static_cast<int32_t>(i), x[i]});
  std::partial_sort(c.begin(), c.begin() + n, c.end(), better);
  std::vector<std::pair<int32_t, float>> out;
  out.reserve(n);
  for (int i = 0; i < n; ++i) out.emplace_back(c[i].token, c[i].logit);
  return out;
}

namespace {

// Penalties (vLLM semantics): repetition over prompt and output; presence/frequency over
// output. Banned tokens become impossible.
void apply_penalties(const SamplingParams& params, const SamplingContext& ctx,
                     std::vector<Candidate>& cand) {
  if (params.repetition_penalty != 1.0f || params.presence_penalty != 0.0f ||
      params.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> output_counts;
    for (int32_t t : ctx.output_tokens) ++output_counts[t];
    std::unordered_map<int32_t, bool> seen;
    if (params.repetition_penalty != 1.0f) {
      for (int32_t t : ctx.prompt_tokens) seen[t] = true;
      for (int32_t t : ctx.output_tokens) seen[t] = true;
    }
    for (Candidate& c : cand) {
      if (params.repetition_penalty != 1.0f && seen.count(c.token)) {
        c.logit =
            c.logit > 0 ? c.logit / params.repetition_penalty : c.logit * params.repetition_penalty;
      }
      auto it = output_counts.find(c.token);
      if (it != output_counts.end()) {
        c.logit -= params.frequency_penalty * static_cast<float>(it->second);
        c.logit -= params.presence_penalty;
      }
    }
  }
  if (!ctx.banned_tokens.empty()) {
    for (Candidate& c : cand) {
      if (std::find(ctx.banned_tokens.begin(), ctx.banned_tokens.end(), c.token) !=
          ctx.banned_tokens.end()) {
        c.logit = kNegInf;
      }
    }
  }
}

}  // namespace

SampledToken sample_token(std::span<float> logits, const SamplingParams& params,
                          const SamplingContext& ctx) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  SampledToken result;

  // Log-probabilities are reported under the raw model distribution.
  const float lse = log_sum_exp(logits);
  if (params.logprobs > 0) {
    result.top_logprobs = top_n(logits, params.logprobs);
    for (auto& [token, value] : result.top_logprobs) value -= lse;
  }
  auto raw_logprob = [&](int32_t token) { return logits[token] - lse; };

  // Candidates: the allowed set, or the whole vocabulary.
  std::vector<Candidate> cand;
  if (ctx.constrained) {
    ES_CHECK(!ctx.allowed_tokens.empty()) << "constrained sampling with no allowed token";
    cand.reserve(ctx.allowed_tokens.size());
    for (int32_t t : ctx.allowed_tokens) {
      ES_CHECK(t >= 0 && t < vocab);
      cand.push_back({t, logits[t]});
    }
  } else {
    cand.resize(vocab);
    for (int32_t t = 0; t < vocab; ++t) cand[t] = {t, logits[t]};
  }

  apply_penalties(params, ctx, cand);

  if (params.greedy()) {
    const Candidate* best = &cand[0];
    for (const Candidate& c : cand) {
      if (better(c, *best)) best = &c;
    }
    result.token = best->token;
    result.logprob = raw_logprob(result.token);
    return result;
  }

  for (Candidate& c : cand) c.logit /= params.temperature;

  // top-k: keep the k best (sorted), else sort everything for top-p / the inverse CDF.
  size_t keep = cand.size();
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < cand.size()) {
    keep = static_cast<size_t>(params.top_k);
    std::partial_sort(cand.begin(), cand.begin() + keep, cand.end(), better);
    cand.resize(keep);
  } else {
    std::sort(cand.begin(), cand.end(), better);
  }
  // Drop impossible candidates (masked to -inf).
  while (!cand.empty() && cand.back().logit == kNegInf) cand.pop_back();
  ES_CHECK(!cand.empty()) << "every candidate token is masked";

  std::vector<double> probs(cand.size());
  const double max_logit = cand[0].logit;
  double total = 0.0;
  for (size_t i = 0; i < cand.size(); ++i) {
    probs[i] = std::exp(static_cast<double>(cand[i].logit) - max_logit);
    total += probs[i];
  }
  size_t kept = cand.size();
  if (params.top_p < 1.0f) {
    double cumulative = 0.0;
    for (size_t i = 0; i < cand.size(); ++i) {
      cumulative += probs[i] / total;
      if (cumulative >= params.top_p) {
        kept = i + 1;
        break;
      }
    }
  }
  if (params.min_p > 0.0f) {
    // probs[0] is the largest; keep tokens with p >= min_p * p_max.
    size_t i = 1;
    while (i < kept && probs[i] >= params.min_p * probs[0]) ++i;
    kept = i;
  }
  double kept_total = 0.0;
  for (size_t i = 0; i < kept; ++i) kept_total += probs[i];

  const double u = counter_uniform(ctx.seed, ctx.output_tokens.size()) * kept_total;
  double acc = 0.0;
  size_t chosen = kept - 1;
  for (size_t i = 0; i < kept; ++i) {
    acc += probs[i];
    if (u < acc) {
      chosen = i;
      break;
    }
  }
  result.token = cand[chosen].token;
  result.logprob = raw_logprob(result.token);
  return result;
}

}  // namespace earnserve
