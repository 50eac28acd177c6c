// Tokenizer: a Hugging Face tokenizer.json (byte-level BPE of Qwen2/Llama 3, SentencePiece-style
// BPE with byte fallback) plus the bos/eos names and chat template of tokenizer_config.json.
// encode() runs added-token splitting, normalizer, pre-tokenizer, BPE and post-processor;
// decode() runs the decoder. Immutable after loading except for the BPE word cache (internally
// locked): encode() and decode() may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe.h"

namespace earnserve {

class Normalizer;
class PostProcessor;
class PreTokenizer;
class TokenDecoder;

class Tokenizer {
 public:
  // Loads a tokenizer.json. Errors name the file: missing or unreadable, invalid JSON, an
  // unsupported model or component type.
  static StatusOr<std::unique_ptr<Tokenizer>> from_file(const std::string& path);
  // Loads dir/tokenizer.json and, when present, dir/tokenizer_config.json (bos_token, eos_token,
  // chat_template; a dir/chat_template.jinja is used when the config has no template).
  static StatusOr<std::unique_ptr<Tokenizer>> from_dir(const std::string& dir);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`. Added tokens written in the text (e.g. "<|im_start|>") are always
  // recognised; `add_special_tokens` applies the post-processor (e.g. a leading BOS). Invalid
  // UTF-8 in `text` is replaced by U+FFFD first.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;

  // Text of `ids`; ids outside the vocabulary are ignored. `skip_special_tokens` drops the ids
  // of special added tokens. Byte sequences that are not valid UTF-8 come out as U+FFFD.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  // Largest id of the vocabulary or the added tokens + 1.
  int32_t vocab_size() const { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token spelled as in the vocabulary (byte-level alphabet, "▁", added token content);
  // empty for an unknown id.
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

  std::optional<int32_t> bos_token_id() const { return bos_token_id_; }
  std::optional<int32_t> eos_token_id() const { return eos_token_id_; }
  // The Jinja chat template of tokenizer_config.json; empty when there is none.
  const std::string& chat_template() const { return chat_template_; }

 private:
  Tokenizer() = default;
  // Builds everything from the parsed tokenizer.json; errors carry no file name yet.
  Status init(const nlohmann::json& root, BpeTables bpe);
  Status init_added_tokens(const nlohmann::json& list);
  // Reads bos/eos/chat_template from a parsed tokenizer_config.json.
  Status apply_config(const nlohmann::json& config);
  // Normalizes, splits on normalized added tokens and runs pre-tokenizer and model over one
  // stretch of raw text that holds no raw added token.
  void encode_segment(std::string_view text, bool starts_input, std::vector<int32_t>* ids) const;
  const AddedToken* added_token(int32_t id) const;

  // Constant after construction
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;         // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer_;    // may be null
  std::unique_ptr<PostProcessor> post_processor_;  // may be null
  std::unique_ptr<TokenDecoder> decoder_;          // may be null
  std::vector<AddedToken> added_tokens_;
  // What the decoder gets for each added token: its content, or for a normalized token the
  // normalized content (e.g. "▁<|start_story|>"), as Hugging Face tokenizers does.
  std::vector<std::string> added_decode_forms_;
  std::unordered_map<int32_t, int> added_index_by_id_;
  TokenIdMap added_id_by_content_;
  std::unique_ptr<AddedTokenSplitter> raw_splitter_;         // tokens with normalized=false
  std::unique_ptr<AddedTokenSplitter> normalized_splitter_;  // tokens with normalized=true
  int32_t vocab_size_ = 0;
  std::optional<int32_t> bos_token_id_;
  std::optional<int32_t> eos_token_id_;
  std::string chat_template_;
};

}  // namespace earnserve
