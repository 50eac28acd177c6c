// Lexer for the Jinja subset of chat templates. Splits template text into data and tag tokens
// with the whitespace rules transformers compiles templates with: trim_blocks and lstrip_blocks
// on, "-" / "+" modifiers on tags, newlines normalised to "\n", one trailing newline dropped.
// Comments vanish; {% raw %} bodies become data. Pure function; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace earnserve::jinja {

enum class TokenKind {
  kData,        // literal template text (whitespace rules already applied)
  kBlockBegin,  // {%
  kBlockEnd,    // %}
  kVarBegin,    // {{
  kVarEnd,      // }}
  kName,
  kString,  // text holds the decoded value
  kInteger,
  kFloat,
  kOperator,  // + - * / // % ** ~ == != < <= > >= = ( ) [ ] { } , . : |
  kEnd,
};

struct Token {
  TokenKind kind;
  std::string text;
  int line = 1;
};

// REQUIRES: nothing; errors (unterminated tag or string, stray character) name the line.
StatusOr<std::vector<Token>> lex_template(const std::string& source);

}  // namespace earnserve::jinja
