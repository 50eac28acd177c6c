#include "cache/block_allocator.h"

#include "core/logging.h"

namespace earnserve {

namespace {
constexpr int kNone = -1;
}  // namespace

BlockAllocator::BlockAllocator(int num_blocks)
    : ref_counts_(num_blocks, 0), prev_(num_blocks, kNone), next_(num_blocks, kNone) {
  ES_CHECK_GE(num_blocks, 0);
  for (int block = 0; block < num_blocks; ++block) link_back(block);
}

std::optional<int> BlockAllocator::allocate() {
  if (head_ == kNone) return std::nullopt;
  int block = head_;
  unlink(block);
  ref_counts_[block] = 1;
  return block;
}

void BlockAllocator::incref(int block) {
  ES_CHECK(block >= 0 && block < num_total()) << "block " << block;
  if (ref_counts_[block] == 0) unlink(block);
  ++ref_counts_[block];
}

void BlockAllocator::decref(int block, FreeOrder order) {
  ES_CHECK(block >= 0 && block < num_total()) << "block " << block;
  ES_CHECK_GT(ref_counts_[block], 0) << "decref of free block " << block;
  if (--ref_counts_[block] > 0) return;
  if (order == FreeOrder::kEvictFirst) {
    link_front(block);
  } else {
    link_back(block);
  }
}

int BlockAllocator::ref_count(int block) const {
  ES_CHECK(block >= 0 && block < num_total()) << "block " << block;
  return ref_counts_[block];
}

std::vector<int> BlockAllocator::free_queue() const {
  std::vector<int> order;
  order.reserve(num_free_);
  for (int block = head_; block != kNone; block = next_[block]) order.push_back(block);
  return order;
}

void BlockAllocator::link_front(int block) {
  prev_[block] = kNone;
  next_[block] = head_;
  if (head_ != kNone) prev_[head_] = block;
  head_ = block;
  if (tail_ == kNone) tail_ = block;
  ++num_free_;
}

void BlockAllocator::link_back(int block) {
  next_[block] = kNone;
  prev_[block] = tail_;
  if (tail_ != kNone) next_[tail_] = block;
  tail_ = block;
  if (head_ == kNone) head_ = block;
  ++num_free_;
}

void BlockAllocator::unlink(int block) {
  int prev = prev_[block];
  int next = next_[block];
  if (prev != kNone) {
    next_[prev] = next;
  } else {
    head_ = next;
  }
  if (next != kNone) {
    prev_[next] = prev;
  } else {
    tail_ = prev;
  }
  prev_[block] = kNone;
  next_[block] = kNone;
  --num_free_;
}

}  // namespace earnserve
