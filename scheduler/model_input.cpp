#include "scheduler/model_input.h"

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

}  // namespace

ModelInput build_model_input(const SchedulerStep& step, const BlockManager& bm, int num_layers,
                             Device device) {
  const int num_tokens = step.num_tokens;
  const int num_seqs = static_cast<int>(step.seqs.size());
  std::vector<int32_t> token_ids(num_tokens), positions(num_tokens), logits_rows;
  {
    int row = 0;
    for (const ScheduledSeq& s : step.seqs) {
      for (int i = 0; i < s.count; ++i, ++row) {
        token_ids[row] = s.seq->tokens[s.start + i];
        positions[row] = s.start + i;
      }
      if (s.needs_logits) logits_rows.push_back(row - 1);
    }
  }
  ModelInput input;
  input.num_logits = static_cast<int>(logits_rows.size());
  ForwardBatch& batch = input.batch;
  std::vector<int32_t> last_group_rows;
  batch.token_ids = on_device(Tensor::from_vector(token_ids), device);
  batch.positions = on_device(Tensor::from_vector(positions), device);

  // Row of each scheduled token in the batch, for groups that keep only some tokens.
  std::vector<int> row_begin(num_seqs + 1, 0);
  for (int i = 0; i < num_seqs; ++i) row_begin[i + 1] = row_begin[i] + step.seqs[i].count;

  for (int g = 0; g < bm.num_groups(); ++g) {
    const bool marked = bm.group_spec(g).rule == TokenRule::kMarkedTokens;
    int max_blocks = 1;
    for (const ScheduledSeq& s : step.seqs) {
      max_blocks = std::max(max_blocks, bm.num_blocks(s.seq->kv_id, g));
    }
    std::vector<int32_t> rows, slots, tables(static_cast<size_t>(num_seqs) * max_blocks, 0),
        seq_lens(num_seqs), query_start(num_seqs + 1, 0);
    for (int i = 0; i < num_seqs; ++i) {
      const ScheduledSeq& s = step.seqs[i];
      const std::vector<int>& table = bm.block_table(s.seq->kv_id, g);
      std::copy(table.begin(), table.end(), tables.begin() + static_cast<size_t>(i) * max_blocks);
      if (!marked) {
        const size_t at = slots.size();
        slots.resize(at + s.count);
        bm.write_slot_mapping(s.seq->kv_id, g, s.start, std::span<int32_t>(slots.data() + at, s.count));
        seq_lens[i] = s.start + s.count;
      } else {
        // Only kept tokens take part; the KV length counts kept tokens up to the chunk's end.
        const std::vector<uint8_t>& kept = s.seq->kept;
        int kept_before = 0;
        for (int t = 0; t < s.start; ++t) kept_before += kept[t];
        for (int t = 0; t < s.count; ++t) {
          if (!kept[s.start + t]) continue;
          rows.push_back(row_begin[i] + t);
          slots.push_back(bm.slot(s.seq->kv_id, g, s.start + t));
          ++kept_before;
        }
        seq_lens[i] = kept_before;
      }
      query_start[i + 1] = static_cast<int32_t>(slots.size());
    }
    AttentionMetadata meta;
    add_shared_prefixes(step, tables, max_blocks, seq_lens, query_start, bm.block_size(), device,
                        meta);
    if (marked) meta.token_indices = on_device(Tensor::from_vector(rows), device);
    meta.slot_mapping = on_device(Tensor::from_vector(slots), device);
    meta.block_tables = on_device(Tensor::from_vector(tables, {num_seqs, max_blocks}), device);
    meta.seq_lens = on_device(Tensor::from_vector(seq_lens), device);
    meta.query_start_loc = on_device(Tensor::from_vector(query_start), device);
    batch.groups.push_back(std::move(meta));
    if (marked) last_group_rows = std::move(rows);
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
  batch.layer_group.assign(num_layers, 0);
  for (int g = 0; g < bm.num_groups(); ++g) {
    for (int layer : bm.group_spec(g).layers) batch.layer_group[layer] = g;
  }
  return input;
}

}  // namespace earnserve
