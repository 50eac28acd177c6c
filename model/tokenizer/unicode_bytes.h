// The byte-level BPE alphabet (GPT-2): a reversible map between the 256 byte values and 256
// printable code points, so that any byte string can be spelled with vocabulary characters.
// The tables are built once on first use; all functions are thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace earnserve {

// UTF-8 spelling of the code point that stands for byte `b`.
std::string_view byte_to_unicode(uint8_t b);

// The byte that code point `cp` stands for, or nullopt when cp is not in the alphabet.
std::optional<uint8_t> unicode_to_byte(char32_t cp);

// Spells every byte of `bytes` with its code point: "Hi \n" -> "HiĠĊ".
std::string bytes_to_unicode(std::string_view bytes);

// Inverse of bytes_to_unicode for text made of alphabet code points only; nullopt when `text`
// holds any other code point. REQUIRES: text is valid UTF-8.
std::optional<std::string> unicode_to_bytes(std::string_view text);

}  // namespace earnserve
