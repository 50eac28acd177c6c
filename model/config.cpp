#include "model/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace earnserve {
namespace {

using Json = nlohmann::json;

// Reads optional fields of one JSON object; errors say "<source>: field '<prefix><key>': ...".
class FieldReader {
 public:
  FieldReader(const Json& object, std::string source, std::string prefix = "")
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {}

  // nullopt when absent or null.
  const Json* find(const std::string& key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  Status error(const std::string& key, const std::string& problem) const {
    return invalid_argument(source_ + ": field '" + prefix_ + key + "': " + problem);
  }

  StatusOr<std::optional<int64_t>> integer(const std::string& key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::optional<int64_t>();
    if (v->is_number_integer()) return std::optional<int64_t>(v->get<int64_t>());
    // Some configs write integers as 4096.0. A float outside int64_t's range is no integer (and
    // converting it would be undefined).
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (d >= -0x1p63 && d < 0x1p63 && d == static_cast<double>(static_cast<int64_t>(d))) {
        return std::optional<int64_t>(static_cast<int64_t>(d));
      }
    }
    return error(key, "expected an integer, got " + v->dump());
  }

  StatusOr<int64_t> required_positive(const std::string& key) const {
    ES_ASSIGN_OR_RETURN(std::optional<int64_t> v, integer(key));
    if (!v) return error(key, "missing");
    if (*v <= 0) return error(key, "must be positive, got " + std::to_string(*v));
    return *v;
  }

  StatusOr<std::optional<double>> number(const std::string& key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::optional<double>();
    if (!v->is_number()) return error(key, "expected a number, got " + v->dump());
    return std::optional<double>(v->get<double>());
  }

  StatusOr<std::optional<bool>> boolean(const std::string& key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_boolean()) return error(key, "expected true or false, got " + v->dump());
    return std::optional<bool>(v->get<bool>());
  }

  StatusOr<std::optional<std::string>> string(const std::string& key) const {
    const Json* v = find(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_string()) return error(key, "expected a string, got " + v->dump());
    return std::optional<std::string>(v->get<std::string>());
  }

 private:
  const Json& object_;
  std::string source_;
  std::string prefix_;
};

// rope_scaling (transformers 4) or rope_parameters (transformers 5): null, or an object whose
// rope_type (or legacy "type") is "default" or "llama3".
Status parse_rope(const FieldReader& top, const std::string& source, RopeConfig& rope) {
  ES_ASSIGN_OR_RETURN(std::optional<double> theta, top.number("rope_theta"));
  const char* key = top.find("rope_parameters") ? "rope_parameters" : "rope_scaling";
  const Json* params = top.find(key);
  if (params != nullptr && !params->is_object()) {
    return top.error(key, "expected an object or null, got " + params->dump());
  }
  if (params != nullptr) {
    FieldReader fields(*params, source, std::string(key) + ".");
    ES_ASSIGN_OR_RETURN(std::optional<double> inner_theta, fields.number("rope_theta"));
    if (inner_theta) theta = inner_theta;
    ES_ASSIGN_OR_RETURN(std::optional<std::string> type, fields.string("rope_type"));
    if (!type) {
      ES_ASSIGN_OR_RETURN(type, fields.string("type"));
    }
    std::string type_name = type.value_or("default");
    if (type_name == "llama3") {
      rope.type = RopeType::kLlama3;
      ES_ASSIGN_OR_RETURN(std::optional<double> factor, fields.number("factor"));
      ES_ASSIGN_OR_RETURN(std::optional<double> low, fields.number("low_freq_factor"));
      ES_ASSIGN_OR_RETURN(std::optional<double> high, fields.number("high_freq_factor"));
      ES_ASSIGN_OR_RETURN(std::optional<int64_t> original,
                          fields.integer("original_max_position_embeddings"));
      if (!factor) return fields.error("factor", "missing (required by rope_type llama3)");
      if (!low) return fields.error("low_freq_factor", "missing (required by rope_type llama3)");
      if (!high) return fields.error("high_freq_factor", "missing (required by rope_type llama3)");
      if (!original) {
        return fields.error("original_max_position_embeddings",
                            "missing (required by rope_type llama3)");
      }
      if (*factor <= 0) return fields.error("factor", "must be positive");
      if (*low <= 0) return fields.error("low_freq_factor", "must be positive");
      if (*high <= *low) {
        return fields.error("high_freq_factor", "must be larger than low_freq_factor");
      }
      if (*original <= 0)
        return fields.error("original_max_position_embeddings", "must be positive");
      rope.factor = *factor;
      rope.low_freq_factor = *low;
      rope.high_freq_factor = *high;
      rope.original_max_position_embeddings = *original;
    } else if (type_name != "default") {
      return fields.error("rope_type",
                          "unsupported rope type '" + type_name + "' (supported: default, llama3)");
    }
  }
  rope.theta = theta.value_or(10000.0);
  if (rope.theta <= 0) return top.error("rope_theta", "must be positive");
  return Status::Ok();
}

Status parse_earn(const Json& json, const std::string& source, ModelConfig& c) {
  auto it = json.find("earn");
  if (it == json.end() || it->is_null()) return Status::Ok();
  auto error = [&](const std::string& field, const std::string& what) {
    return invalid_argument(source + ": field 'earn." + field + "': " + what);
  };
  if (!it->is_object()) return invalid_argument(source + ": field 'earn': expected an object");
  EarnConfig earn;
  auto k = it->find("split_layer");
  if (k == it->end() || !k->is_number_integer()) return error("split_layer", "expected an integer");
  earn.split_layer = k->get<int64_t>();
  if (earn.split_layer < 1 || earn.split_layer >= c.num_hidden_layers) {
    return error("split_layer",
                 "must be in [1, num_hidden_layers - 1], got " + std::to_string(earn.split_layer));
  }
  for (const char* name : {"prefix_register_ids", "suffix_register_ids"}) {
    auto ids = it->find(name);
    if (ids == it->end() || !ids->is_array()) return error(name, "expected a list of token ids");
    std::vector<int32_t>& out = std::string(name) == "prefix_register_ids"
                                    ? earn.prefix_register_ids
                                    : earn.suffix_register_ids;
    for (const Json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= c.vocab_size) {
        return error(name, "expected token ids in [0, vocab_size), got " + id.dump());
      }
      out.push_back(id.get<int32_t>());
    }
  }
  if (earn.prefix_register_ids.empty() && earn.suffix_register_ids.empty()) {
    return error("prefix_register_ids", "an EARN model needs at least one register token");
  }
  // Registers are told apart by id (the engine marks a token as a register by looking its id
  // up), so an id used twice, within or across the two lists, would be ambiguous.
  std::vector<int32_t> all = earn.prefix_register_ids;
  all.insert(all.end(), earn.suffix_register_ids.begin(), earn.suffix_register_ids.end());
  std::sort(all.begin(), all.end());
  if (auto dup = std::adjacent_find(all.begin(), all.end()); dup != all.end()) {
    return error("prefix_register_ids",
                 "register token id " + std::to_string(*dup) + " appears more than once");
  }
  c.earn = std::move(earn);
  return Status::Ok();
}

}  // namespace

StatusOr<ModelConfig> parse_model_config(const nlohmann::json& json, const std::string& source) {
  if (!json.is_object()) return invalid_argument(source + ": expected a JSON object");
  FieldReader f(json, source);
  ModelConfig c;
  c.raw = json;

  const Json* archs = f.find("architectures");
  if (archs == nullptr) return f.error("architectures", "missing");
  if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string()) {
    return f.error("architectures", "expected a non-empty list of strings, got " + archs->dump());
  }
  c.architecture = (*archs)[0].get<std::string>();
  ES_ASSIGN_OR_RETURN(std::optional<std::string> model_type, f.string("model_type"));
  c.model_type = model_type.value_or("");

  ES_ASSIGN_OR_RETURN(c.vocab_size, f.required_positive("vocab_size"));
  ES_ASSIGN_OR_RETURN(c.hidden_size, f.required_positive("hidden_size"));
  ES_ASSIGN_OR_RETURN(c.intermediate_size, f.required_positive("intermediate_size"));
  ES_ASSIGN_OR_RETURN(c.num_hidden_layers, f.required_positive("num_hidden_layers"));
  ES_ASSIGN_OR_RETURN(c.num_attention_heads, f.required_positive("num_attention_heads"));
  ES_ASSIGN_OR_RETURN(c.max_position_embeddings, f.required_positive("max_position_embeddings"));

  ES_ASSIGN_OR_RETURN(std::optional<int64_t> kv_heads, f.integer("num_key_value_heads"));
  c.num_key_value_heads = kv_heads.value_or(c.num_attention_heads);
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
    return f.error("num_key_value_heads", "must be positive and divide num_attention_heads (" +
                                              std::to_string(c.num_attention_heads) + "), got " +
                                              std::to_string(c.num_key_value_heads));
  }
  ES_ASSIGN_OR_RETURN(std::optional<int64_t> head_dim, f.integer("head_dim"));
  if (head_dim) {
    c.head_dim = *head_dim;
  } else {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return f.error("hidden_size", "not divisible by num_attention_heads and no head_dim given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return f.error("head_dim", "must be positive and even, got " + std::to_string(c.head_dim));
  }

  ES_ASSIGN_OR_RETURN(std::optional<double> eps, f.number("rms_norm_eps"));
  c.rms_norm_eps = eps.value_or(1e-6);
  if (c.rms_norm_eps < 0) return f.error("rms_norm_eps", "must not be negative");
  ES_RETURN_IF_ERROR(parse_rope(f, source, c.rope));

  ES_ASSIGN_OR_RETURN(std::optional<std::string> act, f.string("hidden_act"));
  if (act && *act != "silu") {
    return f.error("hidden_act", "unsupported activation '" + *act + "' (supported: silu)");
  }
  ES_ASSIGN_OR_RETURN(std::optional<bool> mlp_bias, f.boolean("mlp_bias"));
  if (mlp_bias.value_or(false)) return f.error("mlp_bias", "true is not supported");
  ES_ASSIGN_OR_RETURN(std::optional<bool> sliding, f.boolean("use_sliding_window"));
  if (sliding.value_or(false)) {
    return f.error("use_sliding_window", "sliding-window attention is not supported");
  }
  ES_ASSIGN_OR_RETURN(std::optional<bool> attention_bias, f.boolean("attention_bias"));
  if (c.architecture == "Qwen2ForCausalLM") {
    c.qkv_bias = true;  // Qwen2 always has q/k/v bias and never an o_proj bias.
  } else {
    c.qkv_bias = attention_bias.value_or(false);
    c.o_proj_bias = attention_bias.value_or(false);
  }
  ES_ASSIGN_OR_RETURN(std::optional<bool> tie, f.boolean("tie_word_embeddings"));
  c.tie_word_embeddings = tie.value_or(false);

  ES_ASSIGN_OR_RETURN(std::optional<int64_t> bos, f.integer("bos_token_id"));
  c.bos_token_id = bos.value_or(-1);
  if (const Json* eos = f.find("eos_token_id")) {
    if (eos->is_array()) {
      for (const Json& id : *eos) {
        if (!id.is_number_integer()) {
          return f.error("eos_token_id", "expected an integer or a list of integers");
        }
        c.eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      ES_ASSIGN_OR_RETURN(std::optional<int64_t> id, f.integer("eos_token_id"));
      c.eos_token_ids.push_back(*id);
    }
  }
  ES_ASSIGN_OR_RETURN(std::optional<std::string> dtype, f.string("dtype"));
  if (!dtype) {
    ES_ASSIGN_OR_RETURN(dtype, f.string("torch_dtype"));
  }
  c.torch_dtype = dtype.value_or("");
  ES_RETURN_IF_ERROR(parse_earn(json, source, c));
  return c;
}

StatusOr<ModelConfig> load_model_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(model_dir, ec)) {
    return not_found(model_dir + ": model directory does not exist");
  }
  std::string path = (fs::path(model_dir) / "config.json").string();
  std::ifstream in(path);
  if (!in) return not_found(path + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json json = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return invalid_argument(path + ": not valid JSON");
  return parse_model_config(json, path);
}

}  // namespace earnserve
