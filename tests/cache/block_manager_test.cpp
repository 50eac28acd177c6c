#include "cache/block_manager.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

namespace earnserve {
namespace {

constexpr int kBlockSize = 4;

std::vector<int32_t> tokens(int n, int32_t first = 100) {
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

// Layers 0-1 keep every token; layers 2-3 keep only marked tokens (EARN's register layers).
std::vector<KvGroupSpec> two_group_layout() {
  return {KvGroupSpec{{0, 1}, TokenRule::kAllTokens},
          KvGroupSpec{{2, 3}, TokenRule::kMarkedTokens}};
}

BlockManager single_group(int num_blocks, bool prefix_caching = false) {
  return BlockManager(single_group_layout(2), {num_blocks}, kBlockSize, prefix_caching);
}

TEST(BlockManagerTest, AllocatesBlocksForTheWholePrompt) {
  BlockManager manager = single_group(8);
  EXPECT_EQ(manager.allocate(1, tokens(10)), 0);
  EXPECT_EQ(manager.num_blocks(1, 0), 3);
  EXPECT_EQ(manager.num_kept_tokens(1, 0), 10);
  EXPECT_EQ(manager.num_tokens(1), 10);
  EXPECT_EQ(manager.num_computed_tokens(1), 0);
  EXPECT_EQ(manager.num_used_blocks(0), 3);
  EXPECT_EQ(manager.num_free_blocks(0), 5);
}

TEST(BlockManagerTest, SlotsFollowTheBlockTable) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(6)));
  const std::vector<int>& table = manager.block_table(1, 0);
  std::vector<int32_t> slots(6);
  manager.write_slot_mapping(1, 0, 0, slots);
  for (int t = 0; t < 6; ++t) {
    int expected = table[t / kBlockSize] * kBlockSize + t % kBlockSize;
    EXPECT_EQ(slots[t], expected) << "token " << t;
    EXPECT_EQ(manager.slot(1, 0, t), expected);
  }
}

TEST(BlockManagerTest, AppendTakesANewBlockOnlyAtABlockBoundary) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(3)));
  EXPECT_TRUE(manager.append_slots(1, tokens(1, 7)));
  EXPECT_EQ(manager.num_blocks(1, 0), 1);
  EXPECT_TRUE(manager.append_slots(1, tokens(1, 8)));
  EXPECT_EQ(manager.num_blocks(1, 0), 2);
  EXPECT_EQ(manager.slot(1, 0, 4), manager.block_table(1, 0)[1] * kBlockSize);
  EXPECT_EQ(manager.num_tokens(1), 5);
}

TEST(BlockManagerTest, AppendWithoutRoomFailsAndChangesNothing) {
  BlockManager manager = single_group(2);
  ASSERT_TRUE(manager.allocate(1, tokens(8)));
  std::vector<int> table_before = manager.block_table(1, 0);
  EXPECT_FALSE(manager.append_slots(1, tokens(1)));
  EXPECT_EQ(manager.num_tokens(1), 8);
  EXPECT_EQ(manager.block_table(1, 0), table_before);
  EXPECT_EQ(manager.num_free_blocks(0), 0);
}

TEST(BlockManagerTest, FreeReturnsEveryBlockOfTheSequence) {
  BlockManager manager = single_group(6);
  ASSERT_TRUE(manager.allocate(1, tokens(9)));
  {
    ASSERT_TRUE(manager.allocate(2, tokens(5)));
    EXPECT_EQ(manager.num_free_blocks(0), 1);
    manager.free(2);
  }
  EXPECT_EQ(manager.num_free_blocks(0), 3);
  EXPECT_FALSE(manager.contains(2));
  manager.free(1);
  EXPECT_EQ(manager.num_free_blocks(0), 6);
  EXPECT_EQ(manager.num_sequences(), 0);
}

TEST(BlockManagerTest, CanAllocateAtTheBudgetEdge) {
  BlockManager manager = single_group(3);
  EXPECT_TRUE(manager.can_allocate(tokens(12)));   // exactly three blocks
  EXPECT_FALSE(manager.can_allocate(tokens(13)));  // one token into a fourth
  EXPECT_EQ(manager.allocate(1, tokens(13)), std::nullopt);
  EXPECT_FALSE(manager.contains(1));
  EXPECT_EQ(manager.num_free_blocks(0), 3);
  ASSERT_TRUE(manager.allocate(1, tokens(12)));
  EXPECT_FALSE(manager.can_allocate(tokens(1)));
}

TEST(BlockManagerTest, TruncateReleasesBlocksOnlyTheDroppedTokensUsed) {
  BlockManager manager(two_group_layout(), {8, 8}, kBlockSize, false);
  std::vector<uint8_t> kept = {1, 0, 1, 0, 1, 0, 1, 0, 1, 1};
  ASSERT_TRUE(manager.allocate(1, tokens(10), kept));
  manager.mark_computed(1, 10, tokens(10), kept);
  EXPECT_EQ(manager.num_blocks(1, 0), 3);
  EXPECT_EQ(manager.num_blocks(1, 1), 2);
  manager.truncate(1, 7);
  EXPECT_EQ(manager.num_tokens(1), 7);
  EXPECT_EQ(manager.num_computed_tokens(1), 7);
  EXPECT_EQ(manager.num_kept_tokens(1, 1), 4);
  EXPECT_EQ(manager.num_blocks(1, 0), 2);
  EXPECT_EQ(manager.num_blocks(1, 1), 1);
  EXPECT_EQ(manager.num_used_blocks(0), 2);
  EXPECT_EQ(manager.num_used_blocks(1), 1);
  ASSERT_TRUE(manager.append_slots(1, tokens(1), std::vector<uint8_t>{1}));
  EXPECT_EQ(manager.slot(1, 1, 7), manager.block_table(1, 1)[1] * kBlockSize);
}

TEST(BlockManagerTest, TruncatingAForkedBeamCopiesTheSharedBlockItRewrites) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(8)));
  manager.mark_computed(1, 8, tokens(8));
  manager.fork(1, 2);
  manager.truncate(2, 5);
  int shared = manager.block_table(1, 0)[1];
  EXPECT_EQ(manager.block_table(2, 0)[1], shared);
  ASSERT_TRUE(manager.append_slots(2, tokens(1, 77)));
  int copy = manager.block_table(2, 0)[1];
  EXPECT_NE(copy, shared);
  EXPECT_EQ(manager.take_pending_copies(), (std::vector<BlockCopy>{{0, shared, copy}}));
}

TEST(BlockManagerTest, ForkSharesBlocksWithoutCopies) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(6)));
  manager.mark_computed(1, 6, tokens(6));
  manager.fork(1, 2);
  EXPECT_EQ(manager.block_table(2, 0), manager.block_table(1, 0));
  for (int block : manager.block_table(1, 0)) EXPECT_EQ(manager.allocator(0).ref_count(block), 2);
  EXPECT_EQ(manager.num_used_blocks(0), 2);
  EXPECT_TRUE(manager.take_pending_copies().empty());
  EXPECT_EQ(manager.num_computed_tokens(2), 6);
}

TEST(BlockManagerTest, AppendIntoASharedLastBlockCopiesItFirst) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(6)));
  manager.mark_computed(1, 6, tokens(6));
  manager.fork(1, 2);
  int shared_tail = manager.block_table(1, 0)[1];

  ASSERT_TRUE(manager.append_slots(2, tokens(1, 50)));
  int child_tail = manager.block_table(2, 0)[1];
  EXPECT_NE(child_tail, shared_tail);
  EXPECT_EQ(manager.block_table(2, 0)[0], manager.block_table(1, 0)[0]);
  EXPECT_EQ(manager.take_pending_copies(), (std::vector<BlockCopy>{{0, shared_tail, child_tail}}));
  EXPECT_EQ(manager.allocator(0).ref_count(shared_tail), 1);
  EXPECT_EQ(manager.slot(2, 0, 6), child_tail * kBlockSize + 2);

  // The parent is now the tail's only holder and writes in place.
  ASSERT_TRUE(manager.append_slots(1, tokens(1, 60)));
  EXPECT_EQ(manager.block_table(1, 0)[1], shared_tail);
  EXPECT_TRUE(manager.take_pending_copies().empty());
}

TEST(BlockManagerTest, ForkWithAFullLastBlockNeedsNoCopy) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(8)));
  manager.mark_computed(1, 8, tokens(8));
  manager.fork(1, 2);
  ASSERT_TRUE(manager.append_slots(2, tokens(1)));
  EXPECT_TRUE(manager.take_pending_copies().empty());
  EXPECT_EQ(manager.num_blocks(2, 0), 3);
  EXPECT_EQ(manager.num_blocks(1, 0), 2);
}

TEST(BlockManagerTest, CopyOnWriteNeedsAFreeBlock) {
  BlockManager manager = single_group(3);
  ASSERT_TRUE(manager.allocate(1, tokens(6)));
  manager.mark_computed(1, 6, tokens(6));
  manager.fork(1, 2);
  EXPECT_TRUE(manager.append_slots(2, tokens(1)));   // takes the last free block for the copy
  EXPECT_FALSE(manager.append_slots(1, tokens(3)));  // would need a third block
  EXPECT_EQ(manager.num_tokens(1), 6);
}

TEST(BlockManagerTest, CopyIntoAFreedBlockIsDropped) {
  BlockManager manager = single_group(8);
  ASSERT_TRUE(manager.allocate(1, tokens(6)));
  manager.mark_computed(1, 6, tokens(6));
  manager.fork(1, 2);
  ASSERT_TRUE(manager.append_slots(2, tokens(1)));
  manager.free(2);
  EXPECT_TRUE(manager.take_pending_copies().empty());
}

TEST(BlockManagerTest, NeverAllocatesPagesForUnkeptTokens) {
  BlockManager manager(two_group_layout(), {16, 16}, kBlockSize, false);
  // Two prefix registers, ten history tokens, two suffix registers.
  std::vector<uint8_t> kept = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
  std::vector<int32_t> prompt = tokens(14);
  ASSERT_TRUE(manager.allocate(1, prompt, kept));
  EXPECT_EQ(manager.num_blocks(1, 0), 4);
  EXPECT_EQ(manager.num_kept_tokens(1, 1), 4);
  EXPECT_EQ(manager.num_blocks(1, 1), 1);

  // History tokens get no slot in the register layers; registers fill slots 0..3 of one block.
  int block = manager.block_table(1, 1)[0];
  std::vector<int32_t> slots(14);
  manager.write_slot_mapping(1, 1, 0, slots);
  std::vector<int32_t> expected(14, -1);
  expected[0] = block * kBlockSize;
  expected[1] = block * kBlockSize + 1;
  expected[12] = block * kBlockSize + 2;
  expected[13] = block * kBlockSize + 3;
  EXPECT_EQ(slots, expected);

  // Unkept appends take no marked-group block; a generated (kept) token takes the next one.
  std::vector<uint8_t> not_kept = {0, 0, 0, 0, 0};
  ASSERT_TRUE(manager.append_slots(1, tokens(5), not_kept));
  EXPECT_EQ(manager.num_blocks(1, 1), 1);
  EXPECT_EQ(manager.num_blocks(1, 0), 5);
  ASSERT_TRUE(manager.append_slots(1, tokens(1), std::vector<uint8_t>{1}));
  EXPECT_EQ(manager.num_blocks(1, 1), 2);
  EXPECT_EQ(manager.slot(1, 1, 19), manager.block_table(1, 1)[1] * kBlockSize);
  EXPECT_EQ(manager.num_used_blocks(1), 2);
}

TEST(BlockManagerTest, TheMarkedGroupCanBeTheLimit) {
  BlockManager manager(two_group_layout(), {16, 1}, kBlockSize, false);
  std::vector<uint8_t> four_kept = {1, 0, 1, 0, 1, 0, 1, 0};
  std::vector<uint8_t> five_kept = {1, 0, 1, 0, 1, 0, 1, 1};
  EXPECT_TRUE(manager.can_allocate(tokens(8), four_kept));
  EXPECT_FALSE(manager.can_allocate(tokens(8), five_kept));
  ASSERT_TRUE(manager.allocate(1, tokens(8), four_kept));
  EXPECT_FALSE(manager.append_slots(1, tokens(1), std::vector<uint8_t>{1}));
  EXPECT_TRUE(manager.append_slots(1, tokens(1), std::vector<uint8_t>{0}));
  EXPECT_DOUBLE_EQ(manager.usage(), 1.0);
}

TEST(BlockManagerTest, UsageIsTheFullestGroup) {
  BlockManager manager(two_group_layout(), {10, 4}, kBlockSize, false);
  EXPECT_DOUBLE_EQ(manager.usage(), 0.0);
  std::vector<uint8_t> kept(8, 0);
  kept[0] = 1;
  ASSERT_TRUE(manager.allocate(1, tokens(8), kept));
  // Group 0: 2 of 10 blocks; group 1: 1 of 4.
  EXPECT_DOUBLE_EQ(manager.usage(), 0.25);
}

// EARN with register-sized pages: 4-token pages below the split, 2-token pages above it.
std::vector<KvGroupSpec> register_paged_layout() {
  std::vector<KvGroupSpec> groups = two_group_layout();
  groups[1].block_size = 2;
  return groups;
}

TEST(BlockManagerTest, EachGroupHasItsOwnBlockSize) {
  BlockManager manager(register_paged_layout(), {16, 16}, kBlockSize, false);
  EXPECT_EQ(manager.block_size(0), kBlockSize);  // 0 in the spec: the constructor's size
  EXPECT_EQ(manager.block_size(1), 2);
  // Two prefix registers, ten history tokens, two suffix registers.
  std::vector<uint8_t> kept = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
  ASSERT_TRUE(manager.allocate(1, tokens(14), kept));
  EXPECT_EQ(manager.num_blocks(1, 0), 4);
  EXPECT_EQ(manager.num_blocks(1, 1), 2);
  const std::vector<int>& table = manager.block_table(1, 1);
  std::vector<int32_t> slots(14);
  manager.write_slot_mapping(1, 1, 0, slots);
  std::vector<int32_t> expected(14, -1);
  expected[0] = table[0] * 2;
  expected[1] = table[0] * 2 + 1;
  expected[12] = table[1] * 2;
  expected[13] = table[1] * 2 + 1;
  EXPECT_EQ(slots, expected);
  EXPECT_EQ(manager.slot(1, 1, 13), expected[13]);
  // A generated token opens a third register page; the all-token group fills its last page.
  ASSERT_TRUE(manager.append_slots(1, tokens(1), std::vector<uint8_t>{1}));
  EXPECT_EQ(manager.num_blocks(1, 1), 3);
  EXPECT_EQ(manager.num_blocks(1, 0), 4);
  EXPECT_EQ(manager.slot(1, 1, 14), manager.block_table(1, 1)[2] * 2);
  manager.truncate(1, 14);
  EXPECT_EQ(manager.num_blocks(1, 1), 2);
  manager.free(1);
  EXPECT_EQ(manager.num_used_blocks(0) + manager.num_used_blocks(1), 0);
}

TEST(BlockManagerTest, BeamsShareFullRegisterPagesAndForkOnlyTheirOwnSmallPages) {
  BlockManager manager(register_paged_layout(), {32, 32}, kBlockSize, false);
  // 4 registers fill two 2-token pages exactly; the 10-token prompt ends mid-page below.
  std::vector<uint8_t> kept = {1, 1, 0, 0, 0, 0, 0, 0, 1, 1};
  std::vector<int32_t> prompt = tokens(10);
  ASSERT_TRUE(manager.allocate(1, prompt, kept));
  manager.mark_computed(1, 10, prompt, kept);
  for (int64_t beam = 2; beam <= 4; ++beam) manager.fork(1, beam);
  for (int64_t beam = 1; beam <= 4; ++beam) {
    ASSERT_TRUE(manager.append_slots(beam, tokens(1), std::vector<uint8_t>{1}));
  }
  // Below the split every beam but the last writer copies the shared, partly filled last page;
  // above it the register pages are full and stay shared: each beam takes one new 2-token page.
  for (const BlockCopy& copy : manager.take_pending_copies()) EXPECT_EQ(copy.group, 0);
  EXPECT_EQ(manager.num_used_blocks(1), 2 + 4);
  for (int64_t beam = 2; beam <= 4; ++beam) {
    EXPECT_EQ(manager.block_table(beam, 1)[0], manager.block_table(1, 1)[0]);
    EXPECT_EQ(manager.block_table(beam, 1)[1], manager.block_table(1, 1)[1]);
    EXPECT_NE(manager.block_table(beam, 1)[2], manager.block_table(1, 1)[2]);
  }
  // A beam forked mid-page copies a 2-token register page, not a whole prompt-sized one.
  for (int64_t beam = 1; beam <= 4; ++beam) manager.mark_computed(beam, 11, tokens(11), {});
  for (int64_t beam = 2; beam <= 4; ++beam) manager.fork(beam, beam + 10);
  ASSERT_TRUE(manager.append_slots(12, tokens(1), std::vector<uint8_t>{1}));
  std::vector<BlockCopy> copies = manager.take_pending_copies();
  ASSERT_EQ(copies.size(), 2u);  // the forked beam's half-full page in both groups
  EXPECT_EQ(copies[1].group, 1);
  EXPECT_EQ(copies[1].src_block, manager.block_table(2, 1)[2]);
}

TEST(BlockManagerDeathTest, ForkOfAnUncomputedSequenceIsAnInvariantViolation) {
  BlockManager manager = single_group(4);
  ASSERT_TRUE(manager.allocate(1, tokens(3)));
  EXPECT_DEATH(manager.fork(1, 2), "uncomputed");
}

}  // namespace
}  // namespace earnserve
