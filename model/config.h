// ModelConfig: the architecture hyper-parameters of a Hugging Face Llama/Qwen2 checkpoint, read
// from its config.json. Both the transformers 4 layout (rope_theta, rope_scaling, torch_dtype) and
// the transformers 5 layout (rope_parameters, dtype) are understood. The raw JSON is kept so that
// later features (an "earn" object) can read their own fields. Plain value type; thread-compatible.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve {

enum class RopeType { kDefault, kLlama3 };

// RoPE frequency parameters (see model/rope.h for how inv_freq follows from them).
struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  // kLlama3 only.
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

// EARN (arXiv 2507.00715): learned register tokens at both ends of the prompt. Layers below
// split_layer see every token; layers from split_layer up see only register and generated tokens
// (prompt tokens are neither computed nor cached there). config.json:
//   "earn": {"split_layer": k, "prefix_register_ids": [...], "suffix_register_ids": [...]}
// The engine wraps each prompt as [BOS] [prefix registers] prompt [suffix registers].
struct EarnConfig {
  int64_t split_layer = 0;
  std::vector<int32_t> prefix_register_ids;
  std::vector<int32_t> suffix_register_ids;
};

struct ModelConfig {
  std::string architecture;  // architectures[0], e.g. "LlamaForCausalLM"
  std::string model_type;    // "llama", "qwen2", ... (empty when absent)
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  // Bias on q/k/v projections (Qwen2 always; Llama with attention_bias) and on o_proj (Llama
  // with attention_bias only).
  bool qkv_bias = false;
  bool o_proj_bias = false;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = -1;           // -1 when absent or null
  std::vector<int64_t> eos_token_ids;  // eos_token_id may be one id or a list
  std::string torch_dtype;             // "float32", "bfloat16", ... (empty when absent)
  std::optional<EarnConfig> earn;      // present for EARN checkpoints
  nlohmann::json raw;                  // the whole config.json
};

// Parses a config.json document. `source` (the file's path) prefixes every error, which names the
// offending field: "<source>: field 'hidden_size': expected an integer".
StatusOr<ModelConfig> parse_model_config(const nlohmann::json& json, const std::string& source);

// Reads and parses <model_dir>/config.json.
StatusOr<ModelConfig> load_model_config(const std::string& model_dir);

}  // namespace earnserve
