// build_model_input with drafted trees (speculative verification): tree rows follow their
// sequence's chunk, sit at the parent's position + 1, take slots after the sequence's tokens,
// yield logits, and every layer group gets query_parents over its own rows (a causal chain for
// sequences without a tree, the tree for drafted rows).
#include <gtest/gtest.h>

#include "cache/kv_group_spec.h"
#include "scheduler/executor/model_input.h"

namespace earnserve {
namespace {

std::vector<float> floats(std::initializer_list<float> v) { return std::vector<float>(v); }

TEST(ModelInputTreeTest, TreeRowsFollowTheirChunkInEveryLayerGroup) {
  // Layer 0 keeps every token; layer 1 only kept (marked) tokens, as EARN models do.
  std::vector<KvGroupSpec> groups(2);
  groups[0].layers = {0};
  groups[1].layers = {1};
  groups[1].rule = TokenRule::kMarkedTokens;
  BlockManager bm(groups, {64, 64}, 16, /*enable_prefix_caching=*/false);

  // A: a beam with 10 computed prompt tokens (2 kept) and 2 new generated tokens, plus a drafted
  // tree: node 0 and node 2 children of its last token, node 1 a child of node 0.
  SequenceGroup beam_group;
  Sequence a;
  a.kv_id = 0;
  for (int i = 0; i < 10; ++i) {
    a.tokens.push_back(20 + i);
    a.kept.push_back(i < 2 ? 1 : 0);
  }
  ASSERT_TRUE(bm.allocate(0, a.tokens, a.kept).has_value());
  bm.mark_computed(0, 10, a.tokens, a.kept);
  a.num_prompt_tokens = 10;
  a.num_computed_tokens = 10;
  a.append(40);
  a.append(41);
  ASSERT_TRUE(bm.append_slots(0, std::vector<int32_t>{40, 41}));
  const std::vector<int32_t> tree_tokens = {50, 51, 52}, tree_parents = {-1, 0, -1};
  ASSERT_TRUE(bm.append_slots(0, tree_tokens));

  // B: a prompt chunk whose tokens 2, 4 and 5 are kept.
  SequenceGroup prompt_group;
  Sequence b;
  b.kv_id = 1;
  b.tokens = {60, 61, 62, 63, 64, 65};
  b.kept = {0, 0, 1, 0, 1, 1};
  b.num_prompt_tokens = 6;
  ASSERT_TRUE(bm.allocate(1, b.tokens, b.kept).has_value());

  SchedulerStep step;
  ScheduledSeq sa;
  sa.group = &beam_group;
  sa.seq = &a;
  sa.start = 10;
  sa.count = 2;
  sa.needs_logits = true;
  ScheduledSeq sb;
  sb.group = &prompt_group;
  sb.seq = &b;
  sb.start = 0;
  sb.count = 6;
  sb.needs_logits = true;
  step.seqs = {sa, sb};
  step.trees.resize(2);
  step.trees[0] = {tree_tokens, tree_parents};
  step.num_tokens = 11;

  ModelInput input = build_model_input(step, bm, 2, Device::kCPU);
  const ForwardBatch& batch = input.batch;
  EXPECT_EQ(batch.token_ids.to_float_vector(),
            floats({40, 41, 50, 51, 52, 60, 61, 62, 63, 64, 65}));
  // Nodes sit one position below their parent: depth 1 at 12, depth 2 at 13.
  EXPECT_EQ(batch.positions.to_float_vector(), floats({10, 11, 12, 13, 12, 0, 1, 2, 3, 4, 5}));
  // Logits: A's last token and its three nodes, then B's last token; indices among the last
  // group's rows (A's 5 rows, then B's kept rows 7, 9 and 10).
  EXPECT_EQ(input.num_logits, 5);
  EXPECT_EQ(batch.logits_indices.to_float_vector(), floats({1, 2, 3, 4, 7}));

  const AttentionMetadata& all = batch.groups.at(0);
  EXPECT_EQ(all.query_parents.to_float_vector(), floats({-1, 0, 1, 2, 1, -1, 0, 1, 2, 3, 4}));
  EXPECT_EQ(all.seq_lens.to_float_vector(), floats({15, 6}));
  EXPECT_EQ(all.query_start_loc.to_float_vector(), floats({0, 5, 11}));
  std::vector<float> slots;
  for (int t = 10; t < 15; ++t) slots.push_back(static_cast<float>(bm.slot(0, 0, t)));
  for (int t = 0; t < 6; ++t) slots.push_back(static_cast<float>(bm.slot(1, 0, t)));
  EXPECT_EQ(all.slot_mapping.to_float_vector(), slots);

  const AttentionMetadata& marked = batch.groups.at(1);
  EXPECT_EQ(marked.token_indices.to_float_vector(), floats({0, 1, 2, 3, 4, 7, 9, 10}));
  EXPECT_EQ(marked.query_parents.to_float_vector(), floats({-1, 0, 1, 2, 1, -1, 0, 1}));
  // A keeps its 2 prompt registers, 2 generated tokens and 3 nodes; B its 3 kept tokens.
  EXPECT_EQ(marked.seq_lens.to_float_vector(), floats({7, 3}));
  EXPECT_EQ(marked.query_start_loc.to_float_vector(), floats({0, 5, 8}));
}

TEST(ModelInputTreeTest, StepsWithoutTreesHaveNoQueryParents) {
  BlockManager bm(single_group_layout(1), {8}, 16, /*enable_prefix_caching=*/false);
  SequenceGroup group;
  Sequence s;
  s.kv_id = 0;
  s.tokens = {5, 6, 7};
  s.kept = {1, 1, 1};
  ASSERT_TRUE(bm.allocate(0, s.tokens).has_value());
  SchedulerStep step;
  ScheduledSeq sched;
  sched.group = &group;
  sched.seq = &s;
  sched.count = 3;
  sched.needs_logits = true;
  step.seqs = {sched};
  step.num_tokens = 3;
  ModelInput input = build_model_input(step, bm, 1, Device::kCPU);
  EXPECT_FALSE(input.batch.groups.at(0).query_parents.defined());
  EXPECT_EQ(input.batch.positions.to_float_vector(), floats({0, 1, 2}));
}

}  // namespace
}  // namespace earnserve
