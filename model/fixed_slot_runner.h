// FixedSlotRunner: drives a CausalLM for a few sequences without a scheduler or block manager,
// for model tests and bench/model_bench (the serving engine in scheduler/ builds its own
// batches instead). It owns KV pages for max_seqs sequences of up to max_tokens_per_seq tokens
// each; sequence s owns the fixed slot of blocks [s * blocks_per_seq, (s + 1) * blocks_per_seq),
// so block tables are trivial but attention still goes through the paged path. The model is
// borrowed and must outlive the runner. Not thread-safe: one caller at a time.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "model/causal_lm.h"

namespace earnserve {

class FixedSlotRunner {
 public:
  // One sequence's tokens for a step: appended after what the sequence already holds.
  struct SeqChunk {
    int seq = 0;
    std::span<const int32_t> tokens;
  };

  // Allocates the KV pages on the model's device; aborts if that memory is not available.
  FixedSlotRunner(CausalLM& model, int max_seqs, int max_tokens_per_seq, int block_size = 16);
  FixedSlotRunner(const FixedSlotRunner&) = delete;
  FixedSlotRunner& operator=(const FixedSlotRunner&) = delete;

  // Runs `tokens` (appended to sequence `seq`) in one step; returns the last position's logits
  // [vocab]. Errors: bad sequence id, empty chunk, or the sequence would exceed its capacity.
  StatusOr<std::vector<float>> prefill(int seq, std::span<const int32_t> tokens);
  // One token for sequence `seq`; returns its logits [vocab].
  StatusOr<std::vector<float>> decode(int seq, int32_t token);
  // Runs `tokens` in one step and returns the logits of every one of them: [tokens.size(), vocab].
  StatusOr<Tensor> prefill_all_logits(int seq, std::span<const int32_t> tokens);
  // Runs `tokens` one decode step each; returns each step's logits.
  StatusOr<std::vector<std::vector<float>>> run_token_by_token(int seq,
                                                               std::span<const int32_t> tokens);
  // Several sequences in one batched step; returns the last position's logits of each chunk.
  StatusOr<std::vector<std::vector<float>>> step(std::span<const SeqChunk> chunks);
  // Prefills `prompt` and then picks the argmax token max_new_tokens times (stopping after any id
  // in stop_ids). Returns the new tokens.
  StatusOr<std::vector<int32_t>> generate_greedy(int seq, std::span<const int32_t> prompt,
                                                 int max_new_tokens,
                                                 std::span<const int32_t> stop_ids = {});

  // Forgets sequence `seq` (its pages are reused by the next tokens).
  void reset(int seq);
  int seq_len(int seq) const { return seq_lens_.at(static_cast<size_t>(seq)); }
  int max_seqs() const { return max_seqs_; }
  int max_tokens_per_seq() const { return max_tokens_per_seq_; }

 private:
  // Runs one step; `all_logits` selects every token's row instead of the last of each chunk.
  StatusOr<Tensor> run(std::span<const SeqChunk> chunks, bool all_logits);

  CausalLM& model_;
  // Constant after construction
  int max_seqs_;
  int max_tokens_per_seq_;
  int block_size_;
  int blocks_per_seq_;
  KvCacheRefs kv_;
  // Tokens held by each sequence.
  std::vector<int> seq_lens_;
};

}  // namespace earnserve
