// UTF-8 helpers for the tokenizer: validation, lossy repair, code point iteration and encoding.
// Stateless free functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace earnserve {

// U+FFFD REPLACEMENT CHARACTER in UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Length in bytes of the valid UTF-8 sequence starting at text[pos], or 0 when the bytes there
// are not a complete, well-formed sequence (overlong forms and surrogates are rejected).
size_t utf8_valid_sequence_length(std::string_view text, size_t pos);

bool is_valid_utf8(std::string_view text);

// Copies `bytes`, replacing each maximal ill-formed subsequence by U+FFFD (the Unicode
// "substitution of maximal subparts" practice, as Rust's String::from_utf8_lossy does).
std::string utf8_lossy(std::string_view bytes);

// Appends the UTF-8 encoding of `cp` to `out`. REQUIRES: cp is a Unicode scalar value.
void append_utf8(char32_t cp, std::string* out);

// Decodes the code point starting at text[*pos] and advances *pos past it.
// REQUIRES: text is valid UTF-8 and *pos < text.size() is at a code point boundary.
char32_t next_code_point(std::string_view text, size_t* pos);

// Byte length of the UTF-8 sequence whose lead byte is `lead` (1 for invalid lead bytes).
size_t utf8_lead_length(unsigned char lead);

}  // namespace earnserve
