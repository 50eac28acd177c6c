// Prefix caching, the hashing half: block hashes chained over a sequence's tokens, and one
// group's index from hash to the block holding that KV. The ref counts and the LRU order of
// evictable blocks live in the group's BlockAllocator; cache/block_manager.h ties the two
// together (a block with ref count 0 that is still in this index is "evictable": counted as
// free, reused on a hit, evicted, and dropped from the index, when the allocator hands it out).
//
// A block's hash covers its parent block's hash (which covers every earlier token), the token
// ids it spans with their kept flags, and, through the root hash, the sequence's extra key.
// Collision assumption: a hit is trusted without comparing tokens. The 64-bit hash is a
// splitmix64-style mix applied per token, so for a pool of B cached blocks the chance that any
// lookup meets a false match is about B * lookups / 2^64: negligible next to hardware faults,
// the same trade vLLM makes with its default hash.
//
// Not thread-safe: owned by the block manager on the engine thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

namespace earnserve {

// The parent hash of a sequence's first block. `extra_key` separates KV that the same tokens
// would not produce (another adapter, a cache salt); 0 when nothing does.
uint64_t prefix_root_hash(uint64_t extra_key);

// The hash of one block: the parent's hash, then every token the block spans.
// REQUIRES: token_ids.size() == kept.size().
uint64_t hash_block_tokens(uint64_t parent_hash, std::span<const int32_t> token_ids,
                           std::span<const uint8_t> kept);

class PrefixCache {
 public:
  explicit PrefixCache(int num_blocks);

  PrefixCache(const PrefixCache&) = delete;
  PrefixCache& operator=(const PrefixCache&) = delete;
  PrefixCache(PrefixCache&&) = default;
  PrefixCache& operator=(PrefixCache&&) = default;

  // The block registered under `hash`, if any.
  std::optional<int> lookup(uint64_t hash) const;

  // Registers `block` under `hash`. Returns false and changes nothing when the hash already names
  // a block (the first writer keeps it) or the block already has a hash.
  bool insert(uint64_t hash, int block);

  // Drops the block's registration; returns whether it had one.
  bool erase(int block);

  bool is_cached(int block) const { return has_hash_[block] != 0; }
  int num_cached_blocks() const { return static_cast<int>(block_of_hash_.size()); }

 private:
  std::unordered_map<uint64_t, int> block_of_hash_;
  std::vector<uint64_t> hash_of_block_;
  std::vector<uint8_t> has_hash_;
};

}  // namespace earnserve
