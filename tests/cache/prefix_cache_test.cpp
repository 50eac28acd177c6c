#include "cache/prefix_cache.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "cache/block_manager.h"

namespace earnserve {
namespace {

constexpr int kBlockSize = 4;

std::vector<int32_t> tokens(int n, int32_t first = 100) {
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

BlockManager caching_manager(int num_blocks) {
  return BlockManager(single_group_layout(2), {num_blocks}, kBlockSize, true);
}

// Allocates, "computes" the whole prompt and frees it, leaving its full blocks cached.
void run_and_free(BlockManager& manager, int64_t id, const std::vector<int32_t>& prompt,
                  std::span<const uint8_t> kept = {}) {
  ASSERT_TRUE(manager.allocate(id, prompt, kept));
  manager.mark_computed(id, static_cast<int>(prompt.size()), prompt, kept);
  manager.free(id);
}

TEST(PrefixCacheTest, BlockHashChainsOverParentTokensAndFlags) {
  std::vector<int32_t> ids = {1, 2, 3, 4};
  std::vector<uint8_t> kept = {1, 1, 1, 1};
  uint64_t root = prefix_root_hash(0);
  uint64_t h = hash_block_tokens(root, ids, kept);
  EXPECT_EQ(h, hash_block_tokens(root, ids, kept));
  EXPECT_NE(h, hash_block_tokens(h, ids, kept));
  EXPECT_NE(h, hash_block_tokens(prefix_root_hash(7), ids, kept));
  std::vector<uint8_t> one_unkept = {1, 1, 0, 1};
  EXPECT_NE(h, hash_block_tokens(root, ids, one_unkept));
  std::vector<int32_t> swapped = {1, 3, 2, 4};
  EXPECT_NE(h, hash_block_tokens(root, swapped, kept));
  std::vector<int32_t> zeros = {0};
  std::vector<int32_t> two_zeros = {0, 0};
  std::vector<uint8_t> k1 = {0}, k2 = {0, 0};
  EXPECT_NE(hash_block_tokens(root, zeros, k1), hash_block_tokens(root, two_zeros, k2));
}

TEST(PrefixCacheTest, IndexKeepsTheFirstBlockRegisteredForAHash) {
  PrefixCache cache(4);
  EXPECT_TRUE(cache.insert(11, 2));
  EXPECT_FALSE(cache.insert(11, 3));  // same KV already cached in block 2
  EXPECT_FALSE(cache.insert(12, 2));  // block 2 already holds a hash
  EXPECT_EQ(cache.lookup(11), 2);
  EXPECT_EQ(cache.lookup(12), std::nullopt);
  EXPECT_TRUE(cache.is_cached(2));
  EXPECT_TRUE(cache.erase(2));
  EXPECT_FALSE(cache.erase(2));
  EXPECT_EQ(cache.lookup(11), std::nullopt);
  EXPECT_EQ(cache.num_cached_blocks(), 0);
}

TEST(PrefixCacheTest, SequencesWithTheSamePrefixShareItsBlocks) {
  BlockManager manager = caching_manager(16);
  std::vector<int32_t> shared = tokens(8);
  ASSERT_EQ(manager.allocate(1, concat(shared, tokens(3, 500))), 0);
  manager.mark_computed(1, 11, concat(shared, tokens(3, 500)));
  EXPECT_EQ(manager.allocate(2, concat(shared, tokens(5, 900))), 8);
  EXPECT_EQ(manager.num_computed_tokens(2), 8);
  for (int j = 0; j < 2; ++j) {
    EXPECT_EQ(manager.block_table(2, 0)[j], manager.block_table(1, 0)[j]);
    EXPECT_EQ(manager.allocator(0).ref_count(manager.block_table(1, 0)[j]), 2);
  }
  EXPECT_NE(manager.block_table(2, 0)[2], manager.block_table(1, 0)[2]);
  EXPECT_EQ(manager.num_used_blocks(0), 3 + 2);
  EXPECT_TRUE(manager.take_pending_copies().empty());
}

TEST(PrefixCacheTest, OnlyComputedBlocksAreCached) {
  BlockManager manager = caching_manager(16);
  std::vector<int32_t> prompt = tokens(12);
  ASSERT_TRUE(manager.allocate(1, prompt));
  EXPECT_EQ(manager.allocate(2, prompt), 0);  // nothing computed yet
  manager.mark_computed(1, 6, prompt);        // one full block written
  EXPECT_EQ(manager.allocate(3, prompt), 4);
}

TEST(PrefixCacheTest, AFreedPrefixStaysReusableAndCountsAsFree) {
  BlockManager manager = caching_manager(4);
  std::vector<int32_t> prompt = tokens(9);
  run_and_free(manager, 1, prompt);
  EXPECT_EQ(manager.num_free_blocks(0), 4);
  EXPECT_EQ(manager.num_used_blocks(0), 0);
  int cached = 0;
  for (int b = 0; b < 4; ++b) cached += manager.is_cached_block(0, b) ? 1 : 0;
  EXPECT_EQ(cached, 2);  // the two full blocks; the 1-token tail is not cached

  // Preemption by recompute: the same tokens come back and hit.
  EXPECT_EQ(manager.allocate(2, prompt), 8);
  EXPECT_EQ(manager.num_used_blocks(0), 3);
}

TEST(PrefixCacheTest, NeverReportsTheWholePromptAsCached) {
  BlockManager manager = caching_manager(8);
  std::vector<int32_t> prompt = tokens(8);
  run_and_free(manager, 1, prompt);
  // Both blocks hit, but the last token is recomputed for its logits: it writes into the cached
  // last block, which nobody else holds, so the block is taken over rather than copied.
  EXPECT_EQ(manager.allocate(2, prompt), 7);
  EXPECT_EQ(manager.num_blocks(2, 0), 2);
  EXPECT_TRUE(manager.take_pending_copies().empty());
  EXPECT_FALSE(manager.is_cached_block(0, manager.block_table(2, 0)[1]));
  EXPECT_TRUE(manager.is_cached_block(0, manager.block_table(2, 0)[0]));
  manager.mark_computed(2, 8, prompt);
  EXPECT_TRUE(manager.is_cached_block(0, manager.block_table(2, 0)[1]));
}

TEST(PrefixCacheTest, ASharedCachedBlockIsCopiedBeforeARecomputedTokenWritesIt) {
  BlockManager manager = caching_manager(8);
  std::vector<int32_t> prompt = tokens(8);
  ASSERT_TRUE(manager.allocate(1, prompt));
  manager.mark_computed(1, 8, prompt);
  EXPECT_EQ(manager.allocate(2, prompt), 7);
  int original = manager.block_table(1, 0)[1];
  int copy = manager.block_table(2, 0)[1];
  EXPECT_NE(copy, original);
  EXPECT_EQ(manager.block_table(2, 0)[0], manager.block_table(1, 0)[0]);
  EXPECT_EQ(manager.take_pending_copies(), (std::vector<BlockCopy>{{0, original, copy}}));
  EXPECT_EQ(manager.slot(2, 0, 7), copy * kBlockSize + 3);
}

TEST(PrefixCacheTest, EvictsTheLeastRecentlyFreedPrefixFirst) {
  BlockManager manager = caching_manager(4);
  std::vector<int32_t> a = tokens(5, 100), b = tokens(5, 200);
  run_and_free(manager, 1, a);  // caches one block of a
  run_and_free(manager, 2, b);  // caches one block of b, freed later
  // A 2-block prompt takes the two uncached tails first, then must evict one cached block.
  ASSERT_TRUE(manager.allocate(3, tokens(12, 300)));
  EXPECT_EQ(manager.prefix_cache_stats().evictions[0], 1);
  manager.free(3);
  EXPECT_EQ(manager.allocate(4, a), 0);  // a was evicted
  manager.free(4);
  EXPECT_EQ(manager.allocate(5, b), 4);  // b, freed later, survived
}

TEST(PrefixCacheTest, CountersTrackQueriesAndHitsInTokensAndBlocks) {
  BlockManager manager = caching_manager(16);
  std::vector<int32_t> prompt = tokens(10);
  run_and_free(manager, 1, prompt);
  EXPECT_EQ(manager.allocate(2, prompt), 8);
  const PrefixCacheStats& stats = manager.prefix_cache_stats();
  EXPECT_EQ(stats.num_queries, 2);
  EXPECT_EQ(stats.query_tokens, 20);
  EXPECT_EQ(stats.hit_tokens, 8);
  EXPECT_EQ(stats.query_blocks[0], 4);
  EXPECT_EQ(stats.hit_blocks[0], 2);
  EXPECT_DOUBLE_EQ(stats.token_hit_rate(), 0.4);
  // A refused allocation is not a query.
  EXPECT_EQ(manager.allocate(3, tokens(100, 1000)), std::nullopt);
  EXPECT_EQ(stats.num_queries, 2);
}

TEST(PrefixCacheTest, ADifferentExtraKeyNeverHits) {
  BlockManager manager = caching_manager(16);
  std::vector<int32_t> prompt = tokens(9);
  ASSERT_TRUE(manager.allocate(1, prompt, {}, /*extra_key=*/1));
  manager.mark_computed(1, 9, prompt);
  EXPECT_EQ(manager.allocate(2, prompt, {}, /*extra_key=*/2), 0);
  EXPECT_EQ(manager.allocate(3, prompt, {}, /*extra_key=*/1), 8);
}

TEST(PrefixCacheTest, DisabledCachingNeverHits) {
  BlockManager manager(single_group_layout(2), {16}, kBlockSize, false);
  std::vector<int32_t> prompt = tokens(9);
  run_and_free(manager, 1, prompt);
  EXPECT_EQ(manager.allocate(2, prompt), 0);
  for (int b = 0; b < 16; ++b) EXPECT_FALSE(manager.is_cached_block(0, b));
  EXPECT_EQ(manager.prefix_cache_stats().num_queries, 0);
}

TEST(PrefixCacheTest, RewritingATruncatedCachedBlockRemovesItFromTheCache) {
  BlockManager manager = caching_manager(8);
  std::vector<int32_t> prompt = tokens(8);
  ASSERT_TRUE(manager.allocate(1, prompt));
  manager.mark_computed(1, 8, prompt);
  int tail = manager.block_table(1, 0)[1];
  manager.truncate(1, 6);  // two rejected draft tokens
  EXPECT_EQ(manager.num_blocks(1, 0), 2);
  EXPECT_TRUE(manager.is_cached_block(0, tail));  // its KV is still intact
  ASSERT_TRUE(manager.append_slots(1, std::vector<int32_t>{1}));
  EXPECT_EQ(manager.block_table(1, 0)[1], tail);   // sole holder: written in place...
  EXPECT_FALSE(manager.is_cached_block(0, tail));  // ...so no longer vouched for
  EXPECT_TRUE(manager.take_pending_copies().empty());
  EXPECT_EQ(manager.allocate(2, prompt), 4);
}

TEST(PrefixCacheTest, DecodedBlocksAreCachedToo) {
  BlockManager manager = caching_manager(16);
  std::vector<int32_t> seq = tokens(3);  // the caller owns the tokens
  ASSERT_TRUE(manager.allocate(1, seq));
  manager.mark_computed(1, 3, seq);
  for (int32_t t : {7, 8, 9, 10, 11}) {
    ASSERT_TRUE(manager.append_slots(1, std::vector<int32_t>{t}));
    seq.push_back(t);
    manager.mark_computed(1, manager.num_tokens(1), seq);
  }
  manager.free(1);
  // Preempted and resumed with its generated tokens: both full blocks hit.
  EXPECT_EQ(manager.allocate(2, concat(tokens(3), {7, 8, 9, 10, 11})), 7);
}

// Two groups: layers 0-1 keep every token, layers 2-3 only the marked ones.
std::vector<KvGroupSpec> two_group_layout() {
  return {KvGroupSpec{{0, 1}, TokenRule::kAllTokens},
          KvGroupSpec{{2, 3}, TokenRule::kMarkedTokens}};
}

TEST(PrefixCacheTest, MarkedGroupHashesCoverTheUnkeptTokensBetweenKeptOnes) {
  BlockManager manager(two_group_layout(), {32, 32}, kBlockSize, true);
  // Four registers, eight history tokens, four registers, one more token.
  std::vector<uint8_t> kept = {1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0};
  std::vector<int32_t> prompt = tokens(17);
  run_and_free(manager, 1, prompt, kept);
  EXPECT_EQ(manager.allocate(2, prompt, kept), 16);
  EXPECT_EQ(manager.prefix_cache_stats().hit_blocks[0], 4);
  EXPECT_EQ(manager.prefix_cache_stats().hit_blocks[1], 2);

  // Another history under the same registers: the marked group's second block covers the
  // history (its registers' KV saw it), so only the first block of each group matches.
  std::vector<int32_t> other = prompt;
  other[6] = 7;
  EXPECT_EQ(manager.allocate(3, other, kept), 4);
  EXPECT_EQ(manager.block_table(3, 1)[0], manager.block_table(2, 1)[0]);
  EXPECT_NE(manager.block_table(3, 1)[1], manager.block_table(2, 1)[1]);
}

TEST(PrefixCacheTest, MarkedBlocksAloneTellHistoriesApart) {
  // With no all-tokens group to vouch for the history, the marked group's own hashes must.
  BlockManager manager({KvGroupSpec{{0, 1}, TokenRule::kMarkedTokens}}, {16}, kBlockSize, true);
  std::vector<uint8_t> kept = {1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  std::vector<int32_t> prompt = tokens(13);
  run_and_free(manager, 1, prompt, kept);
  std::vector<int32_t> other = prompt;
  other[5] = 1;
  // The first block (tokens 0-3) matches; the second's registers saw another history.
  EXPECT_EQ(manager.allocate(2, other, kept), 8);
  EXPECT_EQ(manager.allocate(3, prompt, kept), 12);
}

TEST(PrefixCacheTest, AllGroupsMustHaveTheirPrefixCached) {
  BlockManager manager(two_group_layout(), {64, 32}, kBlockSize, true);
  std::vector<uint8_t> kept = {1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  std::vector<int32_t> prompt = tokens(13);
  run_and_free(manager, 1, prompt, kept);
  // Fill the marked group so that its cached blocks are evicted, the all-tokens group's kept.
  std::vector<uint8_t> all_kept(32 * kBlockSize, 1);
  ASSERT_TRUE(manager.allocate(2, tokens(static_cast<int>(all_kept.size()), 5000), all_kept));
  manager.free(2);
  EXPECT_EQ(manager.prefix_cache_stats().evictions[1], 2);
  EXPECT_EQ(manager.prefix_cache_stats().evictions[0], 0);
  // The all-tokens group alone would give 12 tokens; the marked group gives nothing.
  EXPECT_EQ(manager.allocate(3, prompt, kept), 0);
}

TEST(PrefixCacheTest, GroupsWithTheirOwnBlockSizesShareCachedPrefixes) {
  std::vector<KvGroupSpec> groups = two_group_layout();
  groups[1].block_size = 2;
  BlockManager manager(groups, {32, 32}, kBlockSize, true);
  // Two registers, eight history tokens, two registers, one more token: 13 tokens, 4 kept.
  std::vector<uint8_t> kept = {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0};
  std::vector<int32_t> prompt = tokens(13);
  run_and_free(manager, 1, prompt, kept);
  // The all-token group has 3 full 4-token pages (12 tokens), the marked group 2 full 2-token
  // pages (its second ends at token 11): 12 tokens are cached in both.
  EXPECT_EQ(manager.allocate(2, prompt, kept), 12);
  EXPECT_EQ(manager.prefix_cache_stats().hit_blocks[0], 3);
  EXPECT_EQ(manager.prefix_cache_stats().hit_blocks[1], 2);
  // Another history at token 6: the all-token group keeps its first page (tokens 0-3), the
  // marked group its first register page (tokens 0-1; the second covers the history).
  std::vector<int32_t> other = prompt;
  other[6] = 7;
  EXPECT_EQ(manager.allocate(3, other, kept), 4);
  EXPECT_EQ(manager.block_table(3, 1)[0], manager.block_table(2, 1)[0]);
  EXPECT_NE(manager.block_table(3, 1)[1], manager.block_table(2, 1)[1]);
  std::vector<int32_t> late = prompt;
  late[9] = 7;
  EXPECT_EQ(manager.allocate(4, late, kept), 8);
  EXPECT_EQ(manager.block_table(4, 1)[0], manager.block_table(2, 1)[0]);
  EXPECT_NE(manager.block_table(4, 1)[1], manager.block_table(2, 1)[1]);
}

TEST(PrefixCacheTest, APrefixEndingMidBlockInOneGroupIsCopiedBeforeTheRestIsWritten) {
  BlockManager manager(two_group_layout(), {32, 32}, kBlockSize, true);
  // Kept: tokens 0-2, then 8-12. The marked group's first block (ranks 0-3) ends at token 8.
  std::vector<uint8_t> kept = {1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0};
  std::vector<int32_t> prompt = tokens(14);
  ASSERT_TRUE(manager.allocate(1, prompt, kept));
  manager.mark_computed(1, 14, prompt, kept);
  // Diverging at token 9: the all-tokens group has 8 tokens cached, the marked group its first
  // block. They agree on 8 tokens, which hold only 3 of that block's 4 slots: the block is
  // shared, then copied because token 8's slot is about to be written.
  std::vector<int32_t> other = prompt;
  other[9] = 1;
  EXPECT_EQ(manager.allocate(2, other, kept), 8);
  int original = manager.block_table(1, 1)[0];
  int copy = manager.block_table(2, 1)[0];
  EXPECT_NE(copy, original);
  EXPECT_EQ(manager.take_pending_copies(), (std::vector<BlockCopy>{{1, original, copy}}));
  EXPECT_EQ(manager.slot(2, 1, 8), copy * kBlockSize + 3);
  EXPECT_EQ(manager.block_table(2, 0)[1], manager.block_table(1, 0)[1]);

  // Diverging at token 5: the marked group's first block spans it, so nothing is shared.
  std::vector<int32_t> early = prompt;
  early[5] = 1;
  EXPECT_EQ(manager.allocate(3, early, kept), 0);
}

}  // namespace
}  // namespace earnserve
