// IncrementalDetokenizer: turns a stream of generated token ids into text pieces for streaming.
// Each append() returns only newly completed text, never a split multi-byte character, so that
// the pieces of append() followed by flush() concatenate to decode(prompt + generated) minus
// decode(prompt) (for the usual case where the latter is a prefix of the former).
// Re-decodes a short window of recent ids per call, so each call costs O(window), not O(length).
// Borrows the Tokenizer, which must outlive it. Not thread-safe: one per request stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"

namespace earnserve {

class IncrementalDetokenizer {
 public:
  // `prompt_ids` give the context the first generated tokens are decoded in (a space or a byte
  // sequence may depend on it); their own text is not returned.
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer,
                                  std::span<const int32_t> prompt_ids = {},
                                  bool skip_special_tokens = true);

  // Adds one generated id; returns the text it completes (often empty while a multi-byte
  // character or a byte-fallback sequence is still open).
  std::string append(int32_t id);

  // Returns text still held back at the end of the stream (an incomplete character comes out as
  // U+FFFD, as decode() would give it).
  std::string flush();

 private:
  // Returns the text of the ids not emitted yet and marks them emitted, unless that text may
  // still change (ends in U+FFFD or adds nothing); `force` returns it regardless.
  std::string emit_pending(bool force);

  // Constant after construction
  const Tokenizer& tokenizer_;
  const bool skip_special_tokens_;

  std::vector<int32_t> ids_;
  // ids_[prefix_offset_, read_offset_) were already emitted and serve as decoding context;
  // ids_[read_offset_, end) are not emitted yet.
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace earnserve
