// BlockManager: the paged-KV bookkeeping for every sequence, one block pool per KV layer group
// (cache/kv_group_spec.h). It maps each sequence's tokens to KV slots, shares blocks between
// sequences (prefix-cache hits, beam forks) with copy-on-write, and keeps freed full blocks
// reusable through the prefix cache until their space is needed. It deals in block ids only:
// the KV memory belongs to cache/kv_cache.h, which executes the copies this class asks for.
//
// Ownership: the caller owns each sequence's tokens and kept flags (the scheduler's Sequence) and
// passes them to the calls that read them; the manager keeps only its own bookkeeping per
// sequence: the token count, where the kept tokens are, block tables and block hashes. Callers
// borrow block tables by const reference, valid until the next call that changes that sequence.
// Sequences are named by caller-chosen int64 ids.
//
// Slots: in group g a sequence's r-th slot-holding token (every token in a kAllTokens group, the
// r-th kept token in a kMarkedTokens group) lives in slot table[r / B_g] * B_g + r % B_g, with
// B_g = block_size(g) (groups may differ), so batch metadata is arithmetic over block_table().
//
// Prefix caching (vLLM-style): a block that is full and computed (mark_computed) is registered
// under a hash chained over ALL earlier tokens of the sequence, kept or not (the KV of a token
// depends on every token before it), so a marked group's block hash covers every token from
// just after the previous block's last kept token up to its own last kept token. allocate()
// reuses the longest prefix cached in every group. A shared block that a sequence must write
// into (the tail of a prefix hit, or a forked last block) is first copied: take_pending_copies().
//
// Not thread-safe: owned and driven by the engine thread (the scheduler).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "cache/block_allocator.h"
#include "cache/block_copy.h"
#include "cache/kv_group_spec.h"
#include "cache/prefix_cache.h"

namespace earnserve {

// Counters since construction. Queries are counted by successful allocate() calls only, so a
// prompt that waits for room and retries is counted once.
struct PrefixCacheStats {
  int64_t num_queries = 0;   // allocate() calls with prefix caching on
  int64_t query_tokens = 0;  // prompt tokens looked up
  int64_t hit_tokens = 0;    // of those, tokens reported cached (not recomputed)
  // Per group.
  std::vector<int64_t> query_blocks;  // full prompt blocks looked up
  std::vector<int64_t> hit_blocks;    // prompt blocks reused from the cache
  std::vector<int64_t> evictions;     // cached blocks evicted to make room

  double token_hit_rate() const {
    return query_tokens == 0 ? 0.0 : static_cast<double>(hit_tokens) / query_tokens;
  }
};

class BlockManager {
 public:
  // `block_size`: the tokens per block of every group whose spec leaves its block_size 0.
  // REQUIRES: groups non-empty, num_blocks_per_group.size() == groups.size(), block_size > 0.
  BlockManager(std::vector<KvGroupSpec> groups, std::vector<int> num_blocks_per_group,
               int block_size, bool enable_prefix_caching);

  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  // Token arguments: `token_ids` with one kept flag each (non-zero = kept); an empty `kept`
  // means every token is kept. A kAllTokens group ignores the flags.

  // Whether allocate() of this prompt would succeed now: every group has enough free blocks
  // (evictable ones included) for the whole prompt after counting prefix-cache hits.
  bool can_allocate(std::span<const int32_t> token_ids, std::span<const uint8_t> kept = {},
                    uint64_t extra_key = 0) const;

  // Creates sequence `seq_id` holding the prompt and slots for all of it. Returns the number of
  // leading tokens whose KV is already cached in every group (they count as computed; the
  // caller computes the rest), always < token_ids.size() so the last token yields logits; or
  // nullopt, changing nothing, when some group lacks blocks. `extra_key` enters every block hash
  // (prompts with different keys never share KV).
  // REQUIRES: seq_id is new; token_ids non-empty.
  std::optional<int> allocate(int64_t seq_id, std::span<const int32_t> token_ids,
                              std::span<const uint8_t> kept = {}, uint64_t extra_key = 0);

  // Appends tokens to the sequence and gives them slots, allocating blocks (and copying a shared
  // last block) as needed. Returns false, changing nothing, when some group lacks blocks. The
  // ids are not stored (mark_computed reads them again); their number and flags count.
  bool append_slots(int64_t seq_id, std::span<const int32_t> token_ids,
                    std::span<const uint8_t> kept = {});

  // Records that the first `num_computed_tokens` tokens have their KV written. Full blocks among
  // them become prefix-cache entries, hashed over `token_ids` / `kept`: the sequence's tokens as
  // allocated and appended, at least its first `num_computed_tokens`.
  // REQUIRES: not below the previous value, <= num_tokens().
  void mark_computed(int64_t seq_id, int num_computed_tokens, std::span<const int32_t> token_ids,
                     std::span<const uint8_t> kept = {});

  // Drops every token from `num_tokens` on (rejected speculative tokens, say) and the blocks
  // that only they used. Kept tokens keep their KV; a later append that writes into a block still
  // shared or cached copies it first. REQUIRES: 1 <= num_tokens <= num_tokens(seq_id).
  void truncate(int64_t seq_id, int num_tokens);

  // Creates `child_id` sharing every block of `parent_id` (no copy; ref counts rise). The first
  // append into a shared, partly filled last block copies it (copy-on-write).
  // REQUIRES: parent exists with all its tokens computed; child_id is new.
  void fork(int64_t parent_id, int64_t child_id);

  // Drops the sequence and its references. Blocks left unreferenced become free; full computed
  // ones stay in the prefix cache (evictable, least recently freed first) until reused or
  // evicted. Preemption by recompute is free() and a later allocate() of all tokens so far.
  void free(int64_t seq_id);

  // Copies the caller must execute on the KV storage, in order, before the next model step.
  std::vector<BlockCopy> take_pending_copies();
  const std::vector<BlockCopy>& pending_copies() const { return pending_copies_; }

  // ---- Per sequence. REQUIRES: the sequence exists (except contains()).
  bool contains(int64_t seq_id) const { return seqs_.count(seq_id) != 0; }
  int num_tokens(int64_t seq_id) const;
  int num_computed_tokens(int64_t seq_id) const;
  // Slots the sequence occupies in the group (its KV length there).
  int num_kept_tokens(int64_t seq_id, int group) const;
  const std::vector<int>& block_table(int64_t seq_id, int group) const;
  int num_blocks(int64_t seq_id, int group) const;
  // Slot of token `token_index` in the group; -1 for a token not kept in a kMarkedTokens group.
  int slot(int64_t seq_id, int group, int token_index) const;
  // out[i] = slot(seq_id, group, first_token + i). REQUIRES: the tokens exist.
  void write_slot_mapping(int64_t seq_id, int group, int first_token, std::span<int32_t> out) const;

  // ---- Pools.
  int num_groups() const { return static_cast<int>(groups_.size()); }
  const KvGroupSpec& group_spec(int group) const { return groups_[group]; }
  // Tokens per block in the group's pages.
  int block_size(int group) const { return groups_[group].block_size; }
  bool prefix_caching_enabled() const { return enable_prefix_caching_; }
  int num_sequences() const { return static_cast<int>(seqs_.size()); }
  // Free blocks include evictable cached ones.
  int num_free_blocks(int group) const { return pools_[group].allocator.num_free(); }
  int num_used_blocks(int group) const { return pools_[group].allocator.num_used(); }
  int num_total_blocks(int group) const { return pools_[group].allocator.num_total(); }
  // Fraction of blocks in use, in the fullest group.
  double usage() const;
  // Whether the block is registered in the group's prefix cache.
  bool is_cached_block(int group, int block) const { return pools_[group].cache.is_cached(block); }
  const BlockAllocator& allocator(int group) const { return pools_[group].allocator; }
  const PrefixCacheStats& prefix_cache_stats() const { return stats_; }

 private:
  struct GroupState {
    std::vector<int> block_table;
    std::vector<uint64_t> block_hashes;  // of the leading full blocks, filled lazily
    int num_registered_blocks = 0;       // leading blocks already offered to the prefix cache
  };
  struct Sequence {
    int num_tokens = 0;
    // Per kept token: its token index (ascending). Only when some group is kMarkedTokens.
    std::vector<int32_t> kept_index;
    uint64_t extra_key = 0;
    int num_computed = 0;
    std::vector<GroupState> groups;
  };
  struct Pool {
    BlockAllocator allocator;
    PrefixCache cache;
  };
  struct GroupPlan {
    std::vector<int> hit_blocks;  // cached blocks the sequence will share, in table order
    int num_slots_cached = 0;     // slots covered by the cached prefix
    int num_new_blocks = 0;       // blocks to take from the free queue (copy included)
    int num_revived = 0;          // hit blocks now free (evictable): they stop counting as free
  };
  struct AllocationPlan {
    int num_cached_tokens = 0;
    std::vector<GroupPlan> groups;
  };

  Sequence make_sequence(int num_tokens, std::span<const uint8_t> kept, uint64_t extra_key) const;
  void append_tokens(Sequence& seq, int num_tokens, std::span<const uint8_t> kept) const;
  // `token_ids` / `kept`: the new sequence's tokens (for the hashes).
  AllocationPlan plan_allocation(Sequence& seq, std::span<const int32_t> token_ids,
                                 std::span<const uint8_t> kept) const;
  bool plan_fits(const AllocationPlan& plan) const;

  bool is_marked(int group) const { return groups_[group].rule == TokenRule::kMarkedTokens; }
  int num_slots(const Sequence& seq, int group) const;
  // Slots held by the sequence's first `num_tokens` tokens in the group.
  int num_slots_before(const Sequence& seq, int group, int num_tokens) const;
  int blocks_for(int group, int num_slots) const {
    return (num_slots + block_size(group) - 1) / block_size(group);
  }
  // The token's slot index in the group (its rank among kept tokens in a kMarkedTokens group),
  // or -1 for a token the group does not keep.
  int rank_of(const Sequence& seq, int group, int token_index) const;
  // Hashes of the group's first `num_blocks` full blocks, over the caller's tokens.
  // REQUIRES: those blocks are full; token_ids covers them.
  void extend_hashes(Sequence& seq, int group, int num_blocks, std::span<const int32_t> token_ids,
                     std::span<const uint8_t> kept) const;

  Sequence& get(int64_t seq_id);
  const Sequence& get(int64_t seq_id) const;

  int allocate_block(int group);
  void release_block(int group, int block);
  // Whether writing into the sequence's block `index` would need a copy first.
  bool needs_copy(const Sequence& seq, int group, int index) const;
  // Makes the sequence's block `index` its own before a write: copies it when shared, drops its
  // prefix-cache entry (its content is about to change) when not.
  void make_writable(Sequence& seq, int group, int index);

  // Constant after construction. Every group's block_size is set (> 0).
  std::vector<KvGroupSpec> groups_;
  bool enable_prefix_caching_;
  bool any_marked_ = false;  // some group is kMarkedTokens

  std::vector<Pool> pools_;
  std::unordered_map<int64_t, Sequence> seqs_;
  std::vector<BlockCopy> pending_copies_;
  PrefixCacheStats stats_;
};

}  // namespace earnserve
