#include "cache/block_allocator.h"

#include <gtest/gtest.h>

#include <vector>

namespace earnserve {
namespace {

using FreeOrder = BlockAllocator::FreeOrder;

TEST(BlockAllocatorTest, StartsWithEveryBlockFree) {
  BlockAllocator allocator(4);
  EXPECT_EQ(allocator.num_total(), 4);
  EXPECT_EQ(allocator.num_free(), 4);
  EXPECT_EQ(allocator.num_used(), 0);
  EXPECT_EQ(allocator.free_queue(), (std::vector<int>{0, 1, 2, 3}));
  for (int b = 0; b < 4; ++b) EXPECT_EQ(allocator.ref_count(b), 0);
}

TEST(BlockAllocatorTest, RunningOutIsANormalOutcome) {
  BlockAllocator allocator(2);
  EXPECT_EQ(allocator.allocate(), 0);
  EXPECT_EQ(allocator.allocate(), 1);
  EXPECT_EQ(allocator.allocate(), std::nullopt);
  EXPECT_EQ(allocator.num_free(), 0);
  allocator.decref(1);
  EXPECT_EQ(allocator.allocate(), 1);
}

TEST(BlockAllocatorTest, EmptyPoolHasNothingToGive) {
  BlockAllocator allocator(0);
  EXPECT_EQ(allocator.allocate(), std::nullopt);
  EXPECT_EQ(allocator.num_total(), 0);
}

TEST(BlockAllocatorTest, BlockIsFreedOnlyWhenTheLastHolderLetsGo) {
  BlockAllocator allocator(3);
  int block = *allocator.allocate();
  {
    // A second holder (a forked beam) comes and goes.
    allocator.incref(block);
    EXPECT_EQ(allocator.ref_count(block), 2);
    allocator.decref(block);
  }
  EXPECT_EQ(allocator.ref_count(block), 1);
  EXPECT_FALSE(allocator.is_free(block));
  EXPECT_EQ(allocator.num_free(), 2);
  allocator.decref(block);
  EXPECT_TRUE(allocator.is_free(block));
  EXPECT_EQ(allocator.num_free(), 3);
}

TEST(BlockAllocatorTest, CachedBlocksAreEvictedLeastRecentlyFreedFirst) {
  BlockAllocator allocator(3);
  int a = *allocator.allocate(), b = *allocator.allocate(), c = *allocator.allocate();
  allocator.decref(b, FreeOrder::kEvictLast);
  allocator.decref(a, FreeOrder::kEvictLast);
  allocator.decref(c, FreeOrder::kEvictLast);
  EXPECT_EQ(allocator.free_queue(), (std::vector<int>{b, a, c}));
  EXPECT_EQ(allocator.allocate(), b);
  EXPECT_EQ(allocator.allocate(), a);
  EXPECT_EQ(allocator.allocate(), c);
}

TEST(BlockAllocatorTest, BlocksHoldingNothingAreHandedOutBeforeCachedOnes) {
  BlockAllocator allocator(3);
  int a = *allocator.allocate(), b = *allocator.allocate(), c = *allocator.allocate();
  allocator.decref(a, FreeOrder::kEvictLast);
  allocator.decref(b, FreeOrder::kEvictFirst);
  allocator.decref(c, FreeOrder::kEvictLast);
  EXPECT_EQ(allocator.free_queue(), (std::vector<int>{b, a, c}));
}

TEST(BlockAllocatorTest, IncrefRevivesAFreeBlockFromTheMiddleOfTheQueue) {
  BlockAllocator allocator(4);
  allocator.incref(2);
  EXPECT_EQ(allocator.ref_count(2), 1);
  EXPECT_EQ(allocator.num_free(), 3);
  EXPECT_EQ(allocator.free_queue(), (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(allocator.allocate(), 0);
  EXPECT_EQ(allocator.allocate(), 1);
  EXPECT_EQ(allocator.allocate(), 3);
  EXPECT_EQ(allocator.allocate(), std::nullopt);
}

TEST(BlockAllocatorDeathTest, DecrefOfAFreeBlockIsAnInvariantViolation) {
  BlockAllocator allocator(1);
  EXPECT_DEATH(allocator.decref(0), "decref of free block 0");
}

}  // namespace
}  // namespace earnserve
