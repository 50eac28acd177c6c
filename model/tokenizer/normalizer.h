// Normalizers of a tokenizer.json pipeline: rewrite a piece of input text before pre-tokenizing
// (NFC and the other Unicode forms, Prepend, Replace, Strip, Sequence). Immutable after
// make_normalizer(); normalize() is thread-safe.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "core/status.h"

namespace earnserve {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // REQUIRES: text is valid UTF-8. The result is valid UTF-8.
  virtual std::string normalize(std::string_view text) const = 0;
};

// Builds the normalizer described by a tokenizer.json "normalizer" object. A JSON null gives
// nullptr (no normalization); an unknown "type" is an Unimplemented error naming the type.
StatusOr<std::unique_ptr<Normalizer>> make_normalizer(const nlohmann::json& spec);

}  // namespace earnserve
