// TokenSelector: turns each step's logits into the requests' next tokens. A sampling request's
// prompt row fans out into its n sequences, each drawing its own token (scheduler/sampler.h); a
// beam search steps all its live beams at once and regroups them; a speculative beam search hands
// its rows to SpeculativeRounds. The catalogue constraint applies on top of the model's
// distribution, or, for requests that score over the catalogue (ScoreOver::kCatalogue), the
// distribution is renormalised over the tokens the trie allows, and a step whose every row is
// such a request's needs logits only for the union of those tokens (logits_tokens()). Sampled
// tokens go to the OutputProcessor, which decides when a sequence stops; finished requests get
// their final output and leave the scheduler. A beam scoring over the catalogue whose remaining
// tokens are all forced (one allowed token at each step to the end of its item: LC-Rec's fourth
// code is unique below 94% of Beauty's three-code prefixes, and the end-of-item token always
// follows) takes them with log-probability 0 and no forward (Sequence::forced_to_end): the
// scheduler leaves it out of steps, and once every live beam is forced the search runs to its end
// without one. The same scores as computing those rows (where a row's log-probability over one
// token is 0 exactly).
//
// Borrows the scheduler, the output processor and (may be null) the speculative rounds from the
// engine. Engine thread only; not thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"
#include "scheduler/beam_search.h"
#include "scheduler/output_processor.h"
#include "scheduler/scheduler.h"
#include "scheduler/speculative/speculative_round.h"

namespace earnserve {

class TokenSelector {
 public:
  // `speculative`: null when the engine has no draft model. `eos_token_ids`: the model's
  // end-of-sequence tokens (the first one ends a catalogue item). `skip_forced_tokens`:
  // EngineOptions::skip_forced_tokens.
  TokenSelector(Scheduler& scheduler, OutputProcessor& output, SpeculativeRounds* speculative,
                std::vector<int32_t> eos_token_ids, int max_model_len, int64_t vocab_size,
                bool skip_forced_tokens);
  TokenSelector(const TokenSelector&) = delete;
  TokenSelector& operator=(const TokenSelector&) = delete;

  // The tokens whose logits `step` needs, ascending: when every row that needs logits belongs to
  // a beam search scoring over the catalogue, the union of the tokens the trie allows its live
  // beams; otherwise empty (the whole vocabulary).
  std::vector<int32_t> logits_tokens(const SchedulerStep& step) const;

  // Samples or steps every request that got logits in `step`, then finishes the requests that
  // ended. `logits`: F32 on the host, [rows, vocab] (or [rows, logits_tokens.size()] with the
  // columns of logits_tokens(step)), one row per chunk that needs logits in step order, each
  // followed by its drafted tree's rows.
  void process(const SchedulerStep& step, const Tensor& logits,
               std::span<const int32_t> logits_tokens = {});

  // Generated tokens since construction.
  int64_t num_generation_tokens() const { return num_generation_tokens_; }
  // Beam tokens taken without a forward (forced to the end of an item) since construction.
  int64_t num_forced_tokens() const { return num_forced_tokens_; }

 private:
  // Turns the computed prompt into the request's n sequences (forks sharing its pages).
  void fan_out(SequenceGroup& group);
  void process_sampling(SequenceGroup& group,
                        std::vector<std::pair<Sequence*, std::span<float>>>& rows);
  void sample(SequenceGroup& group, Sequence& seq, std::span<float> row);
  // `rows`: the live beams' rows in the group's order, but none for beams forced to their end.
  // `logits_tokens`: the rows' columns (empty = the vocabulary).
  void process_beams(SequenceGroup& group,
                     std::vector<std::pair<Sequence*, std::span<float>>>& rows,
                     std::span<const int32_t> logits_tokens);
  bool scores_over_catalogue(const SequenceGroup& group) const;
  // ScoreOver::kCatalogue: a beam's allowed tokens and their log-probabilities among them, from
  // its row (empty when a single token is allowed: it gets 0).
  void score_over_catalogue(const SequenceGroup& group, const Sequence& seq, std::span<float> row,
                            std::span<const int32_t> logits_tokens, std::vector<int32_t>& allowed,
                            std::vector<float>& logprobs, BeamStepInput& input) const;
  // One beam step: the search's choices become the new live beams (forks, frees), each advanced
  // in the trie and marked when forced to its end.
  void step_beams(SequenceGroup& group, std::span<const BeamStepInput> inputs);
  // Frees the request's pages and pushes its final output.
  void finish_group(SequenceGroup& group);

  // Constant after construction.
  Scheduler& scheduler_;
  OutputProcessor& output_;
  SpeculativeRounds* speculative_;
  std::vector<int32_t> eos_token_ids_;
  int max_model_len_;
  int64_t vocab_size_;
  bool skip_forced_tokens_;

  std::vector<SequenceGroup*> finished_this_step_;
  int64_t num_generation_tokens_ = 0;
  int64_t num_forced_tokens_ = 0;
};

}  // namespace earnserve
