// LlamaModel: the decoder of Hugging Face LlamaForCausalLM and Qwen2ForCausalLM (the same network;
// Qwen2 always has q/k/v biases, Llama has q/k/v/o biases when attention_bias is set). Weights are
// loaded once, checked against the config, and immutable afterwards; gate_proj and up_proj are
// stacked into one matrix so the MLP input projection is one linear call. forward() allocates its
// scratch once per call, so concurrent calls on disjoint KV pages are safe, except under tensor
// parallelism.
//
// Tensor parallelism (LoadOptions::tensor_parallel, split described in model/tensor_parallel.h):
// each rank loads only its slice of the weights, keeps num_local_kv_heads() KV heads per layer,
// and all-reduces after o_proj and down_proj (and after a vocab-parallel embedding) through the
// borrowed communicator. Then forward() is a collective: every rank calls it with the same batch,
// one call at a time, in the same order; every rank gets the full logits. Layer groups (EARN)
// work unchanged, since every rank narrows the same rows.
#pragma once

#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "model/causal_lm.h"
#include "model/tensor_parallel.h"
#include "model/weights.h"

namespace earnserve {

class LlamaModel final : public CausalLM {
 public:
  // Builds the model from `weights` (tensor names as transformers writes them). Errors name the
  // missing or mis-shaped tensor.
  static StatusOr<std::unique_ptr<CausalLM>> create(const ModelConfig& config,
                                                    const Weights& weights);

  const ModelConfig& config() const override { return config_; }
  Device device() const override { return device_; }
  int64_t num_local_kv_heads() const override { return shard_.num_local_kv_heads; }
  Status forward(const ForwardBatch& batch, const KvCacheRefs& kv, Tensor& logits) override;

 private:
  // Shapes per rank: heads, KV heads and intermediate are the rank's local counts (all of them
  // without tensor parallelism).
  struct Layer {
    Tensor input_norm;         // [hidden] f32
    ops::LinearWeight q_proj;  // [num_heads * head_dim, hidden]
    ops::LinearWeight k_proj;  // [num_kv_heads * head_dim, hidden]
    ops::LinearWeight v_proj;  // [num_kv_heads * head_dim, hidden]
    Tensor q_bias;             // [num_heads * head_dim] f32, or undefined
    Tensor k_bias;             // [num_kv_heads * head_dim] f32, or undefined
    Tensor v_bias;             // [num_kv_heads * head_dim] f32, or undefined
    ops::LinearWeight o_proj;  // [hidden, num_heads * head_dim]
    Tensor o_bias;             // [hidden] f32, or undefined (and on tensor-parallel rank 0 only)
    Tensor post_norm;          // [hidden] f32
    ops::LinearWeight gate_up_proj;  // [2 * intermediate, hidden]: gate rows, then up rows
    ops::LinearWeight down_proj;     // [hidden, intermediate]
  };

  LlamaModel(const ModelConfig& config, Device device, const TensorParallel& tp,
             const TensorParallelShard& shard)
      : config_(config), device_(device), tp_(tp), shard_(shard) {}
  Status load_embeddings(const Weights& weights);
  // True when the loader packs CPU f32/bf16 matrices into panels (ops::pack_linear).
  static bool pack_weights(const Weights& weights);
  Status check_batch(const ForwardBatch& batch, const KvCacheRefs& kv, const Tensor& logits) const;
  // The first rows of the step, the embeddings of token_ids (ids already checked).
  //   residual: [num_tokens, hidden] f32
  Status embed(const Tensor& token_ids, Tensor& residual);
  // Sums a row-parallel layer's partial outputs over the ranks (nothing without parallelism).
  Status all_reduce(Tensor& t);
  // logits from the selected final hidden states; `scratch` is f32 arena space of at least
  // logits_scratch_size(num_logits) elements.
  //   selected: [num_logits, hidden] f32, logits: [num_logits, vocab] f32, or with `token_ids`
  //   (defined: [num_logit_tokens] i32) [num_logits, num_logit_tokens], those rows of lm_head
  //   gathered first
  Status compute_logits(const Tensor& selected, const Tensor& token_ids, Tensor& scratch,
                        Tensor& logits);
  int64_t logits_scratch_size(int64_t num_logits) const;
  bool vocab_parallel() const { return tp_.vocab_parallel_embeddings && tp_.size > 1; }

  // Constant after construction
  ModelConfig config_;
  Device device_;
  TensorParallel tp_;
  TensorParallelShard shard_;
  // [vocab, hidden]; vocab-parallel: [local_vocab + 1, hidden], this rank's rows and then a zero
  // row that every other rank's id looks up.
  Tensor embed_tokens_;
  Tensor final_norm_;  // [hidden] f32
  // [local_vocab, hidden]; (a view of) embed_tokens_ when tied, but its own int8 copy under kI8
  ops::LinearWeight lm_head_;
  // Tied and packed into panels: embed_tokens_ holds the panels and lookups go through lm_head_.
  bool embed_in_panels_ = false;
  Tensor inv_freq_;  // [head_dim / 2] f32
  std::vector<Layer> layers_;
};

}  // namespace earnserve
