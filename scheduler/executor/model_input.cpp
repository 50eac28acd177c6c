#include "scheduler/executor/model_input.h"

#include <algorithm>
#include <climits>

#include "cache/kv_group_spec.h"
#include "core/logging.h"

namespace earnserve {
namespace {

Tensor on_device(const Tensor& t, Device device) {
  if (device == Device::kCPU) return t;
  StatusOr<Tensor> moved = t.to(device);
  ES_CHECK(moved.ok()) << moved.status().to_string();
  return std::move(moved).value();
}

// Sequences of one request (beams, parallel samples) whose block tables start with the same
// pages share those pages in attention: the kernel reads them once for all of them. The shared
// length is the common run of block ids, in whole blocks, and never more than any member's KV
// before this step's queries.
void add_shared_prefixes(const SchedulerStep& step, const std::vector<int32_t>& tables,
                         int max_blocks, const std::vector<int32_t>& seq_lens,
                         const std::vector<int32_t>& query_start, int block_size, Device device,
                         AttentionMetadata& meta) {
  const int num_seqs = static_cast<int>(step.seqs.size());
  std::vector<int32_t> seq_prefix(num_seqs, -1), prefix_lens;
  for (int i = 0; i < num_seqs;) {
    int j = i + 1;
    while (j < num_seqs && step.seqs[j].group == step.seqs[i].group) ++j;
    if (j - i >= 2) {
      int common = max_blocks;
      int context = INT32_MAX;
      for (int m = i; m < j; ++m) {
        const int32_t* a = &tables[static_cast<size_t>(i) * max_blocks];
        const int32_t* b = &tables[static_cast<size_t>(m) * max_blocks];
        int same = 0;
        while (same < common && a[same] == b[same]) ++same;
        common = same;
        context = std::min(context, seq_lens[m] - (query_start[m + 1] - query_start[m]));
      }
      const int shared = std::min(common, context / block_size) * block_size;
      if (shared > 0) {
        for (int m = i; m < j; ++m) seq_prefix[m] = static_cast<int32_t>(prefix_lens.size());
        prefix_lens.push_back(shared);
      }
    }
    i = j;
  }
  if (prefix_lens.empty()) return;
  meta.seq_prefix = on_device(Tensor::from_vector(seq_prefix), device);
  meta.prefix_lens = on_device(Tensor::from_vector(prefix_lens), device);
}

// One KV layer group's attention metadata for the step. `rows` receives, for a marked group
// (EARN's layers above the split), the batch rows of the tokens that keep KV there.
AttentionMetadata build_group_metadata(const SchedulerStep& step, const BlockManager& bm, int g,
                                       const std::vector<int>& row_begin,
                                       const std::vector<int32_t>& parents, bool has_tree,
                                       Device device, std::vector<int32_t>& rows) {
  const int num_seqs = static_cast<int>(step.seqs.size());
  const bool marked = bm.group_spec(g).rule == TokenRule::kMarkedTokens;
  int max_blocks = 1;
  for (const ScheduledSeq& s : step.seqs) {
    max_blocks = std::max(max_blocks, bm.num_blocks(s.seq->kv_id, g));
  }
  std::vector<int32_t> slots, tables(static_cast<size_t>(num_seqs) * max_blocks, 0),
      seq_lens(num_seqs), query_start(num_seqs + 1, 0), group_parents;
  for (int i = 0; i < num_seqs; ++i) {
    const ScheduledSeq& s = step.seqs[i];
    const std::vector<int>& table = bm.block_table(s.seq->kv_id, g);
    std::copy(table.begin(), table.end(), tables.begin() + static_cast<size_t>(i) * max_blocks);
    const int num_tree = static_cast<int>(step.tree_tokens(i).size());
    if (!marked) {
      const int n = s.count + num_tree;
      const size_t at = slots.size();
      slots.resize(at + n);
      bm.write_slot_mapping(s.seq->kv_id, g, s.start, std::span<int32_t>(slots.data() + at, n));
      if (has_tree) {
        group_parents.insert(group_parents.end(), parents.begin() + row_begin[i],
                             parents.begin() + row_begin[i + 1]);
      }
      seq_lens[i] = s.start + n;
    } else {
      // Only kept tokens take part; the KV length counts kept tokens up to the chunk's end.
      const std::vector<uint8_t>& kept = s.seq->kept;
      int kept_before = 0;
      for (int t = 0; t < s.start; ++t) kept_before += kept[t];
      int local = 0;
      for (int t = 0; t < s.count; ++t) {
        if (!kept[s.start + t]) continue;
        rows.push_back(row_begin[i] + t);
        slots.push_back(bm.slot(s.seq->kv_id, g, s.start + t));
        if (has_tree) group_parents.push_back(local - 1);
        ++local;
        ++kept_before;
      }
      // Drafted nodes are generated tokens, kept everywhere; their chunk must be too, so the
      // sequence's rows keep their indices in this group.
      ES_CHECK(num_tree == 0 || local == s.count) << "a drafted tree follows unkept tokens";
      for (int t = 0; t < num_tree; ++t) {
        rows.push_back(row_begin[i] + s.count + t);
        slots.push_back(bm.slot(s.seq->kv_id, g, s.start + s.count + t));
        group_parents.push_back(parents[row_begin[i] + s.count + t]);
        ++kept_before;
      }
      seq_lens[i] = kept_before;
    }
    query_start[i + 1] = static_cast<int32_t>(slots.size());
  }
  AttentionMetadata meta;
  add_shared_prefixes(step, tables, max_blocks, seq_lens, query_start, bm.block_size(g), device,
                      meta);
  if (marked) meta.token_indices = on_device(Tensor::from_vector(rows), device);
  if (has_tree) meta.query_parents = on_device(Tensor::from_vector(group_parents), device);
  meta.slot_mapping = on_device(Tensor::from_vector(slots), device);
  meta.block_tables = on_device(Tensor::from_vector(tables, {num_seqs, max_blocks}), device);
  meta.seq_lens = on_device(Tensor::from_vector(seq_lens), device);
  meta.query_start_loc = on_device(Tensor::from_vector(query_start), device);
  return meta;
}

}  // namespace

ModelInput build_model_input(const SchedulerStep& step, const BlockManager& bm, int num_layers,
                             Device device, std::span<const int32_t> logits_tokens) {
  const int num_seqs = static_cast<int>(step.seqs.size());
  // Rows of each sequence: its chunk, then its drafted tree nodes (if any).
  std::vector<int> row_begin(num_seqs + 1, 0);
  bool has_tree = false;
  for (int i = 0; i < num_seqs; ++i) {
    const ScheduledSeq& s = step.seqs[i];
    const DraftedRows tree = step.trees.empty() ? DraftedRows{} : step.trees[i];
    ES_CHECK(tree.tokens.empty() || s.needs_logits) << "a drafted tree follows a partial chunk";
    ES_CHECK_EQ(tree.tokens.size(), tree.parents.size());
    has_tree = has_tree || !tree.tokens.empty();
    row_begin[i + 1] = row_begin[i] + s.count + static_cast<int>(tree.tokens.size());
  }
  const int num_tokens = row_begin[num_seqs];
  std::vector<int32_t> token_ids(num_tokens), positions(num_tokens), logits_rows;
  // With trees: each row's parent among its sequence's rows (-1 = a child of the context).
  std::vector<int32_t> parents(has_tree ? num_tokens : 0);
  for (int i = 0; i < num_seqs; ++i) {
    const ScheduledSeq& s = step.seqs[i];
    const DraftedRows tree = step.trees.empty() ? DraftedRows{} : step.trees[i];
    int row = row_begin[i];
    for (int j = 0; j < s.count; ++j, ++row) {
      token_ids[row] = s.seq->tokens[s.start + j];
      positions[row] = s.start + j;
      if (has_tree) parents[row] = j - 1;
    }
    if (s.needs_logits) logits_rows.push_back(row - 1);
    // A node at depth d below the chunk's last token sits at that token's position + d.
    for (size_t t = 0; t < tree.tokens.size(); ++t, ++row) {
      const int32_t parent = tree.parents[t];
      ES_CHECK_LT(parent, static_cast<int32_t>(t)) << "tree node " << t;
      const int parent_local = parent < 0 ? s.count - 1 : s.count + parent;
      token_ids[row] = tree.tokens[t];
      positions[row] = positions[row_begin[i] + parent_local] + 1;
      parents[row] = parent_local;
      logits_rows.push_back(row);
    }
  }
  ModelInput input;
  input.num_logits = static_cast<int>(logits_rows.size());
  ForwardBatch& batch = input.batch;
  std::vector<int32_t> last_group_rows;
  batch.token_ids = on_device(Tensor::from_vector(token_ids), device);
  batch.positions = on_device(Tensor::from_vector(positions), device);

  for (int g = 0; g < bm.num_groups(); ++g) {
    std::vector<int32_t> rows;
    batch.groups.push_back(
        build_group_metadata(step, bm, g, row_begin, parents, has_tree, device, rows));
    if (bm.group_spec(g).rule == TokenRule::kMarkedTokens) last_group_rows = std::move(rows);
  }
  // Logits rows index the last group's tokens: map batch rows to positions among them.
  if (!last_group_rows.empty()) {
    for (int32_t& r : logits_rows) {
      auto it = std::lower_bound(last_group_rows.begin(), last_group_rows.end(), r);
      ES_CHECK(it != last_group_rows.end() && *it == r)
          << "a token whose logits are wanted keeps no KV in the last layer group";
      r = static_cast<int32_t>(it - last_group_rows.begin());
    }
  }
  batch.logits_indices = on_device(Tensor::from_vector(logits_rows), device);
  if (!logits_tokens.empty()) {
    batch.logits_token_ids = on_device(
        Tensor::from_vector(std::vector<int32_t>(logits_tokens.begin(), logits_tokens.end())),
        device);
  }
  batch.layer_group.assign(num_layers, 0);
  for (int g = 0; g < bm.num_groups(); ++g) {
    for (int layer : bm.group_spec(g).layers) batch.layer_group[layer] = g;
  }
  return input;
}

void wrap_prompt(const ModelConfig& config, std::span<const int32_t> prompt,
                 std::vector<int32_t>& tokens, std::vector<uint8_t>& kept) {
  tokens.clear();
  kept.clear();
  const std::optional<EarnConfig>& earn = config.earn;
  if (!earn) {
    tokens.assign(prompt.begin(), prompt.end());
    kept.assign(tokens.size(), 1);
    return;
  }
  size_t start = 0;
  if (!prompt.empty() && config.bos_token_id >= 0 && prompt[0] == config.bos_token_id) {
    tokens.push_back(prompt[0]);
    kept.push_back(0);
    start = 1;
  }
  for (int32_t r : earn->prefix_register_ids) {
    tokens.push_back(r);
    kept.push_back(1);
  }
  for (size_t i = start; i < prompt.size(); ++i) {
    tokens.push_back(prompt[i]);
    kept.push_back(0);
  }
  for (int32_t r : earn->suffix_register_ids) {
    tokens.push_back(r);
    kept.push_back(1);
  }
}

}  // namespace earnserve
