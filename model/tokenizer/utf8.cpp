#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

// Valid range of the second byte for a given lead byte (Unicode Table 3-7); continuation bytes
// after the second are always 0x80..0xBF.
bool second_byte_ok(unsigned char lead, unsigned char b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}

size_t expected_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;  // continuation byte, C0/C1 or F5..FF: never a lead
}

// Number of bytes starting at pos that form a valid prefix of some well-formed sequence
// (at least 1), and whether the whole sequence is complete.
size_t valid_prefix_length(std::string_view text, size_t pos, bool* complete) {
  auto lead = static_cast<unsigned char>(text[pos]);
  size_t need = expected_length(lead);
  *complete = false;
  if (need == 0) return 1;
  if (need == 1) {
    *complete = true;
    return 1;
  }
  size_t have = 1;
  while (have < need && pos + have < text.size()) {
    auto b = static_cast<unsigned char>(text[pos + have]);
    bool ok = have == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++have;
  }
  *complete = have == need;
  return have;
}

}  // namespace

size_t utf8_lead_length(unsigned char lead) {
  size_t n = expected_length(lead);
  return n == 0 ? 1 : n;
}

size_t utf8_valid_sequence_length(std::string_view text, size_t pos) {
  bool complete = false;
  size_t n = valid_prefix_length(text, pos, &complete);
  return complete ? n : 0;
}

bool is_valid_utf8(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    if (static_cast<unsigned char>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    size_t n = utf8_valid_sequence_length(text, pos);
    if (n == 0) return false;
    pos += n;
  }
  return true;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (static_cast<unsigned char>(bytes[pos]) < 0x80) {
      out.push_back(bytes[pos++]);
      continue;
    }
    bool complete = false;
    size_t n = valid_prefix_length(bytes, pos, &complete);
    if (complete) {
      out.append(bytes.substr(pos, n));
    } else {
      out.append(kReplacementChar);
    }
    pos += n;
  }
  return out;
}

void append_utf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t next_code_point(std::string_view text, size_t* pos) {
  auto lead = static_cast<unsigned char>(text[*pos]);
  size_t n = utf8_lead_length(lead);
  char32_t cp = n == 1 ? lead : n == 2 ? (lead & 0x1F) : n == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t i = 1; i < n && *pos + i < text.size(); ++i) {
    cp = (cp << 6) | (static_cast<unsigned char>(text[*pos + i]) & 0x3F);
  }
  *pos += n;
  return cp;
}

}  // namespace earnserve
