// OutputProcessor: the output side of the engine. After a sequence takes a sampled token it turns
// the token into text (incremental detokenisation) and applies the request's stop conditions
// (end-of-sequence and stop token ids, the catalogue's end of item, stop strings, max_tokens, the
// context length); it pushes RequestOutputs to the request's stream: deltas while streaming, the
// final output when the request ends (a beam search's best hypotheses become its outputs then),
// and the error output of an aborted or failed request.
//
// Ownership: each sequence's text state (detokenizer, text, stop reason, what was already sent)
// lives here, keyed by the sequence, from its first token until its request's final output. The
// sequences themselves belong to the Scheduler. Engine thread only; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "model/tokenizer/incremental_detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/sequence.h"

namespace earnserve {

class OutputProcessor {
 public:
  // `eos_token_ids`: the model's end-of-sequence tokens; `max_model_len`: the context length.
  OutputProcessor(const Tokenizer& tokenizer, std::vector<int32_t> eos_token_ids,
                  int max_model_len);
  OutputProcessor(const OutputProcessor&) = delete;
  OutputProcessor& operator=(const OutputProcessor&) = delete;

  // `seq` of a sampling request just took a sampled token (its last). Adds the token's text and
  // finishes the sequence (seq.finish_reason) when a stop condition holds.
  void process_token(const SequenceGroup& group, Sequence& seq);

  // Pushes the group's outputs: with streaming only what is new since the last push.
  void emit(SequenceGroup& group, bool final);

  // Pushes the request's final output. A beam search's n best finished hypotheses become its
  // done sequences first. REQUIRES: group.seqs is empty (finished or freed by the caller).
  void finish_group(SequenceGroup& group);

  // Pushes the final output of an aborted request (every live sequence ends with kAbort).
  void abort(SequenceGroup& group);
  // Pushes the final output of a request the engine could not finish.
  void fail(SequenceGroup& group, const Status& error);
  // Ends a request that never reached the scheduler.
  static void reject(RequestStream& stream, const std::string& request_id, const Status& error);

 private:
  // Per sequence: its text and what of it the stream already carried.
  struct SequenceText {
    std::unique_ptr<IncrementalDetokenizer> detokenizer;  // from its first sampled token
    std::string text;
    std::string stop_reason;  // the stop string or stop token that ended it
    std::optional<int32_t> stop_token;
    int64_t item_index = -1;  // catalogue-constrained: the item reached
    size_t num_tokens_sent = 0;
    size_t num_text_sent = 0;
    size_t num_logprobs_sent = 0;
  };

  void finish_sequence(Sequence& seq, SequenceText& text, FinishReason reason);
  // Whether the newest text completes one of the request's stop strings (then cut there).
  bool stop_string_found(const SamplingParams& params, SequenceText& text) const;
  // Turns a finished beam search's best hypotheses into done sequences.
  void add_hypotheses(SequenceGroup& group);
  // Drops the text state of the group's sequences (its final output is out).
  void release(const SequenceGroup& group);
  bool is_eos(int32_t token) const;

  // Constant after construction.
  const Tokenizer& tokenizer_;
  std::vector<int32_t> eos_token_ids_;
  int max_model_len_;

  std::unordered_map<const Sequence*, SequenceText> texts_;
};

}  // namespace earnserve
