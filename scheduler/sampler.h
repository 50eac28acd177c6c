// Turning one row of logits into one token for one sequence: penalties, constraint to an allowed
// token set, temperature, top-k, top-p, min-p, then greedy or seeded sampling; plus log-probs.
// Randomness is counter-based: the draw for a sequence's i-th token depends only on its seed and i,
// never on the batch it ran in or on a preemption. Stateless functions; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "scheduler/sampling_params.h"

namespace earnserve {

struct SamplingContext {
  std::span<const int32_t> prompt_tokens;
  std::span<const int32_t> output_tokens;
  uint64_t seed = 0;  // the sequence's seed (request seed mixed with the sequence index)
  // Tokens that may be chosen (ascending ids), e.g. from the catalogue trie; empty = any token.
  std::span<const int32_t> allowed_tokens;
  bool constrained = false;  // true: only allowed_tokens (which may not be empty)
  // Tokens that must not be chosen yet (stop tokens while output is shorter than min_tokens).
  std::span<const int32_t> banned_tokens;
};

struct SampledToken {
  int32_t token = -1;
  float logprob = 0.0f;  // log-probability under the model's raw distribution
  std::vector<std::pair<int32_t, float>> top_logprobs;  // best first, when params.logprobs > 0
};

// REQUIRES: logits.size() is the vocabulary size. `logits` is used as scratch and changed.
SampledToken sample_token(std::span<float> logits, const SamplingParams& params,
                          const SamplingContext& ctx);

// log(sum(exp(x))) over a row, stable.
float log_sum_exp(std::span<const float> x);

// The n largest entries of x as (index, value), best first, ties by smaller index.
std::vector<std::pair<int32_t, float>> top_n(std::span<const float> x, int n);

// Uniform in [0, 1) from (seed, counter): splitmix64-style mixing, deterministic everywhere.
double counter_uniform(uint64_t seed, uint64_t counter);
// Mixes a request seed with a sequence index into a per-sequence seed.
uint64_t mix_seed(uint64_t seed, uint64_t index);

}  // namespace earnserve
