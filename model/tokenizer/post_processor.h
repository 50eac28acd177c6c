// Post-processors of a tokenizer.json pipeline: add the special tokens a model expects around an
// encoded text (TemplateProcessing, RobertaProcessing, BertProcessing; ByteLevel adds none).
// Only single sequences are supported (no pairs). Immutable; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <vector>

#include "core/status.h"

namespace earnserve {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence around `ids`.
  virtual void add_special_tokens(std::vector<int32_t>* ids) const = 0;
};

// Builds the post-processor of a tokenizer.json "post_processor" object. A JSON null gives
// nullptr; an unknown "type" is an Unimplemented error naming the type.
StatusOr<std::unique_ptr<PostProcessor>> make_post_processor(const nlohmann::json& spec);

}  // namespace earnserve
