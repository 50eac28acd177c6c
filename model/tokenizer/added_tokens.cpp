#include "model/tokenizer/added_tokens.h"

#include <utf8proc.h>

#include <algorithm>

#include "core/logging.h"
#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

bool is_word_char(utf8proc_int32_t cp) {
  if (cp == '_') return true;
  utf8proc_category_t c = utf8proc_category(cp);
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
         (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO) ||
         (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME);
}

bool is_white_space(utf8proc_int32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\v' || cp == '\f' || cp == '\r' || cp == 0x85) return true;
  utf8proc_category_t c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

// The code point ending just before `end` and its start. REQUIRES: end > 0, valid UTF-8.
std::pair<char32_t, size_t> code_point_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  size_t pos = start;
  return {next_code_point(text, &pos), start};
}

}  // namespace

AddedTokenSplitter::AddedTokenSplitter(const std::vector<AddedToken>* tokens,
                                       const std::vector<std::string>& patterns,
                                       const std::vector<int>& token_indices)
    : tokens_(tokens), nodes_(1) {
  ES_CHECK_EQ(patterns.size(), token_indices.size());
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (patterns[i].empty()) continue;
    int node = 0;
    for (char ch : patterns[i]) {
      auto c = static_cast<unsigned char>(ch);
      int next = child(node, c);
      if (next < 0) {
        next = static_cast<int>(nodes_.size());
        nodes_[node].children.emplace_back(c, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    // Two tokens with the same pattern: the first one listed keeps it.
    if (nodes_[node].token_index < 0) nodes_[node].token_index = token_indices[i];
    first_byte_[static_cast<unsigned char>(patterns[i][0])] = true;
  }
}

int AddedTokenSplitter::child(int node, unsigned char c) const {
  for (const auto& [byte, next] : nodes_[node].children) {
    if (byte == c) return next;
  }
  return -1;
}

std::pair<size_t, int> AddedTokenSplitter::longest_at(std::string_view text, size_t pos) const {
  std::pair<size_t, int> best{pos, -1};
  int node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    node = child(node, static_cast<unsigned char>(text[i]));
    if (node < 0) break;
    if (nodes_[node].token_index >= 0) best = {i + 1, nodes_[node].token_index};
  }
  return best;
}

std::vector<TextSegment> AddedTokenSplitter::split(std::string_view text) const {
  std::vector<TextSegment> segments;
  size_t done = 0;  // text before this is covered by segments
  size_t pos = 0;
  while (pos < text.size()) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) {
      ++pos;
      continue;
    }
    auto [end, index] = longest_at(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = (*tokens_)[index];
    size_t begin = pos;
    pos = end;  // matches never overlap, even when this one is discarded below
    if (token.single_word) {
      bool word_before = begin > 0 && is_word_char(code_point_before(text, begin).first);
      size_t after = end;
      bool word_after = end < text.size() && is_word_char(next_code_point(text, &after));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      while (begin > done) {
        auto [cp, start] = code_point_before(text, begin);
        if (!is_white_space(cp)) break;
        begin = start;
      }
    }
    if (token.rstrip) {
      while (end < text.size()) {
        size_t next = end;
        if (!is_white_space(next_code_point(text, &next))) break;
        end = next;
      }
      pos = end;
    }
    if (begin > done) segments.push_back({done, begin, -1});
    segments.push_back({begin, end, index});
    done = end;
  }
  if (done < text.size() || segments.empty()) segments.push_back({done, text.size(), -1});
  return segments;
}

}  // namespace earnserve
