#include "model/tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <queue>

#include "model/tokenizer/json_reader.h"
#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

using nlohmann::json;

// Words longer than this are not cached (rare, and they would crowd out the common ones).
constexpr size_t kMaxCachedWordBytes = 256;
// The cache is emptied when it reaches this many words.
constexpr size_t kMaxCachedWords = 1 << 16;

}  // namespace

StatusOr<std::unique_ptr<BpeModel>> BpeModel::from_json(const json& spec) {
  if (!spec.is_object()) return invalid_argument("'model' must be an object");
  const std::string type = spec.value("type", std::string("BPE"));
  if (type != "BPE") return unimplemented("unsupported model type '" + type + "'");
  ES_ASSIGN_OR_RETURN(BpeTables tables, bpe_tables_from_json(spec));
  return from_tables(spec, std::move(tables));
}

StatusOr<std::unique_ptr<BpeModel>> BpeModel::from_tables(const json& spec, BpeTables tables) {
  if (!spec.is_object()) return invalid_argument("'model' must be an object");
  const std::string type = spec.value("type", std::string("BPE"));
  if (type != "BPE") return unimplemented("unsupported model type '" + type + "'");
  if (spec.contains("dropout") && !spec["dropout"].is_null()) {
    return unimplemented("BPE dropout is not supported");
  }
  std::unique_ptr<BpeModel> model(new BpeModel());
  model->vocab_.reserve(tables.vocab.size());
  int64_t max_id = -1;
  for (auto& [token, id] : tables.vocab) {
    if (id < 0 || id > INT32_MAX)
      return invalid_argument("vocab entry '" + token + "' has no valid id");
    max_id = std::max(max_id, id);
    model->vocab_.emplace(std::move(token), static_cast<int32_t>(id));
  }
  model->id_to_token_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : model->vocab_) model->id_to_token_[id] = &token;

  auto string_or_empty = [&](const char* key) {
    return spec.contains(key) && spec[key].is_string() ? spec[key].get<std::string>()
                                                       : std::string();
  };
  model->continuing_subword_prefix_ = string_or_empty("continuing_subword_prefix");
  model->end_of_word_suffix_ = string_or_empty("end_of_word_suffix");
  model->fuse_unk_ = spec.value("fuse_unk", false);
  model->byte_fallback_ = spec.value("byte_fallback", false);
  model->ignore_merges_ = spec.value("ignore_merges", false);
  if (spec.contains("unk_token") && spec["unk_token"].is_string()) {
    const std::string unk = spec["unk_token"].get<std::string>();
    std::optional<int32_t> id = model->token_to_id(unk);
    if (!id) return invalid_argument("unk_token '" + unk + "' is not in the vocabulary");
    model->unk_id_ = id;
  }
  if (model->byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      model->byte_ids_[b] = model->token_to_id(name);
    }
  }
  model->merges_.reserve(tables.merges.size());
  for (size_t rank = 0; rank < tables.merges.size(); ++rank) {
    const auto& [left, right] = tables.merges[rank];
    ES_RETURN_IF_ERROR(model->add_merge(left, right, static_cast<int32_t>(rank)));
  }
  return model;
}

Status BpeModel::add_merge(std::string_view left, std::string_view right, int32_t rank) {
  std::optional<int32_t> left_id = token_to_id(left);
  std::optional<int32_t> right_id = token_to_id(right);
  // With a continuing-subword prefix, the right part carries the prefix that the merge drops.
  std::string merged(left);
  std::string_view right_tail = right;
  if (!continuing_subword_prefix_.empty() && right_tail.starts_with(continuing_subword_prefix_)) {
    right_tail.remove_prefix(continuing_subword_prefix_.size());
  }
  merged.append(right_tail);
  std::optional<int32_t> merged_id = token_to_id(merged);
  if (!left_id || !right_id || !merged_id) {
    return invalid_argument("merge " + std::to_string(rank) + " ('" + std::string(left) + "', '" +
                            std::string(right) + "') uses a token that is not in the vocabulary");
  }
  // The first (lowest-rank) spelling of a pair wins.
  merges_.emplace(pair_key(*left_id, *right_id), Merge{rank, *merged_id});
  return Status::Ok();
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_limit()) return nullptr;
  return id_to_token_[id];
}

std::vector<int32_t> BpeModel::initial_symbols(std::string_view word) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  bool previous_unk = false;
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    size_t begin = pos;
    pos += utf8_lead_length(static_cast<unsigned char>(word[pos]));
    std::string_view ch = word.substr(begin, pos - begin);
    piece.clear();
    if (begin > 0) piece.append(continuing_subword_prefix_);
    piece.append(ch);
    if (pos >= word.size()) piece.append(end_of_word_suffix_);
    if (std::optional<int32_t> id = token_to_id(piece)) {
      symbols.push_back(*id);
      previous_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : ch) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)].has_value();
      if (all_bytes) {
        for (char c : ch) symbols.push_back(*byte_ids_[static_cast<uint8_t>(c)]);
        previous_unk = false;
        continue;
      }
    }
    // Without an unk token, characters outside the vocabulary are dropped.
    if (!unk_id_) continue;
    if (!(fuse_unk_ && previous_unk)) symbols.push_back(*unk_id_);
    previous_unk = true;
  }
  return symbols;
}

void BpeModel::apply_merges(std::vector<int32_t>* symbols) const {
  const int n = static_cast<int>(symbols->size());
  if (n < 2) return;
  std::vector<int32_t>& ids = *symbols;
  std::vector<int> next(n);
  std::vector<int> prev(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  // Candidate merges, lowest rank first and leftmost first among equal ranks. Entries go stale
  // when a neighbour merges; they are checked again when popped.
  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int left) {
    int right = next[left];
    if (right < 0) return;
    auto it = merges_.find(pair_key(ids[left], ids[right]));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.new_id});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);

  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    int left = top.pos;
    if (!alive[left] || next[left] < 0) continue;
    int right = next[left];
    auto it = merges_.find(pair_key(ids[left], ids[right]));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;
    ids[left] = top.new_id;
    alive[right] = false;
    next[left] = next[right];
    if (next[left] >= 0) prev[next[left]] = left;
    if (prev[left] >= 0) push_pair(prev[left]);
    push_pair(left);
  }
  size_t out = 0;
  for (int i = 0; i >= 0; i = next[i]) ids[out++] = ids[i];
  ids.resize(out);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (std::optional<int32_t> id = token_to_id(word)) {
      ids->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols = initial_symbols(word);
  apply_merges(&symbols);
  ids->insert(ids->end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= kMaxCachedWords) cache_.clear();
    cache_.emplace(std::string(word), std::move(symbols));
  }
}

}  // namespace earnserve
