// Catalogue: the items a recommender may return, each identified by a short sequence of tokens
// (LC-Rec style "<a_47><b_103><c_234><d_99>" codes, or any text), compiled into a token trie.
// Constrained decoding asks the trie which tokens may follow a prefix; only those are scored, so
// a step costs O(allowed tokens), not O(vocabulary). Several items may share one identifier.
// Immutable after load; safe to share across threads. Per-request exclusions live in
// CatalogueExclusion, owned by the request.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/status.h"

namespace earnserve {

class Tokenizer;

struct CatalogueItem {
  std::string id;                  // the catalogue's key, e.g. "1954"
  std::string identifier;          // the identifier text, e.g. "<a_47><b_103><c_234><d_99>"
  std::vector<int32_t> token_ids;  // the identifier as tokens
  std::string title;               // empty when the catalogue has no titles
};

class CatalogueExclusion;

class Catalogue {
 public:
  static constexpr int32_t kRoot = 0;

  // Loads a JSON object mapping item id -> list of token strings (each must be one token of the
  // tokenizer) or -> a string (tokenised without special tokens). `titles_path` (may be empty):
  // a TSV of `id<TAB>title` lines.
  static StatusOr<std::shared_ptr<const Catalogue>> load(const std::string& path,
                                                         const Tokenizer& tokenizer,
                                                         const std::string& titles_path = "");
  // Builds from items directly (token_ids filled in).
  static StatusOr<std::shared_ptr<const Catalogue>> from_items(std::vector<CatalogueItem> items);

  size_t num_items() const { return items_.size(); }
  size_t num_nodes() const { return child_begin_.size() - 1; }
  const CatalogueItem& item(size_t index) const { return items_[index]; }
  // Index of an item by its catalogue id, or -1.
  int64_t find_item(const std::string& id) const;
  // Number of trie nodes at each depth (depth 1 = first token).
  std::vector<size_t> nodes_per_depth() const;
  int max_depth() const { return max_depth_; }

  // Children of a node: tokens ascending, with the child node of each.
  std::span<const int32_t> child_tokens(int32_t node) const;
  std::span<const int32_t> child_nodes(int32_t node) const;
  // The child reached by `token`, or -1.
  int32_t child(int32_t node, int32_t token) const;
  // Items whose identifier ends exactly at this node (catalogue order).
  std::span<const int32_t> terminal_items(int32_t node) const;
  int32_t subtree_items(int32_t node) const { return subtree_items_[node]; }

  // Walks a token sequence from the root; -1 when it leaves the trie.
  int32_t walk(std::span<const int32_t> tokens) const;

  // The tokens allowed after reaching `node`: children with an item not excluded, then
  // `eos_token` if an item not excluded ends here. Written to `out` (cleared first), ascending.
  void allowed_tokens(int32_t node, const CatalogueExclusion* exclusion, int32_t eos_token,
                      std::vector<int32_t>& out) const;

 private:
  Catalogue() = default;
  Status build();

  std::vector<CatalogueItem> items_;
  std::unordered_map<std::string, int64_t> index_by_id_;
  // CSR trie: node n's children are [child_begin_[n], child_begin_[n + 1]).
  std::vector<int32_t> child_begin_;
  std::vector<int32_t> child_token_;
  std::vector<int32_t> child_node_;
  std::vector<int32_t> terminal_begin_;  // CSR of terminal item indices per node
  std::vector<int32_t> terminal_item_;
  std::vector<int32_t> subtree_items_;
  std::vector<int32_t> depth_;
  int max_depth_ = 0;
};

// Items one request must not receive (e.g. the user's history), as counts along trie paths.
class CatalogueExclusion {
 public:
  CatalogueExclusion(const Catalogue& catalogue, std::span<const int64_t> item_indices);
  int32_t excluded_in_subtree(int32_t node) const;
  int32_t excluded_terminal(int32_t node) const;
  bool is_excluded(int64_t item_index) const { return items_.count(item_index) > 0; }

 private:
  std::unordered_map<int32_t, int32_t> subtree_;
  std::unordered_map<int32_t, int32_t> terminal_;
  std::unordered_map<int64_t, bool> items_;
};

// One request's catalogue constraint: the catalogue, the items the request excludes and the
// end-of-item token. The one place that says which tokens a constrained sequence may take next,
// where its trie node goes after a token, and which item a finished identifier names; plain
// beams, sampling, speculative verification and the drafter all ask it. Owned by the request's
// SequenceGroup; immutable, so safe to read from any thread.
class CatalogueConstraint {
 public:
  // REQUIRES: catalogue non-null. `exclude_items`: catalogue item indices (may be empty).
  CatalogueConstraint(std::shared_ptr<const Catalogue> catalogue,
                      std::span<const int64_t> exclude_items, int32_t eos_token);

  const Catalogue& catalogue() const { return *catalogue_; }
  int32_t eos_token() const { return eos_token_; }

  // Catalogue::allowed_tokens under the request's exclusions (ascending, `out` cleared first).
  void allowed_tokens(int32_t node, std::vector<int32_t>& out) const;
  // The trie node after `token`. REQUIRES: `token` is a child of `node` (allowed, not the
  // end-of-item token).
  int32_t advance(int32_t node, int32_t token) const;
  // The node after `token`, or -1 when it leaves the trie (the end-of-item token does).
  int32_t child(int32_t node, int32_t token) const { return catalogue_->child(node, token); }
  // The first item ending at `node` that the request does not exclude, or -1.
  int64_t terminal_item(int32_t node) const;
  // The item a whole identifier (without its end-of-item token) names, or -1.
  int64_t item_of(std::span<const int32_t> identifier) const;
  // True when every token after `node` is forced: one allowed token at each step, down to and
  // including the end-of-item token (the one item not excluded below `node` and no other
  // identifier). Scored over the catalogue, each such token has log-probability 0.
  bool forced_to_end(int32_t node) const;

 private:
  std::shared_ptr<const Catalogue> catalogue_;
  std::unique_ptr<CatalogueExclusion> exclusion_;  // null when nothing is excluded
  int32_t eos_token_;
};

}  // namespace earnserve
