#include "model/registry.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include "model/llama.h"

namespace earnserve {
namespace {

// One row per Hugging Face architecture name.
constexpr std::pair<const char*, CausalLMFactory> kModelFactories[] = {
    {"LlamaForCausalLM", &LlamaModel::create},
    {"Qwen2ForCausalLM", &LlamaModel::create},
};

}  // namespace

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : kModelFactories) names.emplace_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

StatusOr<CausalLMFactory> find_model_factory(const std::string& architecture) {
  for (const auto& [name, factory] : kModelFactories) {
    if (architecture == name) return factory;
  }
  std::string supported;
  for (const std::string& name : supported_architectures()) {
    supported += (supported.empty() ? "" : ", ") + name;
  }
  return unimplemented("unsupported architecture '" + architecture + "' (supported: " + supported +
                       ")");
}

StatusOr<std::unique_ptr<CausalLM>> load_causal_lm(const std::string& model_dir,
                                                   const LoadOptions& options) {
  ES_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(model_dir));
  StatusOr<CausalLMFactory> factory = find_model_factory(config.architecture);
  if (!factory.ok()) {
    return factory.status().with_prefix(
        (std::filesystem::path(model_dir) / "config.json").string());
  }
  ES_ASSIGN_OR_RETURN(Weights weights, Weights::load(model_dir, options));
  return (*factory)(config, weights);
}

}  // namespace earnserve
