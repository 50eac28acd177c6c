// Fast reading of a tokenizer.json: a streaming (SAX) parse that moves the BPE vocabulary and
// merges (hundreds of thousands of entries in Qwen2/Llama 3 files) straight into flat vectors
// and keeps only the small rest of the file as a JSON tree. Building the full tree would cost
// several times more. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"
#include "model/tokenizer/bpe.h"

namespace earnserve {

struct TokenizerJson {
  // The whole file, except that "model"."vocab" and "model"."merges" are empty placeholders
  // (an object and an array) whose contents are in `bpe`.
  nlohmann::json root;
  BpeTables bpe;
};

// Parses tokenizer.json text. Errors (InvalidArgument) give the byte offset of a syntax error,
// or name the vocabulary entry or merge that is malformed.
StatusOr<TokenizerJson> parse_tokenizer_json(std::string_view text);

// Reads `spec`'s "vocab" object and "merges" array (either spelling: "a b" or ["a", "b"]).
StatusOr<BpeTables> bpe_tables_from_json(const nlohmann::json& spec);

}  // namespace earnserve
