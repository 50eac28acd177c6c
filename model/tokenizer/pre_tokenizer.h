// Pre-tokenizers of a tokenizer.json pipeline: cut normalized text into the words the BPE model
// sees (Split by regex, ByteLevel, Metaspace, Sequence). Immutable after make_pre_tokenizer();
// pre_tokenize() is thread-safe.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits and rewrites `pieces` in place; empty pieces are dropped. `starts_input` says that
  // (*pieces)[0] begins the whole input text (Metaspace's prepend_scheme "first" needs it).
  // REQUIRES: every piece is valid UTF-8.
  virtual void pre_tokenize(std::vector<std::string>* pieces, bool starts_input) const = 0;
};

// How a Split pre-tokenizer treats the pieces its pattern matches.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// A piece of a split: [begin, end) bytes, and whether the pattern matched it.
struct SplitPiece {
  size_t begin;
  size_t end;
  bool is_match;
};

// Applies `behavior` to a cover of some text by matched and unmatched pieces (in order) and
// returns the byte ranges to keep, empty ones dropped.
std::vector<std::pair<size_t, size_t>> apply_split_behavior(const std::vector<SplitPiece>& pieces,
                                                            SplitBehavior behavior);

// Builds the pre-tokenizer described by a tokenizer.json "pre_tokenizer" object. A JSON null
// gives nullptr (the whole text is one word); an unknown "type" is an Unimplemented error.
StatusOr<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const nlohmann::json& spec);

}  // namespace earnserve
