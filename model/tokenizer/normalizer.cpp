#include "model/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/logging.h"
#include "model/tokenizer/component_spec.h"
#include "model/tokenizer/regex.h"

namespace earnserve {
namespace {

using nlohmann::json;

// NFC, NFD, NFKC or NFKD through utf8proc.
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}

  std::string normalize(std::string_view text) const override {
    if (text.empty()) return std::string();
    utf8proc_uint8_t* result = nullptr;
    utf8proc_ssize_t size = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                         static_cast<utf8proc_ssize_t>(text.size()), &result,
                                         static_cast<utf8proc_option_t>(options_));
    // Input is valid UTF-8 by contract, so failure here can only be memory exhaustion.
    ES_CHECK(size >= 0) << "utf8proc_map failed: " << utf8proc_errmsg(size);
    std::string out(reinterpret_cast<const char*>(result), static_cast<size_t>(size));
    std::free(result);
    return out;
  }

 private:
  const int options_;
};

// Prepends a fixed string to non-empty text (SentencePiece's leading "▁").
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  std::string normalize(std::string_view text) const override {
    if (text.empty()) return std::string();
    std::string out = prepend_;
    out.append(text);
    return out;
  }

 private:
  const std::string prepend_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(TokenizerPattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string_view text) const override {
    return pattern_.replace_all(text, content_);
  }

 private:
  const TokenizerPattern pattern_;
  const std::string content_;
};

// Removes Unicode white space at the left and/or right end.
class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string normalize(std::string_view text) const override {
    size_t begin = 0;
    size_t end = text.size();
    if (left_) {
      while (begin < end) {
        utf8proc_int32_t cp = 0;
        utf8proc_ssize_t n = utf8proc_iterate(
            reinterpret_cast<const utf8proc_uint8_t*>(text.data() + begin), end - begin, &cp);
        if (n <= 0 || !is_space(cp)) break;
        begin += n;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        utf8proc_int32_t cp = 0;
        utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + start),
                         end - start, &cp);
        if (!is_space(cp)) break;
        end = start;
      }
    }
    return std::string(text.substr(begin, end - begin));
  }

 private:
  static bool is_space(utf8proc_int32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\v' || cp == '\f' || cp == '\r' || cp == 0x85)
      return true;
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
  }
  const bool left_;
  const bool right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string normalize(std::string_view text) const override {
    std::string current(text);
    for (const auto& part : parts_) current = part->normalize(current);
    return current;
  }

 private:
  const std::vector<std::unique_ptr<Normalizer>> parts_;
};

template <typename T, typename... Args>
std::unique_ptr<Normalizer> make(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

StatusOr<std::string> string_field(const json& spec, const char* key) {
  if (!spec.contains(key) || !spec[key].is_string()) {
    return invalid_argument(std::string("normalizer ") + spec.value("type", "?") +
                            " needs a string field '" + key + "'");
  }
  return spec[key].get<std::string>();
}

}  // namespace

StatusOr<std::unique_ptr<Normalizer>> make_normalizer(const json& spec) {
  if (spec.is_null()) return std::unique_ptr<Normalizer>();
  ES_ASSIGN_OR_RETURN(const std::string type, component_type(spec, "normalizer"));
  constexpr int kStable = UTF8PROC_STABLE;
  if (type == "NFC") return make<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE);
  if (type == "NFD") return make<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return make<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return make<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "Prepend") {
    ES_ASSIGN_OR_RETURN(std::string prepend, string_field(spec, "prepend"));
    return make<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    ES_ASSIGN_OR_RETURN(std::string content, string_field(spec, "content"));
    ES_ASSIGN_OR_RETURN(TokenizerPattern pattern,
                        TokenizerPattern::from_json(spec.value("pattern", json())));
    return make<ReplaceNormalizer>(std::move(pattern), std::move(content));
  }
  if (type == "Strip") {
    return make<StripNormalizer>(spec.value("strip_left", true), spec.value("strip_right", true));
  }
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(
        auto parts, sequence_parts<Normalizer>(spec, "normalizers", "normalizer", make_normalizer));
    return make<SequenceNormalizer>(std::move(parts));
  }
  return unimplemented("unsupported normalizer type '" + type + "'");
}

}  // namespace earnserve
