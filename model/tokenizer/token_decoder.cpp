#include "model/tokenizer/token_decoder.h"

#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "model/tokenizer/component_spec.h"
#include "model/tokenizer/regex.h"
#include "model/tokenizer/unicode_bytes.h"
#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

using nlohmann::json;

// Byte-level alphabet back to bytes; the whole output becomes one lossily repaired UTF-8 string.
// A token with characters outside the alphabet (an added token such as "<think>" with unusual
// characters) contributes its own UTF-8 bytes.
class ByteLevelDecoder : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    for (const std::string& token : *tokens) {
      std::optional<std::string> raw = unicode_to_bytes(token);
      bytes.append(raw ? *raw : token);
    }
    tokens->assign(1, utf8_lossy(bytes));
  }
};

class ReplaceDecoder : public TokenDecoder {
 public:
  ReplaceDecoder(TokenizerPattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) token = pattern_.replace_all(token, content_);
  }

 private:
  const TokenizerPattern pattern_;
  const std::string content_;
};

// "<0xNN>" tokens back to bytes. A run of byte tokens becomes its UTF-8 text when valid, else
// one U+FFFD per byte token.
class ByteFallbackDecoder : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string pending;  // bytes of the current run
    size_t pending_tokens = 0;
    auto flush = [&] {
      if (pending_tokens == 0) return;
      if (is_valid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t i = 0; i < pending_tokens; ++i) out.emplace_back(kReplacementChar);
      }
      pending.clear();
      pending_tokens = 0;
    };
    for (std::string& token : *tokens) {
      if (std::optional<char> byte = parse_byte_token(token)) {
        pending.push_back(*byte);
        ++pending_tokens;
        continue;
      }
      flush();
      out.push_back(std::move(token));
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static std::optional<char> parse_byte_token(const std::string& token) {
    if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>')
      return std::nullopt;
    int value = 0;
    for (int i = 3; i < 5; ++i) {
      char c = token[i];
      int digit = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                         : -1;
      if (digit < 0) return std::nullopt;
      value = value * 16 + digit;
    }
    return static_cast<char>(value);
  }
};

class FuseDecoder : public TokenDecoder {
 public:
  void decode_chain(std::vector<std::string>* tokens) const override {
    std::string all;
    for (const std::string& token : *tokens) all.append(token);
    tokens->assign(1, std::move(all));
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from each token.
class StripDecoder : public TokenDecoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (std::string& token : *tokens) {
      std::string_view view = token;
      for (size_t i = 0; i < start_ && view.starts_with(content_); ++i) {
        view.remove_prefix(content_.size());
      }
      for (size_t i = 0; i < stop_ && view.ends_with(content_); ++i) {
        view.remove_suffix(content_.size());
      }
      token = std::string(view);
    }
  }

 private:
  const std::string content_;
  const size_t start_;
  const size_t stop_;
};

// The replacement character ("▁") back to spaces; the first token loses the space that the
// pre-tokenizer prepended, unless it never prepends.
class MetaspaceDecoder : public TokenDecoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      std::string out;
      std::string_view token = (*tokens)[i];
      for (size_t pos = 0; pos < token.size();) {
        if (token.compare(pos, replacement_.size(), replacement_) == 0) {
          out.push_back(' ');
          pos += replacement_.size();
        } else {
          out.push_back(token[pos++]);
        }
      }
      if (i == 0 && strip_first_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
      (*tokens)[i] = std::move(out);
    }
  }

 private:
  const std::string replacement_;
  const bool strip_first_;
};

class SequenceDecoder : public TokenDecoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<TokenDecoder>> parts)
      : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>* tokens) const override {
    for (const auto& part : parts_) part->decode_chain(tokens);
  }

 private:
  const std::vector<std::unique_ptr<TokenDecoder>> parts_;
};

template <typename T, typename... Args>
std::unique_ptr<TokenDecoder> make(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

StatusOr<size_t> count_field(const json& spec, const char* key) {
  if (!spec.contains(key)) return size_t{0};
  if (!spec[key].is_number_unsigned()) {
    return invalid_argument(std::string("decoder Strip field '") + key + "' must be a count");
  }
  return spec[key].get<size_t>();
}

}  // namespace

StatusOr<std::unique_ptr<TokenDecoder>> make_token_decoder(const json& spec) {
  if (spec.is_null()) return std::unique_ptr<TokenDecoder>();
  ES_ASSIGN_OR_RETURN(const std::string type, component_type(spec, "decoder"));
  if (type == "ByteLevel") return make<ByteLevelDecoder>();
  if (type == "ByteFallback") return make<ByteFallbackDecoder>();
  if (type == "Fuse") return make<FuseDecoder>();
  if (type == "Replace") {
    if (!spec.contains("content") || !spec["content"].is_string()) {
      return invalid_argument("decoder Replace needs a string 'content'");
    }
    ES_ASSIGN_OR_RETURN(TokenizerPattern pattern,
                        TokenizerPattern::from_json(spec.value("pattern", json())));
    return make<ReplaceDecoder>(std::move(pattern), spec["content"].get<std::string>());
  }
  if (type == "Strip") {
    if (!spec.contains("content") || !spec["content"].is_string()) {
      return invalid_argument("decoder Strip needs a string 'content'");
    }
    ES_ASSIGN_OR_RETURN(size_t start, count_field(spec, "start"));
    ES_ASSIGN_OR_RETURN(size_t stop, count_field(spec, "stop"));
    return make<StripDecoder>(spec["content"].get<std::string>(), start, stop);
  }
  if (type == "Metaspace") {
    std::string replacement = spec.value("replacement", std::string("\xE2\x96\x81"));
    if (replacement.empty()) return invalid_argument("Metaspace replacement must not be empty");
    bool strip_first = spec.value("add_prefix_space", true);
    if (spec.contains("prepend_scheme") && spec["prepend_scheme"].is_string()) {
      strip_first = spec["prepend_scheme"].get<std::string>() != "never";
    }
    return make<MetaspaceDecoder>(std::move(replacement), strip_first);
  }
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(
        auto parts, sequence_parts<TokenDecoder>(spec, "decoders", "decoder", make_token_decoder));
    return make<SequenceDecoder>(std::move(parts));
  }
  return unimplemented("unsupported decoder type '" + type + "'");
}

}  // namespace earnserve
