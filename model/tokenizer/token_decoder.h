// Decoders of a tokenizer.json pipeline: turn token strings back into text (ByteLevel, Replace,
// ByteFallback, Fuse, Strip, Metaspace, Sequence). Each step maps a list of token strings to a
// new list; the decoded text is the concatenation of the final list. Immutable after
// make_token_decoder(); decode_chain() is thread-safe.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve {

class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  virtual void decode_chain(std::vector<std::string>* tokens) const = 0;
};

// Builds the decoder described by a tokenizer.json "decoder" object. A JSON null gives nullptr
// (tokens are joined with spaces); an unknown "type" is an Unimplemented error naming the type.
StatusOr<std::unique_ptr<TokenDecoder>> make_token_decoder(const nlohmann::json& spec);

}  // namespace earnserve
