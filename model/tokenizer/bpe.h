// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}): vocabulary, merge ranks,
// byte fallback and unknown-token handling. Turns one pre-tokenized word into token ids.
// Immutable after from_json() except for the word cache, which is guarded by a mutex, so
// tokenize() may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"

namespace earnserve {

// Hash and equality that let unordered_map<std::string, V> be searched with a string_view.
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
using TokenIdMap = std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>>;

// The "vocab" and "merges" of a BPE model, in file order (see json_reader.h).
struct BpeTables {
  std::vector<std::pair<std::string, int64_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
};

class BpeModel {
 public:
  // Builds the model from a tokenizer.json "model" object. Errors (InvalidArgument /
  // Unimplemented) say which field is wrong: a non-BPE type, dropout, a merge naming a token
  // that is not in the vocabulary, an unk_token missing from the vocabulary.
  static StatusOr<std::unique_ptr<BpeModel>> from_json(const nlohmann::json& spec);
  // Same, with "vocab" and "merges" given separately; `spec`'s
  // own vocab and merges are ignored.
  static StatusOr<std::unique_ptr<BpeModel>> from_tables(const nlohmann::json& spec,
                                                         BpeTables tables);
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of `word` to `ids`. REQUIRES: word is valid UTF-8.
  void tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token with this id; nullptr when the vocabulary has no such id.
  const std::string* id_to_token(int32_t id) const;
  // Largest id in the vocabulary + 1.
  int32_t id_limit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  BpeModel() = default;
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  Status add_merge(std::string_view left, std::string_view right, int32_t rank);
  // Initial symbols of `word`: one per character, byte tokens or unk where the vocabulary lacks it.
  std::vector<int32_t> initial_symbols(std::string_view word) const;
  void apply_merges(std::vector<int32_t>* symbols) const;

  // Constant after construction
  TokenIdMap vocab_;
  std::vector<const std::string*> id_to_token_;  // keys of vocab_; null for unused ids
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::optional<int32_t> byte_ids_[256];  // "<0xNN>" tokens, when byte_fallback is on

  // Guarded by cache_mu_: ids of recently seen short words.
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringViewHash, std::equal_to<>>
      cache_;
};

}  // namespace earnserve
