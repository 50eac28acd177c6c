// Added tokens of a tokenizer.json ("added_tokens": special tokens like <|im_start|> and extra
// words): finding them in text before the model runs, leftmost-longest, with the single_word,
// lstrip and rstrip rules. Immutable after construction; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace earnserve {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  // Matched against normalized text (its pattern is the normalized content) instead of raw text.
  bool normalized = false;
  bool single_word = false;  // only matches when not inside a word
  bool lstrip = false;       // swallows white space on its left
  bool rstrip = false;       // swallows white space on its right
};

// A piece of text after splitting on added tokens: [begin, end) bytes, and the index of the
// matched added token, or -1 for ordinary text.
struct TextSegment {
  size_t begin;
  size_t end;
  int token_index;
};

class AddedTokenSplitter {
 public:
  // `patterns[i]` is the text that stands for `tokens[token_indices[i]]`; REQUIRES: the vectors
  // have equal sizes and `tokens` outlives the splitter.
  AddedTokenSplitter(const std::vector<AddedToken>* tokens,
                     const std::vector<std::string>& patterns,
                     const std::vector<int>& token_indices);

  bool empty() const { return nodes_.size() == 1; }

  // Covers `text` with segments, in order. Empty text gives one empty ordinary segment.
  // REQUIRES: text is valid UTF-8.
  std::vector<TextSegment> split(std::string_view text) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int token_index = -1;  // a pattern ends here
  };
  int child(int node, unsigned char c) const;
  // Longest pattern starting at text[pos]: its end and token index, or token index -1.
  std::pair<size_t, int> longest_at(std::string_view text, size_t pos) const;

  // Constant after construction
  const std::vector<AddedToken>* tokens_;
  std::vector<Node> nodes_;  // a byte trie; nodes_[0] is the root
  bool first_byte_[256] = {};
};

}  // namespace earnserve
