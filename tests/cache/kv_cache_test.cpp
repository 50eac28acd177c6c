#include "cache/kv_cache.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "cache/block_manager.h"

namespace earnserve {
namespace {

constexpr int kBlockSize = 4;
constexpr int kHeads = 2;
constexpr int kHeadDim = 3;
// Keys and values of one layer's block: 2 * 4 * 2 * 3 floats.
constexpr int64_t kLayerBlockBytes = 2 * kBlockSize * kHeads * kHeadDim * 4;

KvCacheOptions two_group_options(int64_t budget) {
  KvCacheOptions o;
  o.groups = {KvGroupSpec{{0, 1, 2}, TokenRule::kAllTokens},
              KvGroupSpec{{3}, TokenRule::kMarkedTokens}};
  o.num_layers = 4;
  o.num_kv_heads = kHeads;
  o.head_dim = kHeadDim;
  o.block_size = kBlockSize;
  o.memory_budget_bytes = budget;
  return o;
}

// Element count of one block in one layer's key (or value) tensor.
constexpr int64_t kBlockFloats = kBlockSize * kHeads * kHeadDim;

std::vector<float> block_values(const Tensor& t, int block) {
  const float* data = t.data<float>() + block * kBlockFloats;
  return std::vector<float>(data, data + kBlockFloats);
}

TEST(KvCacheTest, GivesEveryGroupTheSameNumberOfBlocksByDefault) {
  // A block of group 0 spans three layers, of group 1 one: 4 layer-blocks per block pair.
  auto cache = KvCache::create(two_group_options(4 * kLayerBlockBytes * 5));
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  EXPECT_EQ(cache->bytes_per_block(0), 3 * kLayerBlockBytes);
  EXPECT_EQ(cache->bytes_per_block(1), kLayerBlockBytes);
  EXPECT_EQ(cache->num_blocks_per_group(), (std::vector<int>{5, 5}));
  EXPECT_EQ(cache->total_bytes(), 4 * kLayerBlockBytes * 5);
  EXPECT_EQ(cache->layer_group(), (std::vector<int>{0, 0, 0, 1}));
}

TEST(KvCacheTest, EachGroupsPagesHaveItsOwnBlockSize) {
  KvCacheOptions o = two_group_options(4 * kLayerBlockBytes * 5);
  o.groups[1].block_size = 1;  // a quarter of group 0's 4-token pages
  o.group_weights = {1.0, 4.0};
  auto cache = KvCache::create(o);
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  EXPECT_EQ(cache->block_size(0), kBlockSize);
  EXPECT_EQ(cache->block_size(1), 1);
  EXPECT_EQ(cache->groups()[1].block_size, 1);
  EXPECT_EQ(cache->bytes_per_block(1), kLayerBlockBytes / 4);
  // Group 0: 3 layer-blocks per block, group 1: a quarter layer-block, four times as many.
  EXPECT_EQ(cache->num_blocks_per_group(), (std::vector<int>{5, 20}));
  EXPECT_EQ(cache->refs().key[3].shape(), (Shape{20, 1, kHeads, kHeadDim}));
  EXPECT_EQ(cache->refs().value[0].shape(), (Shape{5, kBlockSize, kHeads, kHeadDim}));
  EXPECT_EQ(cache->total_bytes(), 4 * kLayerBlockBytes * 5);
}

TEST(KvCacheTest, BlockSizeOfAGroupOutsideItsRangeIsRejected) {
  KvCacheOptions o = two_group_options(1 << 20);
  o.groups[1].block_size = 257;
  auto cache = KvCache::create(o);
  ASSERT_FALSE(cache.ok());
  EXPECT_NE(cache.status().message().find("block size 257"), std::string::npos)
      << cache.status().message();
  o.groups[1].block_size = -1;
  EXPECT_FALSE(KvCache::create(o).ok());
}

TEST(KvCacheTest, BudgetOneByteShortOfABlockPairRoundsDown) {
  auto cache = KvCache::create(two_group_options(4 * kLayerBlockBytes * 5 - 1));
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->num_blocks_per_group(), (std::vector<int>{4, 4}));
}

TEST(KvCacheTest, WeightsShiftBlocksBetweenGroups) {
  KvCacheOptions o = two_group_options(4 * kLayerBlockBytes * 5);
  o.group_weights = {1.0, 3.0};
  auto cache = KvCache::create(o);
  ASSERT_TRUE(cache.ok()) << cache.status().to_string();
  // x = 20 / (1 * 3 + 3 * 1) layer-blocks: group 0 gets floor(x), group 1 floor(3x).
  EXPECT_EQ(cache->num_blocks_per_group(), (std::vector<int>{3, 10}));
  EXPECT_LE(cache->total_bytes(), o.memory_budget_bytes);
}

TEST(KvCacheTest, EachLayerHoldsItsGroupsBlocks) {
  KvCacheOptions o = two_group_options(4 * kLayerBlockBytes * 5);
  o.group_weights = {2.0, 1.0};
  auto cache = KvCache::create(o);
  ASSERT_TRUE(cache.ok());
  const KvCacheRefs& t = cache->refs();
  ASSERT_EQ(t.key.size(), 4u);
  ASSERT_EQ(t.value.size(), 4u);
  for (int layer = 0; layer < 4; ++layer) {
    Shape expected{cache->num_blocks(cache->layer_group()[layer]), kBlockSize, kHeads, kHeadDim};
    EXPECT_EQ(t.key[layer].shape(), expected) << "layer " << layer;
    EXPECT_EQ(t.value[layer].shape(), expected) << "layer " << layer;
    EXPECT_EQ(t.key[layer].dtype(), DType::kF32);
    EXPECT_TRUE(t.key[layer].is_cpu());
    EXPECT_EQ(t.key[layer].item_as_float(0), 0.0f);
  }
  EXPECT_NE(t.key[0].dim(0), t.key[3].dim(0));
}

TEST(KvCacheTest, ExecutesCopiesInEveryLayerOfTheGroupOnly) {
  auto cache = KvCache::create(two_group_options(4 * kLayerBlockBytes * 4));
  ASSERT_TRUE(cache.ok());
  const KvCacheRefs& t = cache->refs();
  for (int layer = 0; layer < 4; ++layer) {
    for (const Tensor* x : {&t.key[layer], &t.value[layer]}) {
      float* data = x->data<float>();
      for (int64_t i = 0; i < x->numel(); ++i) data[i] = static_cast<float>(layer * 10000 + i);
      if (x == &t.value[layer]) {
        for (int64_t i = 0; i < x->numel(); ++i) data[i] = -data[i];
      }
    }
  }
  std::vector<float> layer0_block2 = block_values(t.key[0], 2);
  ASSERT_TRUE(cache->execute_copies({{1, 0, 2}, {0, 3, 1}}).ok());
  EXPECT_EQ(block_values(t.key[3], 2), block_values(t.key[3], 0));
  EXPECT_EQ(block_values(t.value[3], 2), block_values(t.value[3], 0));
  EXPECT_NE(block_values(t.key[3], 1), block_values(t.key[3], 3));
  for (int layer = 0; layer < 3; ++layer) {
    EXPECT_EQ(block_values(t.key[layer], 1), block_values(t.key[layer], 3)) << layer;
    EXPECT_EQ(block_values(t.value[layer], 1), block_values(t.value[layer], 3)) << layer;
  }
  EXPECT_EQ(block_values(t.key[0], 2), layer0_block2);
}

TEST(KvCacheTest, ExecutesTheCopyOnWriteTheBlockManagerAsksFor) {
  KvCacheOptions o;
  o.groups = single_group_layout(2);
  o.num_layers = 2;
  o.num_kv_heads = kHeads;
  o.head_dim = kHeadDim;
  o.block_size = kBlockSize;
  o.memory_budget_bytes = 2 * kLayerBlockBytes * 8;
  auto cache = KvCache::create(o);
  ASSERT_TRUE(cache.ok());
  BlockManager manager(o.groups, cache->num_blocks_per_group(), kBlockSize, false);
  std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  ASSERT_TRUE(manager.allocate(1, prompt));
  // "Compute" the prompt: write each token's slot in every layer.
  for (int token = 0; token < 6; ++token) {
    int slot = manager.slot(1, 0, token);
    for (int layer = 0; layer < 2; ++layer) {
      float* k = cache->refs().key[layer].data<float>() + slot * kHeads * kHeadDim;
      for (int i = 0; i < kHeads * kHeadDim; ++i) k[i] = static_cast<float>(100 * layer + token);
    }
  }
  manager.mark_computed(1, 6, prompt);
  manager.fork(1, 2);
  ASSERT_TRUE(manager.append_slots(2, std::vector<int32_t>{11}));
  ASSERT_TRUE(cache->execute_copies(manager.take_pending_copies()).ok());
  for (int token = 0; token < 6; ++token) {
    for (int layer = 0; layer < 2; ++layer) {
      const float* k = cache->refs().key[layer].data<float>();
      EXPECT_EQ(k[manager.slot(2, 0, token) * kHeads * kHeadDim],
                k[manager.slot(1, 0, token) * kHeads * kHeadDim]);
    }
  }
  EXPECT_NE(manager.slot(2, 0, 5), manager.slot(1, 0, 5));
}

TEST(KvCacheTest, RejectsABudgetThatLeavesAGroupWithoutABlock) {
  auto cache = KvCache::create(two_group_options(4 * kLayerBlockBytes - 1));
  ASSERT_FALSE(cache.ok());
  EXPECT_EQ(cache.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(cache.status().message().find("without a block"), std::string::npos)
      << cache.status().message();
}

TEST(KvCacheTest, RejectsBadLayouts) {
  KvCacheOptions missing = two_group_options(1 << 20);
  missing.groups[1].layers = {};
  EXPECT_EQ(KvCache::create(missing).status().message(),
            "KV cache: KV groups: group 1 has no layers");

  KvCacheOptions twice = two_group_options(1 << 20);
  twice.groups[1].layers = {2, 3};
  EXPECT_EQ(KvCache::create(twice).status().message(),
            "KV cache: KV groups: layer 2 is in groups 0 and 1");

  KvCacheOptions gap = two_group_options(1 << 20);
  gap.groups[0].layers = {0, 1};
  EXPECT_EQ(KvCache::create(gap).status().message(), "KV cache: KV groups: layer 2 is in no group");

  KvCacheOptions outside = two_group_options(1 << 20);
  outside.groups[1].layers = {3, 4};
  EXPECT_EQ(KvCache::create(outside).status().code(), StatusCode::kInvalidArgument);
}

TEST(KvCacheTest, RejectsBadOptions) {
  KvCacheOptions weights = two_group_options(1 << 20);
  weights.group_weights = {1.0};
  EXPECT_EQ(KvCache::create(weights).status().message(), "KV cache: 1 group weights for 2 groups");
  weights.group_weights = {1.0, 0.0};
  EXPECT_EQ(KvCache::create(weights).status().code(), StatusCode::kInvalidArgument);

  KvCacheOptions heads = two_group_options(1 << 20);
  heads.num_kv_heads = 0;
  EXPECT_EQ(KvCache::create(heads).status().code(), StatusCode::kInvalidArgument);

  KvCacheOptions dtype = two_group_options(1 << 20);
  dtype.dtype = DType::kI32;
  EXPECT_EQ(KvCache::create(dtype).status().message(),
            "KV cache: dtype must be f32, f16 or bf16, got i32");
}

TEST(KvCacheTest, RejectsCopiesOutsideThePool) {
  auto cache = KvCache::create(two_group_options(4 * kLayerBlockBytes * 2));
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(cache->execute_copies({{2, 0, 1}}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->execute_copies({{0, 0, 2}}).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace earnserve
