#include "scheduler/recommendation/catalogue.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/logging.h"
#include "model/tokenizer/tokenizer.h"

namespace earnserve {

StatusOr<std::shared_ptr<const Catalogue>> Catalogue::load(const std::string& path,
                                                           const Tokenizer& tokenizer,
                                                           const std::string& titles_path) {
  std::ifstream in(path);
  if (!in) return not_found(path + ": cannot open catalogue");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(path + ": invalid JSON: " + e.what());
  }
  if (!doc.is_object() || doc.empty()) {
    return invalid_argument(path +
                            ": a catalogue is a non-empty JSON object of item id -> identifier");
  }
  std::vector<CatalogueItem> items;
  items.reserve(doc.size());
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    CatalogueItem item;
    item.id = it.key();
    const nlohmann::json& v = it.value();
    if (v.is_array()) {
      for (const nlohmann::json& t : v) {
        if (!t.is_string())
          return invalid_argument(path + ": item " + item.id + ": tokens must be strings");
        std::optional<int32_t> id = tokenizer.token_to_id(t.get<std::string>());
        if (!id) {
          return invalid_argument(path + ": item " + item.id + ": '" + t.get<std::string>() +
                                  "' is not a token of the model's tokenizer");
        }
        item.token_ids.push_back(*id);
        item.identifier += t.get<std::string>();
      }
    } else if (v.is_string()) {
      item.identifier = v.get<std::string>();
      item.token_ids = tokenizer.encode(item.identifier, /*add_special_tokens=*/false);
    } else {
      return invalid_argument(path + ": item " + item.id +
                              ": identifier must be a list or a string");
    }
    if (item.token_ids.empty())
      return invalid_argument(path + ": item " + item.id + " has no tokens");
    items.push_back(std::move(item));
  }
  if (!titles_path.empty()) {
    std::ifstream tin(titles_path);
    if (!tin) return not_found(titles_path + ": cannot open titles");
    std::unordered_map<std::string, std::string> titles;
    std::string line;
    while (std::getline(tin, line)) {
      size_t tab = line.find('\t');
      if (tab == std::string::npos) continue;
      titles[line.substr(0, tab)] = line.substr(tab + 1);
    }
    for (CatalogueItem& item : items) {
      auto t = titles.find(item.id);
      if (t != titles.end()) item.title = t->second;
    }
  }
  return from_items(std::move(items));
}

StatusOr<std::shared_ptr<const Catalogue>> Catalogue::from_items(std::vector<CatalogueItem> items) {
  std::shared_ptr<Catalogue> c(new Catalogue());
  c->items_ = std::move(items);
  ES_RETURN_IF_ERROR(c->build());
  return std::shared_ptr<const Catalogue>(std::move(c));
}

Status Catalogue::build() {
  // Build with ordered maps, then flatten into CSR with children sorted by token.
  std::vector<std::map<int32_t, int32_t>> children(1);
  std::vector<std::vector<int32_t>> terminals(1);
  std::vector<int32_t> depth(1, 0);
  for (size_t i = 0; i < items_.size(); ++i) {
    const CatalogueItem& item = items_[i];
    if (!index_by_id_.emplace(item.id, static_cast<int64_t>(i)).second) {
      return invalid_argument("catalogue: duplicate item id " + item.id);
    }
    int32_t node = kRoot;
    for (int32_t token : item.token_ids) {
      auto [it, inserted] = children[node].emplace(token, static_cast<int32_t>(children.size()));
      if (inserted) {
        children.emplace_back();
        terminals.emplace_back();
        depth.push_back(depth[node] + 1);
      }
      node = it->second;
    }
    terminals[node].push_back(static_cast<int32_t>(i));
  }
  const size_t num_nodes = children.size();
  child_begin_.assign(num_nodes + 1, 0);
  terminal_begin_.assign(num_nodes + 1, 0);
  for (size_t n = 0; n < num_nodes; ++n) {
    child_begin_[n + 1] = child_begin_[n] + static_cast<int32_t>(children[n].size());
    terminal_begin_[n + 1] = terminal_begin_[n] + static_cast<int32_t>(terminals[n].size());
    for (auto [token, child] : children[n]) {
      child_token_.push_back(token);
      child_node_.push_back(child);
    }
    terminal_item_.insert(terminal_item_.end(), terminals[n].begin(), terminals[n].end());
  }
  depth_ = std::move(depth);
  max_depth_ = *std::max_element(depth_.begin(), depth_.end());
  // Children always have larger ids than parents, so a reverse sweep sums subtrees.
  subtree_items_.assign(num_nodes, 0);
  for (size_t n = num_nodes; n-- > 0;) {
    subtree_items_[n] += terminal_begin_[n + 1] - terminal_begin_[n];
    for (int32_t c = child_begin_[n]; c < child_begin_[n + 1]; ++c) {
      subtree_items_[n] += subtree_items_[child_node_[c]];
    }
  }
  return Status::Ok();
}

int64_t Catalogue::find_item(const std::string& id) const {
  auto it = index_by_id_.find(id);
  return it == index_by_id_.end() ? -1 : it->second;
}

std::vector<size_t> Catalogue::nodes_per_depth() const {
  std::vector<size_t> counts(max_depth_ + 1, 0);
  for (int32_t d : depth_) ++counts[d];
  counts.erase(counts.begin());
  return counts;
}

std::span<const int32_t> Catalogue::child_tokens(int32_t node) const {
  return {child_token_.data() + child_begin_[node],
          static_cast<size_t>(child_begin_[node + 1] - child_begin_[node])};
}

std::span<const int32_t> Catalogue::child_nodes(int32_t node) const {
  return {child_node_.data() + child_begin_[node],
          static_cast<size_t>(child_begin_[node + 1] - child_begin_[node])};
}

int32_t Catalogue::child(int32_t node, int32_t token) const {
  std::span<const int32_t> tokens = child_tokens(node);
  auto it = std::lower_bound(tokens.begin(), tokens.end(), token);
  if (it == tokens.end() || *it != token) return -1;
  return child_node_[child_begin_[node] + (it - tokens.begin())];
}

std::span<const int32_t> Catalogue::terminal_items(int32_t node) const {
  return {terminal_item_.data() + terminal_begin_[node],
          static_cast<size_t>(terminal_begin_[node + 1] - terminal_begin_[node])};
}

int32_t Catalogue::walk(std::span<const int32_t> tokens) const {
  int32_t node = kRoot;
  for (int32_t t : tokens) {
    node = child(node, t);
    if (node < 0) return -1;
  }
  return node;
}

void Catalogue::allowed_tokens(int32_t node, const CatalogueExclusion* exclusion, int32_t eos_token,
                               std::vector<int32_t>& out) const {
  out.clear();
  std::span<const int32_t> tokens = child_tokens(node);
  std::span<const int32_t> nodes = child_nodes(node);
  bool eos_allowed = false;
  int32_t terminals = terminal_begin_[node + 1] - terminal_begin_[node];
  if (terminals > 0) {
    eos_allowed = exclusion == nullptr || terminals > exclusion->excluded_terminal(node);
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (eos_allowed && eos_token < tokens[i]) {
      out.push_back(eos_token);
      eos_allowed = false;
    }
    if (exclusion == nullptr ||
        subtree_items_[nodes[i]] > exclusion->excluded_in_subtree(nodes[i])) {
      out.push_back(tokens[i]);
    }
  }
  if (eos_allowed) out.push_back(eos_token);
}

CatalogueExclusion::CatalogueExclusion(const Catalogue& catalogue,
                                       std::span<const int64_t> item_indices) {
  for (int64_t index : item_indices) {
    if (index < 0 || static_cast<size_t>(index) >= catalogue.num_items()) continue;
    if (!items_.emplace(index, true).second) continue;
    const CatalogueItem& item = catalogue.item(index);
    int32_t node = Catalogue::kRoot;
    ++subtree_[node];
    for (int32_t t : item.token_ids) {
      node = catalogue.child(node, t);
      ++subtree_[node];
    }
    ++terminal_[node];
  }
}

int32_t CatalogueExclusion::excluded_in_subtree(int32_t node) const {
  auto it = subtree_.find(node);
  return it == subtree_.end() ? 0 : it->second;
}

int32_t CatalogueExclusion::excluded_terminal(int32_t node) const {
  auto it = terminal_.find(node);
  return it == terminal_.end() ? 0 : it->second;
}

CatalogueConstraint::CatalogueConstraint(std::shared_ptr<const Catalogue> catalogue,
                                         std::span<const int64_t> exclude_items, int32_t eos_token)
    : catalogue_(std::move(catalogue)), eos_token_(eos_token) {
  ES_CHECK(catalogue_ != nullptr);
  if (!exclude_items.empty()) {
    exclusion_ = std::make_unique<CatalogueExclusion>(*catalogue_, exclude_items);
  }
}

void CatalogueConstraint::allowed_tokens(int32_t node, std::vector<int32_t>& out) const {
  catalogue_->allowed_tokens(node, exclusion_.get(), eos_token_, out);
}

int32_t CatalogueConstraint::advance(int32_t node, int32_t token) const {
  const int32_t next = catalogue_->child(node, token);
  ES_CHECK_GE(next, 0);
  return next;
}

int64_t CatalogueConstraint::terminal_item(int32_t node) const {
  for (int32_t item : catalogue_->terminal_items(node)) {
    if (!exclusion_ || !exclusion_->is_excluded(item)) return item;
  }
  return -1;
}

bool CatalogueConstraint::forced_to_end(int32_t node) const {
  std::vector<int32_t> allowed;
  while (true) {
    // More than one child with no exclusions: not forced, without building the list.
    if (!exclusion_ && catalogue_->child_tokens(node).size() > 1) return false;
    allowed_tokens(node, allowed);
    if (allowed.size() != 1) return false;
    if (allowed[0] == eos_token_) return true;
    node = advance(node, allowed[0]);
  }
}

int64_t CatalogueConstraint::item_of(std::span<const int32_t> identifier) const {
  const int32_t node = catalogue_->walk(identifier);
  return node < 0 ? -1 : terminal_item(node);
}

}  // namespace earnserve
