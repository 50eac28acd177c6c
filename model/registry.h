// The model families this engine can run, as an explicit table from the Hugging Face
// "architectures" name to a factory, and load_causal_lm(), which reads a checkpoint directory
// (config.json + safetensors) into a ready CausalLM. The table is immutable; thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/causal_lm.h"
#include "model/config.h"
#include "model/weights.h"

namespace earnserve {

using CausalLMFactory = StatusOr<std::unique_ptr<CausalLM>> (*)(const ModelConfig& config,
                                                                const Weights& weights);

// The architecture names the table knows, sorted.
std::vector<std::string> supported_architectures();

// The factory for `architecture`, or an error listing the supported ones.
StatusOr<CausalLMFactory> find_model_factory(const std::string& architecture);

// Loads <model_dir>/config.json and its safetensors weights. Every error is one line naming the
// file and the problem (missing directory, bad JSON, truncated or inconsistent safetensors, a
// tensor of the wrong shape, an unsupported architecture).
StatusOr<std::unique_ptr<CausalLM>> load_causal_lm(const std::string& model_dir,
                                                   const LoadOptions& options);

}  // namespace earnserve
