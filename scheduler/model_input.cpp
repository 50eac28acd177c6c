#include "scheduler/model_input.h"

#include <algorithm>

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
  batch.token_ids = on_device(Tensor::from_vector(token_ids), device);
  batch.positions = on_device(Tensor::from_vector(positions), device);
  batch.logits_indices = on_device(Tensor::from_vector(logits_rows), device);

  for (int g = 0; g < bm.num_groups(); ++g) {
    ES_CHECK(bm.group_spec(g).rule == TokenRule::kAllTokens)
        << "marked KV groups need per-token metadata (EARN)";
    int max_blocks = 1;
    for (const ScheduledSeq& s : step.seqs) {
      max_blocks = std::max(max_blocks, bm.num_blocks(s.seq->kv_id, g));
    }
    std::vector<int32_t> slots(num_tokens), tables(static_cast<size_t>(num_seqs) * max_blocks, 0),
        seq_lens(num_seqs), query_start(num_seqs + 1, 0);
    int row = 0;
    for (int i = 0; i < num_seqs; ++i) {
      const ScheduledSeq& s = step.seqs[i];
      bm.write_slot_mapping(s.seq->kv_id, g, s.start,
                            std::span<int32_t>(slots.data() + row, s.count));
      const std::vector<int>& table = bm.block_table(s.seq->kv_id, g);
      std::copy(table.begin(), table.end(), tables.begin() + static_cast<size_t>(i) * max_blocks);
      seq_lens[i] = s.start + s.count;
      row += s.count;
      query_start[i + 1] = row;
    }
    AttentionMetadata meta;
    meta.slot_mapping = on_device(Tensor::from_vector(slots), device);
    meta.block_tables = on_device(Tensor::from_vector(tables, {num_seqs, max_blocks}), device);
    meta.seq_lens = on_device(Tensor::from_vector(seq_lens), device);
    meta.query_start_loc = on_device(Tensor::from_vector(query_start), device);
    batch.groups.push_back(std::move(meta));
  }
  batch.layer_group.assign(num_layers, 0);
  for (int g = 0; g < bm.num_groups(); ++g) {
    for (int layer : bm.group_spec(g).layers) batch.layer_group[layer] = g;
  }
  return input;
}

}  // namespace earnserve
