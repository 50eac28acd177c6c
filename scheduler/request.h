// What a client submits to the engine (EngineRequest) and what comes back (RequestOutput), plus
// RequestStream, the thread-safe channel that carries one request's outputs from the engine
// thread to whoever waits for them (an HTTP handler, the batch runner, a test).
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "scheduler/sampling_params.h"

namespace earnserve {

class Catalogue;

using Clock = std::chrono::steady_clock;

// What a catalogue-constrained beam search's scores are log-probabilities over.
enum class ScoreOver {
  // The model's whole vocabulary, the constraint applied on top (transformers-equal scores).
  kVocabulary,
  // Each step's tokens the item trie allows the beam, renormalised: an item's score is its
  // log-probability among the catalogue's items, and the step computes logits only for the
  // tokens some live beam may take (the rows of lm_head for them).
  kCatalogue,
};
const char* score_over_name(ScoreOver s);  // "vocabulary", "catalogue"
// "vocabulary" or "catalogue"; nullopt for anything else.
std::optional<ScoreOver> parse_score_over(const std::string& name);

struct EngineRequest {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;
  SamplingParams params;
  // When set, every generated sequence is a catalogue identifier followed by end-of-sequence.
  std::shared_ptr<const Catalogue> catalogue;
  // kCatalogue needs a catalogue and (non-speculative) beam search.
  ScoreOver score_over = ScoreOver::kVocabulary;
  std::vector<int64_t> exclude_items;  // catalogue item indices the request must not receive
  // Stream every step's new tokens (sampling only; beam search reports when done).
  bool stream = false;
};

enum class FinishReason { kNone, kStop, kLength, kAbort };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "abort", ""

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;  // best first
};

struct SequenceOutput {
  int index = 0;
  // With streaming: only what is new since the previous output; otherwise everything.
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<TokenLogprob> logprobs;  // parallel to token_ids when logprobs were asked for
  float cumulative_logprob = 0.0f;
  float score = 0.0f;  // beam search: cumulative_logprob / length^length_penalty
  FinishReason finish_reason = FinishReason::kNone;
  // The stop string or stop token that ended the sequence, if any.
  std::string stop_reason;
  std::optional<int32_t> stop_token;
  // Catalogue-constrained sequences: the item reached (index into the catalogue), or -1.
  int64_t item_index = -1;
};

struct RequestMetrics {
  Clock::time_point arrival;
  std::optional<Clock::time_point> first_token;
  std::optional<Clock::time_point> finished;
  int num_prompt_tokens = 0;
  int num_generated_tokens = 0;
  int num_cached_tokens = 0;  // prompt tokens served by the prefix cache
  int num_preemptions = 0;
  std::vector<int> peak_kv_blocks;  // per KV group: blocks the request held at most
};

// Speculative beam search of one request (SamplingParams::speculative).
struct SpeculativeStats {
  int num_rounds = 0;               // draft-then-verify rounds
  std::vector<int> accepted_steps;  // per round: beam steps whose choices the draft proposed
  int num_target_calls = 0;         // target forward passes that computed the request's tokens
  int num_draft_calls = 0;          // draft forward passes that computed the request's tokens
  // Policy auto: beam steps taken without a tree because the cost model predicted the plain step
  // faster, or because no tree fitted (token budget, tokens left, draft context).
  int num_plain_steps_cost = 0;
  int num_plain_steps_no_room = 0;
  // Per round: the tree drafted (N draft beams per level, levels drafted).
  std::vector<std::array<int, 2>> trees;
};

struct RequestOutput {
  std::string request_id;
  std::vector<int32_t> prompt_token_ids;
  std::vector<SequenceOutput> outputs;
  bool finished = false;
  Status error;  // set when the request failed inside the engine
  RequestMetrics metrics;
  std::optional<SpeculativeStats> speculative;  // set for speculative requests
};

// Single producer (the engine), single consumer. close() after the final output.
class RequestStream {
 public:
  void push(RequestOutput output);
  // Waits for the next output; nullopt once the stream is finished and drained, or on timeout.
  std::optional<RequestOutput> next(std::chrono::milliseconds timeout = std::chrono::hours(24));
  bool finished() const;

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;  // Guarded by mu_
  bool finished_ = false;            // Guarded by mu_
};

}  // namespace earnserve
