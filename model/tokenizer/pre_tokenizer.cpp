#include "model/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "model/tokenizer/component_spec.h"
#include "model/tokenizer/regex.h"
#include "model/tokenizer/unicode_bytes.h"

namespace earnserve {
namespace {

using nlohmann::json;

// GPT-2's word pattern, used by ByteLevel when "use_regex" is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Cover of `size` bytes by the given matches and the gaps between them.
std::vector<SplitPiece> cover(const std::vector<std::pair<size_t, size_t>>& matches, size_t size,
                              bool invert) {
  std::vector<SplitPiece> pieces;
  size_t last = 0;
  for (auto [begin, end] : matches) {
    if (begin > last) pieces.push_back({last, begin, invert});
    pieces.push_back({begin, end, !invert});
    last = end;
  }
  if (last < size || pieces.empty()) pieces.push_back({last, size, invert});
  return pieces;
}

// Splits every piece by `pattern` with `behavior`.
void split_pieces(const TokenizerPattern& pattern, SplitBehavior behavior, bool invert,
                  std::vector<std::string>* pieces) {
  std::vector<std::string> out;
  out.reserve(pieces->size());
  for (const std::string& piece : *pieces) {
    auto ranges =
        apply_split_behavior(cover(pattern.find_all(piece), piece.size(), invert), behavior);
    for (auto [begin, end] : ranges) out.push_back(piece.substr(begin, end - begin));
  }
  *pieces = std::move(out);
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(TokenizerPattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<std::string>* pieces, bool) const override {
    split_pieces(pattern_, behavior_, invert_, pieces);
  }

 private:
  const TokenizerPattern pattern_;
  const SplitBehavior behavior_;
  const bool invert_;
};

// Spells the bytes of each piece in the byte-level alphabet, optionally after GPT-2's split.
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<TokenizerPattern> gpt2_pattern)
      : add_prefix_space_(add_prefix_space), gpt2_pattern_(std::move(gpt2_pattern)) {}
  void pre_tokenize(std::vector<std::string>* pieces, bool) const override {
    if (add_prefix_space_) {
      for (std::string& piece : *pieces) {
        if (!piece.empty() && piece[0] != ' ') piece.insert(piece.begin(), ' ');
      }
    }
    if (gpt2_pattern_ != nullptr) {
      split_pieces(*gpt2_pattern_, SplitBehavior::kIsolated, false, pieces);
    }
    for (std::string& piece : *pieces) piece = bytes_to_unicode(piece);
  }

 private:
  const bool add_prefix_space_;
  const std::unique_ptr<TokenizerPattern> gpt2_pattern_;  // null when use_regex is false
};

enum class PrependScheme { kAlways, kFirst, kNever };

// SentencePiece style: spaces become the replacement character ("▁"), which also starts words.
class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<std::string>* pieces, bool starts_input) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces->size(); ++i) {
      std::string piece;
      for (char c : (*pieces)[i]) {
        if (c == ' ') {
          piece.append(replacement_);
        } else {
          piece.push_back(c);
        }
      }
      bool prepend = scheme_ == PrependScheme::kAlways ||
                     (scheme_ == PrependScheme::kFirst && i == 0 && starts_input);
      if (prepend && piece.compare(0, replacement_.size(), replacement_) != 0) {
        piece.insert(0, replacement_);
      }
      if (!split_) {
        if (!piece.empty()) out.push_back(std::move(piece));
        continue;
      }
      std::vector<std::pair<size_t, size_t>> matches;
      for (size_t pos = piece.find(replacement_); pos != std::string::npos;
           pos = piece.find(replacement_, pos + replacement_.size())) {
        matches.emplace_back(pos, pos + replacement_.size());
      }
      for (auto [begin, end] : apply_split_behavior(cover(matches, piece.size(), false),
                                                    SplitBehavior::kMergedWithNext)) {
        out.push_back(piece.substr(begin, end - begin));
      }
    }
    *pieces = std::move(out);
  }

 private:
  const std::string replacement_;
  const PrependScheme scheme_;
  const bool split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<std::string>* pieces, bool starts_input) const override {
    for (const auto& part : parts_) part->pre_tokenize(pieces, starts_input);
  }

 private:
  const std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

template <typename T, typename... Args>
std::unique_ptr<PreTokenizer> make(Args&&... args) {
  return std::make_unique<T>(std::forward<Args>(args)...);
}

StatusOr<SplitBehavior> parse_behavior(const json& spec) {
  const std::string name = spec.is_string() ? spec.get<std::string>() : spec.dump();
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return unimplemented("unsupported Split behavior '" + name + "'");
}

StatusOr<std::unique_ptr<PreTokenizer>> make_metaspace(const json& spec) {
  std::string replacement = spec.value("replacement", std::string("\xE2\x96\x81"));
  PrependScheme scheme =
      spec.value("add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
  if (spec.contains("prepend_scheme") && spec["prepend_scheme"].is_string()) {
    const std::string name = spec["prepend_scheme"].get<std::string>();
    if (name == "always") {
      scheme = PrependScheme::kAlways;
    } else if (name == "first") {
      scheme = PrependScheme::kFirst;
    } else if (name == "never") {
      scheme = PrependScheme::kNever;
    } else {
      return unimplemented("unsupported Metaspace prepend_scheme '" + name + "'");
    }
  }
  if (replacement.empty()) return invalid_argument("Metaspace replacement must not be empty");
  return make<MetaspacePreTokenizer>(std::move(replacement), scheme, spec.value("split", true));
}

}  // namespace

std::vector<std::pair<size_t, size_t>> apply_split_behavior(const std::vector<SplitPiece>& pieces,
                                                            SplitBehavior behavior) {
  std::vector<std::pair<size_t, size_t>> kept;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      for (const SplitPiece& p : pieces) {
        if (!p.is_match) kept.emplace_back(p.begin, p.end);
      }
      break;
    case SplitBehavior::kIsolated:
      for (const SplitPiece& p : pieces) kept.emplace_back(p.begin, p.end);
      break;
    case SplitBehavior::kContiguous:
      // Runs of pieces with the same match state become one piece.
      for (size_t i = 0; i < pieces.size(); ++i) {
        if (i > 0 && pieces[i].is_match == previous_match) {
          kept.back().second = pieces[i].end;
        } else {
          kept.emplace_back(pieces[i].begin, pieces[i].end);
        }
        previous_match = pieces[i].is_match;
      }
      break;
    case SplitBehavior::kMergedWithPrevious:
      // A match joins the piece before it (the first in a run of matches only).
      for (const SplitPiece& p : pieces) {
        if (p.is_match && !previous_match && !kept.empty()) {
          kept.back().second = p.end;
        } else {
          kept.emplace_back(p.begin, p.end);
        }
        previous_match = p.is_match;
      }
      break;
    case SplitBehavior::kMergedWithNext:
      // A match joins the piece after it (the last in a run of matches only).
      for (size_t i = pieces.size(); i-- > 0;) {
        const SplitPiece& p = pieces[i];
        if (p.is_match && !previous_match && !kept.empty()) {
          kept.back().first = p.begin;
        } else {
          kept.emplace_back(p.begin, p.end);
        }
        previous_match = p.is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  std::erase_if(kept, [](const auto& range) { return range.first == range.second; });
  return kept;
}

StatusOr<std::unique_ptr<PreTokenizer>> make_pre_tokenizer(const json& spec) {
  if (spec.is_null()) return std::unique_ptr<PreTokenizer>();
  ES_ASSIGN_OR_RETURN(const std::string type, component_type(spec, "pre_tokenizer"));
  if (type == "Split") {
    ES_ASSIGN_OR_RETURN(TokenizerPattern pattern,
                        TokenizerPattern::from_json(spec.value("pattern", json())));
    ES_ASSIGN_OR_RETURN(SplitBehavior behavior, parse_behavior(spec.value("behavior", json())));
    return make<SplitPreTokenizer>(std::move(pattern), behavior, spec.value("invert", false));
  }
  if (type == "ByteLevel") {
    std::unique_ptr<TokenizerPattern> gpt2;
    if (spec.value("use_regex", true)) {
      ES_ASSIGN_OR_RETURN(TokenizerPattern pattern,
                          TokenizerPattern::from_json(json{{"Regex", kGpt2Pattern}}));
      gpt2 = std::make_unique<TokenizerPattern>(std::move(pattern));
    }
    return make<ByteLevelPreTokenizer>(spec.value("add_prefix_space", true), std::move(gpt2));
  }
  if (type == "Metaspace") return make_metaspace(spec);
  if (type == "Sequence") {
    ES_ASSIGN_OR_RETURN(
        auto parts,
        sequence_parts<PreTokenizer>(spec, "pretokenizers", "pre_tokenizer", make_pre_tokenizer));
    return make<SequencePreTokenizer>(std::move(parts));
  }
  return unimplemented("unsupported pre_tokenizer type '" + type + "'");
}

}  // namespace earnserve
