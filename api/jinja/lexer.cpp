#include "api/jinja/lexer.h"

#include <cctype>
#include <cstring>

#include "api/jinja/value.h"

namespace earnserve::jinja {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

Status lex_error(int line, const std::string& message) {
  return invalid_argument("chat template line " + std::to_string(line) + ": " + message);
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)) {}

  StatusOr<std::vector<Token>> run();

 private:
  // Appends source[begin, end) as data after the pending strip of its head, stripping its tail
  // as the following tag (at `end`) asks.
  void emit_data(size_t begin, size_t end, bool strip_tail_all, bool lstrip_tail);
  Status lex_tag_body(TokenKind end_kind, size_t& pos);
  StatusOr<std::string> lex_string(size_t& pos);
  // If a {% raw %} tag starts at `pos`, returns the position just past its "%}".
  size_t match_raw_tag(size_t pos, const char* word) const;
  int line_at(size_t pos) const;

  std::string src_;
  std::vector<Token> tokens_;
  bool strip_head_all_ = false;     // the previous tag ended with "-"
  bool trim_head_newline_ = false;  // the previous tag was a block or comment (trim_blocks)
  mutable size_t line_cache_pos_ = 0;
  mutable int line_cache_line_ = 1;
};

int Lexer::line_at(size_t pos) const {
  // Positions mostly grow, so count on from the last answer.
  if (pos < line_cache_pos_) {
    line_cache_pos_ = 0;
    line_cache_line_ = 1;
  }
  for (; line_cache_pos_ < pos && line_cache_pos_ < src_.size(); ++line_cache_pos_) {
    line_cache_line_ += src_[line_cache_pos_] == '\n';
  }
  return line_cache_line_;
}

void Lexer::emit_data(size_t begin, size_t end, bool strip_tail_all, bool lstrip_tail) {
  if (strip_head_all_) {
    while (begin < end && is_space(src_[begin])) ++begin;
  } else if (trim_head_newline_ && begin < end && src_[begin] == '\n') {
    ++begin;
  }
  if (strip_tail_all) {
    while (end > begin && is_space(src_[end - 1])) --end;
  } else if (lstrip_tail) {
    // Only when the tag starts its line: spaces and tabs back to a newline or the beginning.
    size_t k = end;
    while (k > 0 && (src_[k - 1] == ' ' || src_[k - 1] == '\t')) --k;
    if (k == 0 || src_[k - 1] == '\n') end = std::max(begin, k);
  }
  strip_head_all_ = false;
  trim_head_newline_ = false;
  if (end > begin)
    tokens_.push_back({TokenKind::kData, src_.substr(begin, end - begin), line_at(begin)});
}

size_t Lexer::match_raw_tag(size_t pos, const char* word) const {
  if (src_.compare(pos, 2, "{%") != 0) return 0;
  size_t k = pos + 2;
  if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) ++k;
  while (k < src_.size() && is_space(src_[k])) ++k;
  const size_t n = std::strlen(word);
  if (src_.compare(k, n, word) != 0) return 0;
  k += n;
  while (k < src_.size() && is_space(src_[k])) ++k;
  if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) ++k;
  if (src_.compare(k, 2, "%}") != 0) return 0;
  return k + 2;
}

StatusOr<std::string> Lexer::lex_string(size_t& pos) {
  const int line = line_at(pos);
  const char quote = src_[pos++];
  std::string out;
  while (true) {
    if (pos >= src_.size()) return lex_error(line, "unterminated string literal");
    char c = src_[pos++];
    if (c == quote) return out;
    if (c != '\\') {
      out += c;
      continue;
    }
    if (pos >= src_.size()) return lex_error(line, "unterminated string literal");
    c = src_[pos++];
    switch (c) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'v':
        out += '\v';
        break;
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case '\n':
        break;
      case 'x':
      case 'u':
      case 'U': {
        const size_t digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        if (pos + digits > src_.size())
          return lex_error(line, "truncated \\" + std::string(1, c) + " escape");
        const std::string hex = src_.substr(pos, digits);
        for (char h : hex) {
          if (!std::isxdigit(static_cast<unsigned char>(h))) {
            return lex_error(line, "bad \\" + std::string(1, c) + " escape '" + hex + "'");
          }
        }
        pos += digits;
        out += encode_utf8(std::u32string(1, static_cast<char32_t>(std::stoul(hex, nullptr, 16))));
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          unsigned value = c - '0';
          for (int k = 0; k < 2 && pos < src_.size() && src_[pos] >= '0' && src_[pos] <= '7'; ++k) {
            value = value * 8 + (src_[pos++] - '0');
          }
          out += encode_utf8(std::u32string(1, static_cast<char32_t>(value)));
        } else {
          out += '\\';
          out += c;
        }
    }
  }
}

Status Lexer::lex_tag_body(TokenKind end_kind, size_t& pos) {
  const char* close = end_kind == TokenKind::kBlockEnd ? "%}" : "}}";
  const int start_line = line_at(pos);
  int brace_depth = 0;
  while (true) {
    while (pos < src_.size() && is_space(src_[pos])) ++pos;
    if (pos >= src_.size()) {
      return lex_error(start_line, std::string("tag is never closed with '") + close + "'");
    }
    const int line = line_at(pos);
    // The closing delimiter, possibly with a whitespace modifier.
    if (brace_depth == 0) {
      size_t k = pos;
      const bool minus = src_[k] == '-';
      const bool plus = src_[k] == '+';
      if (minus || plus) ++k;
      if (src_.compare(k, 2, close) == 0 && !(plus && end_kind == TokenKind::kVarEnd)) {
        tokens_.push_back({end_kind, close, line});
        pos = k + 2;
        strip_head_all_ = minus;
        trim_head_newline_ = end_kind == TokenKind::kBlockEnd && !plus && !minus;
        return Status::Ok();
      }
    }
    const char c = src_[pos];
    if (c == '\'' || c == '"') {
      ES_ASSIGN_OR_RETURN(std::string value, lex_string(pos));
      tokens_.push_back({TokenKind::kString, std::move(value), line});
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t k = pos;
      while (k < src_.size() &&
             (std::isalnum(static_cast<unsigned char>(src_[k])) || src_[k] == '_'))
        ++k;
      tokens_.push_back({TokenKind::kName, src_.substr(pos, k - pos), line});
      pos = k;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t k = pos;
      auto digits = [&] {
        while (k < src_.size() &&
               (std::isdigit(static_cast<unsigned char>(src_[k])) || src_[k] == '_'))
          ++k;
      };
      digits();
      bool is_float = false;
      // A fraction only when a digit follows the dot, so "x.0.1"-style attribute chains still lex.
      const bool after_dot_access = !tokens_.empty() &&
                                    tokens_.back().kind == TokenKind::kOperator &&
                                    tokens_.back().text == ".";
      if (!after_dot_access && k + 1 < src_.size() && src_[k] == '.' &&
          std::isdigit(static_cast<unsigned char>(src_[k + 1]))) {
        ++k;
        digits();
        is_float = true;
      }
      if (k < src_.size() && (src_[k] == 'e' || src_[k] == 'E')) {
        size_t e = k + 1;
        if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
        if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
          k = e;
          digits();
          is_float = true;
        }
      }
      std::string text;
      for (size_t i = pos; i < k; ++i) {
        if (src_[i] != '_') text += src_[i];
      }
      tokens_.push_back({is_float ? TokenKind::kFloat : TokenKind::kInteger, text, line});
      pos = k;
      continue;
    }
    static const char* kTwoCharOps[] = {"//", "**", "==", "!=", "<=", ">="};
    bool matched = false;
    for (const char* op : kTwoCharOps) {
      if (src_.compare(pos, 2, op) == 0) {
        tokens_.push_back({TokenKind::kOperator, op, line});
        pos += 2;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    if (std::strchr("+-*/%~<>=()[]{},.:|", c) != nullptr) {
      if (c == '{') ++brace_depth;
      if (c == '}') --brace_depth;
      tokens_.push_back({TokenKind::kOperator, std::string(1, c), line});
      ++pos;
      continue;
    }
    return lex_error(line, std::string("unexpected character '") + c + "' in tag");
  }
}

StatusOr<std::vector<Token>> Lexer::run() {
  size_t pos = 0;
  while (pos < src_.size()) {
    size_t tag = src_.find('{', pos);
    while (tag != std::string::npos && tag + 1 < src_.size() && src_[tag + 1] != '{' &&
           src_[tag + 1] != '%' && src_[tag + 1] != '#') {
      tag = src_.find('{', tag + 1);
    }
    if (tag == std::string::npos || tag + 1 >= src_.size()) {
      emit_data(pos, src_.size(), false, false);
      break;
    }
    const char kind = src_[tag + 1];
    const char modifier = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
    const bool lstrip = (kind == '%' || kind == '#') && modifier != '+';
    emit_data(pos, tag, modifier == '-', lstrip);
    pos = tag + 2;
    if (modifier == '-' || (modifier == '+' && kind != '{')) ++pos;
    const int line = line_at(tag);
    if (kind == '#') {
      const size_t close = src_.find("#}", pos);
      if (close == std::string::npos) return lex_error(line, "comment is never closed with '#}'");
      strip_head_all_ = close > pos && src_[close - 1] == '-';
      trim_head_newline_ = !strip_head_all_ && !(close > pos && src_[close - 1] == '+');
      pos = close + 2;
      continue;
    }
    if (kind == '%') {
      if (size_t body = match_raw_tag(tag, "raw"); body != 0) {
        size_t end = src_.find("{%", body);
        size_t after = 0;
        while (end != std::string::npos && (after = match_raw_tag(end, "endraw")) == 0) {
          end = src_.find("{%", end + 2);
        }
        if (end == std::string::npos) return lex_error(line, "{% raw %} is never closed");
        trim_head_newline_ = src_[body - 3] != '+' && src_[body - 3] != '-';
        strip_head_all_ = src_[body - 3] == '-';
        emit_data(body, end, src_[end + 2] == '-', false);
        strip_head_all_ = src_[after - 3] == '-';
        trim_head_newline_ = !strip_head_all_ && src_[after - 3] != '+';
        pos = after;
        continue;
      }
      tokens_.push_back({TokenKind::kBlockBegin, "{%", line});
      ES_RETURN_IF_ERROR(lex_tag_body(TokenKind::kBlockEnd, pos));
    } else {
      tokens_.push_back({TokenKind::kVarBegin, "{{", line});
      ES_RETURN_IF_ERROR(lex_tag_body(TokenKind::kVarEnd, pos));
    }
  }
  tokens_.push_back({TokenKind::kEnd, "", line_at(src_.size())});
  return std::move(tokens_);
}

}  // namespace

StatusOr<std::vector<Token>> lex_template(const std::string& source) {
  // Jinja normalises every newline to "\n" and drops one trailing newline (keep_trailing_newline
  // is off in transformers' environment).
  std::string text;
  text.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      text += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      text += source[i];
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  Lexer lexer(std::move(text));
  return lexer.run();
}

}  // namespace earnserve::jinja
