// A compiled tokenizer.json regular expression (PCRE2 in UTF + UCP mode, so \p{L}, \s, (?i:...)
// and look-ahead behave as in the Hugging Face tokenizers' Oniguruma patterns).
// Immutable after compile(); find_all() may be called from many threads at once.
#pragma once

#include <cstddef>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace earnserve {

class TokenizerRegex {
 public:
  // Compiles `pattern`; an invalid pattern is an InvalidArgument naming the pattern and offset.
  static StatusOr<std::unique_ptr<TokenizerRegex>> compile(std::string_view pattern);
  ~TokenizerRegex();
  TokenizerRegex(const TokenizerRegex&) = delete;
  TokenizerRegex& operator=(const TokenizerRegex&) = delete;

  // Byte ranges [begin, end) of the successive, non-overlapping, non-empty matches in `text`.
  // REQUIRES: text is valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Impl;
  explicit TokenizerRegex(std::unique_ptr<Impl> impl);

  // Constant after construction
  std::unique_ptr<Impl> impl_;
};

// A tokenizer.json "pattern" object: {"String": "literal"} or {"Regex": "..."}.
// Immutable after from_json(); thread-safe.
class TokenizerPattern {
 public:
  static StatusOr<TokenizerPattern> from_json(const nlohmann::json& spec);

  // Non-overlapping, non-empty matches in `text`, left to right. REQUIRES: text is valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  // `text` with every match replaced by `content`.
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  // Constant after construction: a regex when set, else the literal.
  std::string literal_;
  std::shared_ptr<const TokenizerRegex> regex_;
};

}  // namespace earnserve
