// BeamSearch: the decision logic of one request's beam search, apart from the model and the KV
// pages. Each step takes every live beam's next-token log-probabilities (optionally restricted to
// allowed tokens, e.g. by the catalogue trie) and returns which (parent beam, token) pairs live on;
// the engine then forks and frees KV pages to match. Finished hypotheses are kept with
// transformers' semantics (num_beams = width, 2 * width candidates per step, length penalty on
// generated length, the same early-stop heuristic), so results equal transformers' beam search.
// Not thread-safe; owned by its request on the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace earnserve {

struct BeamHypothesis {
  std::vector<int32_t> tokens;  // generated tokens, the final stop token included
  float score = 0.0f;           // cumulative log-probability / generated_length^length_penalty
  float cumulative_logprob = 0.0f;
};

// One live beam's view of a step: log-probabilities over the vocabulary (already normalised),
// and the tokens it may take (ascending ids); `constrained` false = any token. With
// `allowed_logprobs` (constrained only) the log-probability of allowed_tokens[i] is
// allowed_logprobs[i] and `logprobs` is not read: the caller scored only the allowed tokens.
struct BeamStepInput {
  std::span<const float> logprobs;
  std::span<const int32_t> allowed_tokens;
  bool constrained = false;
  std::span<const float> allowed_logprobs;  // empty, or parallel to allowed_tokens
};

struct BeamChoice {
  int parent = 0;  // index of the live beam it extends (in the order given to step())
  int32_t token = 0;
  float score = 0.0f;  // cumulative log-probability after the token
};

struct BeamSearchOptions {
  int width = 1;
  float length_penalty = 1.0f;
  bool early_stopping = false;
  int max_tokens = 16;               // generated tokens at most, stop token included
  std::vector<int32_t> stop_tokens;  // end a hypothesis (EOS and stop_token_ids)
};

class BeamSearch {
 public:
  explicit BeamSearch(BeamSearchOptions options);

  // Number of live beams the next step expects (1 before the first step).
  int num_live() const { return static_cast<int>(live_tokens_.size()); }
  const std::vector<int32_t>& live_tokens(int beam) const { return live_tokens_[beam]; }
  float live_score(int beam) const { return live_scores_[beam]; }
  bool done() const { return done_; }
  const BeamSearchOptions& options() const { return options_; }

  // Advances one step. REQUIRES: !done(), inputs.size() == num_live(). Returns the beams that live
  // on (each names its parent among the current live beams), best first; empty when done.
  std::vector<BeamChoice> step(std::span<const BeamStepInput> inputs);

  // Advances one step with candidates the caller chose (relaxed speculative verification samples
  // them instead of taking the top ones): each choice names a live beam, a token and the
  // cumulative log-probability after it. A stop token, or any token at max_tokens, makes a
  // finished hypothesis; the others become the live beams, in the given order. Done when no live
  // beam remains or width hypotheses are finished. Returns the live choices; empty when done.
  // REQUIRES: !done(), every parent < num_live().
  std::vector<BeamChoice> apply(std::span<const BeamChoice> chosen);

  // Finished hypotheses, best first (at most width).
  const std::vector<BeamHypothesis>& finished() const { return finished_; }

 private:
  bool is_stop(int32_t token) const;

  BeamSearchOptions options_;
  std::vector<std::vector<int32_t>> live_tokens_;
  std::vector<float> live_scores_;
  std::vector<BeamHypothesis> finished_;
  int num_generated_ = 0;
  bool done_ = false;
};

}  // namespace earnserve
