#include "model/tokenizer/unicode_bytes.h"

#include <array>

#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

struct ByteTables {
  std::array<std::string, 256> byte_to_utf8;
  // Code points of the alphabet all lie below 324 (256 + 68 remapped bytes).
  std::array<int16_t, 512> code_point_to_byte;

  ByteTables() {
    code_point_to_byte.fill(-1);
    // Printable Latin-1 bytes stand for themselves; the others (controls, space, DEL, NBSP,
    // soft hyphen) are moved, in byte order, to U+0100 onwards.
    char32_t next_free = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      char32_t cp = printable ? static_cast<char32_t>(b) : next_free++;
      append_utf8(cp, &byte_to_utf8[b]);
      code_point_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables kTables;
  return kTables;
}

}  // namespace

std::string_view byte_to_unicode(uint8_t b) { return tables().byte_to_utf8[b]; }

std::optional<uint8_t> unicode_to_byte(char32_t cp) {
  const ByteTables& t = tables();
  if (cp >= t.code_point_to_byte.size() || t.code_point_to_byte[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(t.code_point_to_byte[cp]);
}

std::string bytes_to_unicode(std::string_view bytes) {
  const ByteTables& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out.append(t.byte_to_utf8[static_cast<uint8_t>(c)]);
  return out;
}

std::optional<std::string> unicode_to_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    std::optional<uint8_t> b = unicode_to_byte(next_code_point(text, &pos));
    if (!b) return std::nullopt;
    out.push_back(static_cast<char>(*b));
  }
  return out;
}

}  // namespace earnserve
