// BlockAllocator: reference-counted block ids for one KV block pool. It owns no memory (the KV
// storage in cache/kv_cache.h does) and knows nothing of tokens or hashes; it hands out ids and
// keeps the free ones in a queue whose front is evicted first.
//
// The free queue is an intrusive doubly linked list, so taking a free block back out of the
// middle (a prefix-cache hit on an evictable block) is O(1). Blocks that hold nothing worth
// keeping are freed to the front; blocks that stay reusable through the prefix cache are freed
// to the back, so the queue front is always the least recently freed cached block (LRU).
//
// Not thread-safe: owned and driven by the engine thread.
#pragma once

#include <optional>
#include <vector>

namespace earnserve {

class BlockAllocator {
 public:
  // Where a block whose ref count drops to zero enters the free queue.
  enum class FreeOrder {
    kEvictLast,   // back: it holds cached KV that may be reused
    kEvictFirst,  // front: it holds nothing worth keeping
  };

  // Ids 0..num_blocks-1, all free, queued in ascending order. REQUIRES: num_blocks >= 0.
  explicit BlockAllocator(int num_blocks);

  BlockAllocator(const BlockAllocator&) = delete;
  BlockAllocator& operator=(const BlockAllocator&) = delete;
  BlockAllocator(BlockAllocator&&) = default;
  BlockAllocator& operator=(BlockAllocator&&) = default;

  // Takes the block at the front of the free queue and gives it ref count 1; nullopt when every
  // block is in use (a normal outcome). The caller drops whatever the block cached before.
  std::optional<int> allocate();

  // Adds a reference. A free block (ref count 0) leaves the free queue: this is how a prefix-cache
  // hit revives an evictable block.
  void incref(int block);

  // Drops a reference; at zero the block joins the free queue at the end `order` says.
  // REQUIRES: ref_count(block) > 0.
  void decref(int block, FreeOrder order = FreeOrder::kEvictFirst);

  int ref_count(int block) const;
  bool is_free(int block) const { return ref_count(block) == 0; }
  int num_free() const { return num_free_; }
  int num_total() const { return static_cast<int>(ref_counts_.size()); }
  int num_used() const { return num_total() - num_free_; }

  // The free queue from front (evicted first) to back. O(num_free); for tests and debugging.
  std::vector<int> free_queue() const;

 private:
  void link_front(int block);
  void link_back(int block);
  void unlink(int block);

  std::vector<int> ref_counts_;
  // Free-queue links; -1 ends the list. Meaningful only for free blocks.
  std::vector<int> prev_;
  std::vector<int> next_;
  int head_ = -1;
  int tail_ = -1;
  int num_free_ = 0;
};

}  // namespace earnserve
