// SamplingParams: how one request turns logits into tokens (OpenAI / vLLM semantics), and
// validate() which rejects values no request may carry. Plain data; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve {

// Speculative beam search (AtSpeed, arXiv 2410.05165): a small draft model runs beam search with
// num_draft_beams beams for num_speculative_steps steps from the live beams, and the target model
// scores the whole drafted tree in one forward pass. Strict verification keeps exactly the
// target's own beam search.
struct SpeculativeParams {
  enum class Verification { kStrict, kRelaxed };
  // kAlways drafts a tree of N x gamma every round; kAuto lets the engine's cost model decide
  // each step whether a tree pays and which one, N from K up to num_draft_beams and gamma up to
  // num_speculative_steps (scheduler/speculative/speculation_policy.h). The command line's
  // default is auto (--speculative-policy); a C++ caller that sets the params gets always.
  enum class Policy { kAuto, kAlways };
  // The engine's draft model (its directory or the directory's name); empty = the loaded one.
  std::string draft_model;
  int num_draft_beams = 40;       // N, at least the beam width
  int num_speculative_steps = 3;  // gamma, tree depth per round, in [1, kMaxSpeculativeSteps]
  Verification verification = Verification::kStrict;
  Policy policy = Policy::kAlways;
};

inline constexpr int kMaxSpeculativeSteps = 8;

struct SamplingParams {
  // Number of sequences returned. With beam search: the best n of beam_width beams.
  int n = 1;
  // 0 means greedy (argmax).
  float temperature = 1.0f;
  float top_p = 1.0f;
  int top_k = 0;  // 0 or -1: off
  float min_p = 0.0f;
  std::optional<uint64_t> seed;
  int max_tokens = 16;
  int min_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  // Top-N log-probabilities per generated token (0 = only the chosen token's; -1 = none).
  int logprobs = -1;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;

  // Beam search (vLLM's extension): beam_width beams, the best n returned.
  bool use_beam_search = false;
  int beam_width = 1;
  float length_penalty = 1.0f;
  // Stop a beam search once beam_width hypotheses are finished (transformers early_stopping=True);
  // false uses transformers' default heuristic.
  bool early_stopping = false;
  // Speculative beam search; requires use_beam_search.
  std::optional<SpeculativeParams> speculative;

  bool greedy() const { return temperature == 0.0f; }
  // Checks ranges; the message names the offending field.
  Status validate() const;
};

inline constexpr int kMaxBeamWidth = 512;
inline constexpr int kMaxN = 512;

}  // namespace earnserve
