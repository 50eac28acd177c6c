#include "model/tokenizer/incremental_detokenizer.h"

#include <algorithm>

#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

// Prompt tokens kept as decoding context: enough to cover a multi-byte character or a
// "▁"-prefixed word across the prompt boundary.
constexpr size_t kPromptContextTokens = 6;

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::span<const int32_t> prompt_ids,
                                               bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {
  size_t context = std::min(prompt_ids.size(), kPromptContextTokens);
  ids_.assign(prompt_ids.end() - static_cast<std::ptrdiff_t>(context), prompt_ids.end());
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
}

std::string IncrementalDetokenizer::append(int32_t id) {
  ids_.push_back(id);
  return emit_pending(/*force=*/false);
}

std::string IncrementalDetokenizer::flush() { return emit_pending(/*force=*/true); }

std::string IncrementalDetokenizer::emit_pending(bool force) {
  if (read_offset_ == ids_.size()) return std::string();
  std::span<const int32_t> all(ids_);
  std::string prefix_text = tokenizer_.decode(
      all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_tokens_);
  std::string new_text = tokenizer_.decode(all.subspan(prefix_offset_), skip_special_tokens_);
  // A trailing U+FFFD usually means a character whose remaining bytes are still to come.
  if (!force && std::string_view(new_text).ends_with(kReplacementChar)) return std::string();
  if (!force && new_text.size() <= prefix_text.size()) return std::string();
  std::string delta =
      new_text.size() > prefix_text.size() ? new_text.substr(prefix_text.size()) : std::string();
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  // Drop ids that are no longer needed as context, keeping memory bounded.
  if (prefix_offset_ > 0) {
    ids_.erase(ids_.begin(), ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_));
    read_offset_ -= prefix_offset_;
    prefix_offset_ = 0;
  }
  return delta;
}

}  // namespace earnserve
