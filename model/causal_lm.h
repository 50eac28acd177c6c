// CausalLM: the interface every decoder-only model family implements (model/llama.h for
// Llama and Qwen2). A model owns its weights; the KV cache pages are owned elsewhere and passed in
// per step. Implementations are immutable after loading: forward() may run concurrently on
// different batches with disjoint KV pages (each call allocates its own scratch).
#pragma once

#include "core/status.h"
#include "core/tensor.h"
#include "model/config.h"
#include "model/forward_batch.h"

namespace earnserve {

class CausalLM {
 public:
  virtual ~CausalLM() = default;

  virtual const ModelConfig& config() const = 0;
  // Where the weights live; batch tensors, KV pages and logits must be there too.
  virtual Device device() const = 0;
  // KV heads this rank stores per layer: num_key_value_heads, or its tensor-parallel share
  // (model/tensor_parallel.h). Size the KV cache with it; block ids are the same on every rank.
  virtual int64_t num_local_kv_heads() const { return config().num_key_value_heads; }

  // One model step over `batch`: writes the step's keys and values into `kv` (per layer, at each
  // group's slot_mapping) and the logits of the rows batch.logits_indices selects.
  //   kv.key[l], kv.value[l]: [num_blocks, block_size, num_local_kv_heads(), head_dim] f32
  //     (block_size per layer: each KV group's own)
  //   logits: [num_logits, vocab_size] f32, allocated by the caller (the full vocabulary, also
  //   under tensor parallelism), or [num_logits, batch.logits_token_ids.numel()] when the batch
  //   names its logit tokens (a single rank only)
  // Errors: a batch inconsistent with the model (layer count, vocabulary, devices).
  virtual Status forward(const ForwardBatch& batch, const KvCacheRefs& kv, Tensor& logits) = 0;
};

}  // namespace earnserve
