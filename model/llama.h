// LlamaModel: the decoder of Hugging Face LlamaForCausalLM and Qwen2ForCausalLM (the same network;
// Qwen2 always has q/k/v biases, Llama has q/k/v/o biases when attention_bias is set). Weights are
// loaded once, checked against the config, and immutable afterwards; gate_proj and up_proj are
// stacked into one matrix so the MLP input projection is one linear call. forward() allocates its
// scratch once per call, so concurrent calls on disjoint KV pages are safe.
#pragma once

#include <memory>
#include <vector>

#include "model/causal_lm.h"
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
  Status forward(const ForwardBatch& batch, const KvCacheRefs& kv, Tensor& logits) override;

 private:
  struct Layer {
    Tensor input_norm;    // [hidden] f32
    Tensor q_proj;        // [num_heads * head_dim, hidden]
    Tensor k_proj;        // [num_kv_heads * head_dim, hidden]
    Tensor v_proj;        // [num_kv_heads * head_dim, hidden]
    Tensor q_bias;        // [num_heads * head_dim] f32, or undefined
    Tensor k_bias;        // [num_kv_heads * head_dim] f32, or undefined
    Tensor v_bias;        // [num_kv_heads * head_dim] f32, or undefined
    Tensor o_proj;        // [hidden, num_heads * head_dim]
    Tensor o_bias;        // [hidden] f32, or undefined
    Tensor post_norm;     // [hidden] f32
    Tensor gate_up_proj;  // [2 * intermediate, hidden]: gate rows, then up rows
    Tensor down_proj;     // [hidden, intermediate]
  };

  LlamaModel(const ModelConfig& config, Device device) : config_(config), device_(device) {}
  Status check_batch(const ForwardBatch& batch, const KvCacheRefs& kv, const Tensor& logits) const;

  // Constant after construction
  ModelConfig config_;
  Device device_;
  Tensor embed_tokens_;  // [vocab, hidden]
  Tensor final_norm_;    // [hidden] f32
  Tensor lm_head_;       // [vocab, hidden]; embed_tokens_ itself when tied
  Tensor inv_freq_;      // [head_dim / 2] f32
  std::vector<Layer> layers_;
};

}  // namespace earnserve
