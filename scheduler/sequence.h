// Sequence and SequenceGroup: the engine's state for one request. A group starts with one
// sequence holding the prompt; once the prompt is computed it becomes the n sampled sequences or
// the live beams of a beam search, which share the prompt's KV pages through the block manager
// (fork: ref counts, no copies). A sequence's tokens live here only: the block manager keeps
// block tables and reads the tokens when it needs them. Text, stop strings and what was streamed
// belong to the OutputProcessor (scheduler/output_processor.h). Owned by the Scheduler on the
// engine thread; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/beam_search.h"
#include "scheduler/recommendation/catalogue.h"
#include "scheduler/request.h"

namespace earnserve {

struct Sequence {
  int64_t kv_id = -1;           // the block manager's id while the sequence holds KV pages, else -1
  int index = 0;                // output index among the request's n
  std::vector<int32_t> tokens;  // prompt followed by generated tokens
  // Per token: 1 if it keeps KV in marked layer groups (EARN: registers and generated tokens;
  // every token of a plain model). Parallel to tokens.
  std::vector<uint8_t> kept;
  int num_prompt_tokens = 0;
  int num_computed_tokens = 0;  // leading tokens whose KV is in the cache
  uint64_t seed = 0;
  float cumulative_logprob = 0.0f;
  float beam_score = 0.0f;  // finished beam hypotheses: the length-penalised score
  std::vector<TokenLogprob> logprobs;
  int32_t trie_node = Catalogue::kRoot;
  // A beam of a search that scores over the catalogue whose remaining tokens are all forced
  // (CatalogueConstraint::forced_to_end): it takes them with log-probability 0 and no forward, so
  // the scheduler leaves it out of steps and it computes no more KV (EngineOptions::
  // skip_forced_tokens).
  bool forced_to_end = false;
  FinishReason finish_reason = FinishReason::kNone;

  int num_generated() const { return static_cast<int>(tokens.size()) - num_prompt_tokens; }
  int num_uncomputed() const { return static_cast<int>(tokens.size()) - num_computed_tokens; }
  bool finished() const { return finish_reason != FinishReason::kNone; }
  void append(int32_t token) {
    tokens.push_back(token);
    kept.push_back(1);
  }
  void truncate(size_t n) {
    tokens.resize(n);
    kept.resize(n);
  }
};

// A speculative beam search's draft side: the draft model's copy of each live beam (the draft's
// own prompt wrapping followed by the beam's generated tokens, KV in the draft's block manager),
// parallel to SequenceGroup::seqs while drafting is active; empty when the draft holds nothing
// for the request (before its prefill, or after it ran out of draft pages).
struct SpeculativeState {
  std::vector<std::unique_ptr<Sequence>> draft_beams;
  SpeculativeStats stats;
  // Relaxed verification's randomness, from the request's seed: the draft's draws use
  // counter_uniform(seed, draft_counter++), acceptance and residual draws
  // counter_uniform(mix_seed(seed, 2), verify_counter++).
  uint64_t seed = 0;
  uint64_t draft_counter = 0;
  uint64_t verify_counter = 0;
};

enum class GroupStatus { kWaiting, kRunning, kFinished, kAborted };

struct SequenceGroup {
  EngineRequest request;
  std::shared_ptr<RequestStream> stream;
  GroupStatus status = GroupStatus::kWaiting;
  int64_t arrival_order = 0;
  // Live sequences (sampling) or live beams (beam search).
  std::vector<std::unique_ptr<Sequence>> seqs;
  // Sampled sequences that ended, kept for the final output.
  std::vector<std::unique_ptr<Sequence>> done_seqs;
  // Set once the prompt is computed and the group has fanned out into n sequences / beams.
  bool fanned_out = false;
  std::unique_ptr<BeamSearch> beam;
  std::unique_ptr<CatalogueConstraint> constraint;  // set for catalogue-constrained requests
  RequestMetrics metrics;
  std::unique_ptr<SpeculativeState> spec;  // set for speculative requests

  bool is_beam() const { return request.params.use_beam_search; }
  // Sequences this group may occupy once running (reserved against max_num_seqs at admission).
  int max_seqs() const { return is_beam() ? request.params.beam_width : request.params.n; }
};

}  // namespace earnserve
