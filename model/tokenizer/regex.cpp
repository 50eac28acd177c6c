#include "model/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>
#include <string>

#include "core/logging.h"
#include "model/tokenizer/utf8.h"

namespace earnserve {

struct TokenizerRegex::Impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Impl() {
    if (code != nullptr) pcre2_code_free(code);
  }
};

TokenizerRegex::TokenizerRegex(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TokenizerRegex::~TokenizerRegex() = default;

StatusOr<std::unique_ptr<TokenizerRegex>> TokenizerRegex::compile(std::string_view pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  auto impl = std::make_unique<Impl>();
  impl->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (impl->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return invalid_argument("bad regex '" + std::string(pattern) + "' at offset " +
                            std::to_string(error_offset) + ": " +
                            reinterpret_cast<const char*>(message));
  }
  // JIT is an optimisation only; without it (unsupported CPU) matching stays correct.
  impl->jit = pcre2_jit_compile(impl->code, PCRE2_JIT_COMPLETE) == 0;
  return std::unique_ptr<TokenizerRegex>(new TokenizerRegex(std::move(impl)));
}

std::vector<std::pair<size_t, size_t>> TokenizerRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  ES_CHECK(data != nullptr) << "out of memory creating PCRE2 match data";
  auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // Very long runs can exhaust the JIT stack; the interpreter has no such limit.
      rc = pcre2_match(impl_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT,
                       data, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    ES_CHECK(rc >= 0) << "PCRE2 match failed with code " << rc;
    PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    size_t begin = ovector[0];
    size_t end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      pos = end;
    } else {
      // Skip one whole code point past an empty match to stay on a UTF-8 boundary.
      pos = begin + utf8_lead_length(static_cast<unsigned char>(text[begin]));
    }
  }
  pcre2_match_data_free(data);
  return matches;
}

StatusOr<TokenizerPattern> TokenizerPattern::from_json(const nlohmann::json& spec) {
  TokenizerPattern pattern;
  if (spec.is_object() && spec.contains("String") && spec["String"].is_string()) {
    pattern.literal_ = spec["String"].get<std::string>();
    return pattern;
  }
  if (spec.is_object() && spec.contains("Regex") && spec["Regex"].is_string()) {
    ES_ASSIGN_OR_RETURN(std::unique_ptr<TokenizerRegex> regex,
                        TokenizerRegex::compile(spec["Regex"].get<std::string>()));
    pattern.regex_ = std::move(regex);
    return pattern;
  }
  return invalid_argument("pattern must be {\"String\": ...} or {\"Regex\": ...}, got " +
                          spec.dump());
}

std::vector<std::pair<size_t, size_t>> TokenizerPattern::find_all(std::string_view text) const {
  if (regex_ != nullptr) return regex_->find_all(text);
  std::vector<std::pair<size_t, size_t>> matches;
  if (literal_.empty()) return matches;
  for (size_t pos = text.find(literal_); pos != std::string_view::npos;
       pos = text.find(literal_, pos + literal_.size())) {
    matches.emplace_back(pos, pos + literal_.size());
  }
  return matches;
}

std::string TokenizerPattern::replace_all(std::string_view text, std::string_view content) const {
  std::string out;
  out.reserve(text.size());
  size_t last = 0;
  for (auto [begin, end] : find_all(text)) {
    out.append(text.substr(last, begin - last));
    out.append(content);
    last = end;
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace earnserve
