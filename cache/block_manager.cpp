#include "cache/block_manager.h"

#include <algorithm>
#include <utility>

#include "core/logging.h"

namespace earnserve {

BlockManager::BlockManager(std::vector<KvGroupSpec> groups, std::vector<int> num_blocks_per_group,
                           int block_size, bool enable_prefix_caching)
    : groups_(resolve_block_sizes(std::move(groups), block_size)),
      enable_prefix_caching_(enable_prefix_caching) {
  ES_CHECK(!groups_.empty());
  ES_CHECK_EQ(num_blocks_per_group.size(), groups_.size());
  ES_CHECK_GT(block_size, 0);
  for (const KvGroupSpec& g : groups_) ES_CHECK_GT(g.block_size, 0);
  pools_.reserve(groups_.size());
  for (int num_blocks : num_blocks_per_group) {
    ES_CHECK_GE(num_blocks, 0);
    pools_.push_back(Pool{BlockAllocator(num_blocks), PrefixCache(num_blocks)});
  }
  for (const KvGroupSpec& g : groups_)
    any_marked_ = any_marked_ || g.rule == TokenRule::kMarkedTokens;
  stats_.query_blocks.assign(groups_.size(), 0);
  stats_.hit_blocks.assign(groups_.size(), 0);
  stats_.evictions.assign(groups_.size(), 0);
}

// ---- Sequences and slots -----------------------------------------------------------------------

void BlockManager::append_tokens(Sequence& seq, int num_tokens,
                                 std::span<const uint8_t> kept) const {
  ES_CHECK(kept.empty() || static_cast<int>(kept.size()) == num_tokens)
      << kept.size() << " kept flags for " << num_tokens << " tokens";
  if (any_marked_) {
    for (int i = 0; i < num_tokens; ++i) {
      if (kept.empty() || kept[i] != 0) seq.kept_index.push_back(seq.num_tokens + i);
    }
  }
  seq.num_tokens += num_tokens;
}

BlockManager::Sequence BlockManager::make_sequence(int num_tokens, std::span<const uint8_t> kept,
                                                   uint64_t extra_key) const {
  Sequence seq;
  seq.extra_key = extra_key;
  seq.groups.resize(groups_.size());
  append_tokens(seq, num_tokens, kept);
  return seq;
}

int BlockManager::num_slots(const Sequence& seq, int group) const {
  return is_marked(group) ? static_cast<int>(seq.kept_index.size()) : seq.num_tokens;
}

int BlockManager::num_slots_before(const Sequence& seq, int group, int num_tokens) const {
  if (!is_marked(group)) return num_tokens;
  auto end = std::lower_bound(seq.kept_index.begin(), seq.kept_index.end(), num_tokens);
  return static_cast<int>(end - seq.kept_index.begin());
}

int BlockManager::rank_of(const Sequence& seq, int group, int token_index) const {
  if (!is_marked(group)) return token_index;
  auto it = std::lower_bound(seq.kept_index.begin(), seq.kept_index.end(), token_index);
  if (it == seq.kept_index.end() || *it != token_index) return -1;
  return static_cast<int>(it - seq.kept_index.begin());
}

void BlockManager::extend_hashes(Sequence& seq, int group, int num_blocks,
                                 std::span<const int32_t> token_ids,
                                 std::span<const uint8_t> kept) const {
  ES_CHECK(kept.empty() || kept.size() == token_ids.size())
      << kept.size() << " kept flags for " << token_ids.size() << " tokens";
  std::vector<uint8_t> all_kept;
  std::vector<uint64_t>& hashes = seq.groups[group].block_hashes;
  const int bs = block_size(group);
  while (static_cast<int>(hashes.size()) < num_blocks) {
    int j = static_cast<int>(hashes.size());
    int begin, end;  // token range [begin, end) the block's hash covers
    if (is_marked(group)) {
      begin = j == 0 ? 0 : seq.kept_index[j * bs - 1] + 1;
      end = seq.kept_index[(j + 1) * bs - 1] + 1;
    } else {
      begin = j * bs;
      end = (j + 1) * bs;
    }
    ES_CHECK_LE(end, static_cast<int>(token_ids.size()));
    std::span<const uint8_t> flags;
    if (kept.empty()) {
      all_kept.assign(end - begin, 1);
      flags = all_kept;
    } else {
      flags = kept.subspan(begin, end - begin);
    }
    uint64_t parent = j == 0 ? prefix_root_hash(seq.extra_key) : hashes[j - 1];
    hashes.push_back(hash_block_tokens(parent, token_ids.subspan(begin, end - begin), flags));
  }
}

BlockManager::Sequence& BlockManager::get(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  ES_CHECK(it != seqs_.end()) << "unknown sequence " << seq_id;
  return it->second;
}

const BlockManager::Sequence& BlockManager::get(int64_t seq_id) const {
  auto it = seqs_.find(seq_id);
  ES_CHECK(it != seqs_.end()) << "unknown sequence " << seq_id;
  return it->second;
}

int BlockManager::num_tokens(int64_t seq_id) const { return get(seq_id).num_tokens; }

int BlockManager::num_computed_tokens(int64_t seq_id) const { return get(seq_id).num_computed; }

int BlockManager::num_kept_tokens(int64_t seq_id, int group) const {
  return num_slots(get(seq_id), group);
}

const std::vector<int>& BlockManager::block_table(int64_t seq_id, int group) const {
  return get(seq_id).groups[group].block_table;
}

int BlockManager::num_blocks(int64_t seq_id, int group) const {
  return static_cast<int>(block_table(seq_id, group).size());
}

int BlockManager::slot(int64_t seq_id, int group, int token_index) const {
  const Sequence& seq = get(seq_id);
  ES_CHECK(token_index >= 0 && token_index < seq.num_tokens)
      << "token " << token_index << " of a " << seq.num_tokens << "-token sequence";
  int rank = rank_of(seq, group, token_index);
  if (rank < 0) return -1;
  const int bs = block_size(group);
  return seq.groups[group].block_table[rank / bs] * bs + rank % bs;
}

void BlockManager::write_slot_mapping(int64_t seq_id, int group, int first_token,
                                      std::span<int32_t> out) const {
  const Sequence& seq = get(seq_id);
  int count = static_cast<int>(out.size());
  ES_CHECK(first_token >= 0 && first_token + count <= seq.num_tokens)
      << "tokens [" << first_token << ", " << first_token + count << ") of a " << seq.num_tokens
      << "-token sequence";
  const std::vector<int>& table = seq.groups[group].block_table;
  const bool marked = is_marked(group);
  const int bs = block_size(group);
  // Marked groups: the kept tokens from first_token on, walked once.
  size_t next_kept =
      marked ? std::lower_bound(seq.kept_index.begin(), seq.kept_index.end(), first_token) -
                   seq.kept_index.begin()
             : 0;
  for (int i = 0; i < count; ++i) {
    int rank = first_token + i;
    if (marked) {
      const bool kept = next_kept < seq.kept_index.size() && seq.kept_index[next_kept] == rank;
      rank = kept ? static_cast<int>(next_kept++) : -1;
    }
    out[i] = rank < 0 ? -1 : table[rank / bs] * bs + rank % bs;
  }
}

double BlockManager::usage() const {
  double worst = 0.0;
  for (const Pool& pool : pools_) {
    if (pool.allocator.num_total() == 0) continue;
    worst = std::max(worst,
                     static_cast<double>(pool.allocator.num_used()) / pool.allocator.num_total());
  }
  return worst;
}

// ---- Blocks ------------------------------------------------------------------------------------

int BlockManager::allocate_block(int group) {
  Pool& pool = pools_[group];
  std::optional<int> block = pool.allocator.allocate();
  ES_CHECK(block.has_value()) << "group " << group << " ran out of blocks after a capacity check";
  if (pool.cache.erase(*block)) ++stats_.evictions[group];
  return *block;
}

void BlockManager::release_block(int group, int block) {
  Pool& pool = pools_[group];
  bool cached = pool.cache.is_cached(block);
  pool.allocator.decref(block, cached ? BlockAllocator::FreeOrder::kEvictLast
                                      : BlockAllocator::FreeOrder::kEvictFirst);
  if (pool.allocator.is_free(block) && !cached) {
    // A copy into a block nobody holds any more is moot.
    std::erase_if(pending_copies_,
                  [&](const BlockCopy& c) { return c.group == group && c.dst_block == block; });
  }
}

bool BlockManager::needs_copy(const Sequence& seq, int group, int index) const {
  return pools_[group].allocator.ref_count(seq.groups[group].block_table[index]) > 1;
}

void BlockManager::make_writable(Sequence& seq, int group, int index) {
  int& block = seq.groups[group].block_table[index];
  Pool& pool = pools_[group];
  if (pool.allocator.ref_count(block) > 1) {
    int copy = allocate_block(group);
    pending_copies_.push_back(BlockCopy{group, block, copy});
    release_block(group, block);
    block = copy;
  } else {
    pool.cache.erase(block);
  }
}

std::vector<BlockCopy> BlockManager::take_pending_copies() {
  return std::exchange(pending_copies_, {});
}

// ---- Allocation --------------------------------------------------------------------------------

BlockManager::AllocationPlan BlockManager::plan_allocation(Sequence& seq,
                                                           std::span<const int32_t> token_ids,
                                                           std::span<const uint8_t> kept) const {
  int num_groups = static_cast<int>(groups_.size());
  int n = seq.num_tokens;
  AllocationPlan plan;
  plan.groups.resize(num_groups);
  std::vector<std::vector<int>> found(num_groups);

  // The longest prefix of tokens whose KV every group has cached, short of the last token.
  int cached_tokens = 0;
  if (enable_prefix_caching_) {
    cached_tokens = n - 1;
    for (int g = 0; g < num_groups; ++g) {
      int num_full = num_slots(seq, g) / block_size(g);
      extend_hashes(seq, g, num_full, token_ids, kept);
      const PrefixCache& cache = pools_[g].cache;
      for (int j = 0; j < num_full; ++j) {
        std::optional<int> block = cache.lookup(seq.groups[g].block_hashes[j]);
        if (!block) break;
        found[g].push_back(*block);
      }
      int covered_slots = static_cast<int>(found[g].size()) * block_size(g);
      // Tokens before the first slot-holding token past the cached blocks are covered.
      int covered_tokens;
      if (is_marked(g)) {
        covered_tokens = covered_slots < static_cast<int>(seq.kept_index.size())
                             ? seq.kept_index[covered_slots]
                             : n;
      } else {
        covered_tokens = covered_slots;
      }
      cached_tokens = std::min(cached_tokens, covered_tokens);
    }
  }
  plan.num_cached_tokens = cached_tokens;

  for (int g = 0; g < num_groups; ++g) {
    GroupPlan& gp = plan.groups[g];
    const BlockAllocator& allocator = pools_[g].allocator;
    gp.num_slots_cached = num_slots_before(seq, g, cached_tokens);
    int num_shared = blocks_for(g, gp.num_slots_cached);
    gp.hit_blocks.assign(found[g].begin(), found[g].begin() + num_shared);
    for (int block : gp.hit_blocks) {
      if (allocator.is_free(block)) ++gp.num_revived;
    }
    int total = num_slots(seq, g);
    gp.num_new_blocks = blocks_for(g, total) - num_shared;
    // Prefill writes into a cached tail block that someone else holds: it is copied first.
    bool writes_tail = gp.num_slots_cached % block_size(g) != 0 && gp.num_slots_cached < total;
    if (writes_tail && !allocator.is_free(gp.hit_blocks.back())) ++gp.num_new_blocks;
  }
  return plan;
}

bool BlockManager::plan_fits(const AllocationPlan& plan) const {
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    const GroupPlan& gp = plan.groups[g];
    if (gp.num_new_blocks > pools_[g].allocator.num_free() - gp.num_revived) return false;
  }
  return true;
}

bool BlockManager::can_allocate(std::span<const int32_t> token_ids, std::span<const uint8_t> kept,
                                uint64_t extra_key) const {
  ES_CHECK(!token_ids.empty());
  Sequence seq = make_sequence(static_cast<int>(token_ids.size()), kept, extra_key);
  return plan_fits(plan_allocation(seq, token_ids, kept));
}

std::optional<int> BlockManager::allocate(int64_t seq_id, std::span<const int32_t> token_ids,
                                          std::span<const uint8_t> kept, uint64_t extra_key) {
  ES_CHECK(!token_ids.empty()) << "empty prompt for sequence " << seq_id;
  ES_CHECK(!contains(seq_id)) << "sequence " << seq_id << " already exists";
  Sequence seq = make_sequence(static_cast<int>(token_ids.size()), kept, extra_key);
  AllocationPlan plan = plan_allocation(seq, token_ids, kept);
  if (!plan_fits(plan)) return std::nullopt;

  for (int g = 0; g < num_groups(); ++g) {
    const GroupPlan& gp = plan.groups[g];
    GroupState& state = seq.groups[g];
    // Revive hits before taking new blocks, so evictions cannot take them.
    for (int block : gp.hit_blocks) pools_[g].allocator.incref(block);
    state.block_table = gp.hit_blocks;
    state.num_registered_blocks = gp.num_slots_cached / block_size(g);
    int total = num_slots(seq, g);
    if (gp.num_slots_cached % block_size(g) != 0 && gp.num_slots_cached < total) {
      make_writable(seq, g, static_cast<int>(state.block_table.size()) - 1);
    }
    while (static_cast<int>(state.block_table.size()) < blocks_for(g, total)) {
      state.block_table.push_back(allocate_block(g));
    }
    if (enable_prefix_caching_) {
      stats_.query_blocks[g] += total / block_size(g);
      stats_.hit_blocks[g] += static_cast<int64_t>(gp.hit_blocks.size());
    }
  }
  if (enable_prefix_caching_) {
    ++stats_.num_queries;
    stats_.query_tokens += static_cast<int64_t>(token_ids.size());
    stats_.hit_tokens += plan.num_cached_tokens;
  }
  seq.num_computed = plan.num_cached_tokens;
  seqs_.emplace(seq_id, std::move(seq));
  return plan.num_cached_tokens;
}

bool BlockManager::append_slots(int64_t seq_id, std::span<const int32_t> token_ids,
                                std::span<const uint8_t> kept) {
  Sequence& seq = get(seq_id);
  ES_CHECK(kept.empty() || kept.size() == token_ids.size())
      << kept.size() << " kept flags for " << token_ids.size() << " tokens";
  int num_groups = static_cast<int>(groups_.size());
  std::vector<int> old_slots(num_groups), new_slots(num_groups);
  for (int g = 0; g < num_groups; ++g) {
    old_slots[g] = num_slots(seq, g);
    int added = static_cast<int>(token_ids.size());
    if (is_marked(g) && !kept.empty()) {
      added = static_cast<int>(
          std::count_if(kept.begin(), kept.end(), [](uint8_t k) { return k != 0; }));
    }
    new_slots[g] = old_slots[g] + added;
    const int bs = block_size(g);
    int needed = blocks_for(g, new_slots[g]) - static_cast<int>(seq.groups[g].block_table.size());
    bool writes_tail = old_slots[g] % bs != 0 && added > 0;
    if (writes_tail && needs_copy(seq, g, old_slots[g] / bs)) ++needed;
    if (needed > pools_[g].allocator.num_free()) return false;
  }

  append_tokens(seq, static_cast<int>(token_ids.size()), kept);
  for (int g = 0; g < num_groups; ++g) {
    if (new_slots[g] == old_slots[g]) continue;
    if (old_slots[g] % block_size(g) != 0) make_writable(seq, g, old_slots[g] / block_size(g));
    std::vector<int>& table = seq.groups[g].block_table;
    while (static_cast<int>(table.size()) < blocks_for(g, new_slots[g])) {
      table.push_back(allocate_block(g));
    }
  }
  return true;
}

void BlockManager::mark_computed(int64_t seq_id, int num_computed_tokens,
                                 std::span<const int32_t> token_ids,
                                 std::span<const uint8_t> kept) {
  Sequence& seq = get(seq_id);
  ES_CHECK(num_computed_tokens >= seq.num_computed && num_computed_tokens <= seq.num_tokens)
      << "sequence " << seq_id << ": " << num_computed_tokens << " computed tokens after "
      << seq.num_computed << ", of " << seq.num_tokens;
  ES_CHECK_GE(static_cast<int>(token_ids.size()), num_computed_tokens)
      << "sequence " << seq_id << ": the caller's tokens end before the computed ones";
  seq.num_computed = num_computed_tokens;
  if (!enable_prefix_caching_) return;
  for (int g = 0; g < num_groups(); ++g) {
    GroupState& state = seq.groups[g];
    int num_full = num_slots_before(seq, g, num_computed_tokens) / block_size(g);
    if (num_full <= state.num_registered_blocks) continue;
    extend_hashes(seq, g, num_full, token_ids, kept);
    for (int j = state.num_registered_blocks; j < num_full; ++j) {
      // Fails harmlessly when another block already holds this KV or this block is registered.
      pools_[g].cache.insert(state.block_hashes[j], state.block_table[j]);
    }
    state.num_registered_blocks = num_full;
  }
}

void BlockManager::truncate(int64_t seq_id, int num_tokens) {
  Sequence& seq = get(seq_id);
  int old_tokens = seq.num_tokens;
  ES_CHECK(num_tokens >= 1 && num_tokens <= old_tokens)
      << "truncate of sequence " << seq_id << " to " << num_tokens << " of " << old_tokens
      << " tokens";
  auto kept_end = std::lower_bound(seq.kept_index.begin(), seq.kept_index.end(), num_tokens);
  seq.kept_index.erase(kept_end, seq.kept_index.end());
  seq.num_tokens = num_tokens;
  seq.num_computed = std::min(seq.num_computed, num_tokens);
  for (int g = 0; g < num_groups(); ++g) {
    GroupState& state = seq.groups[g];
    int slots = num_slots(seq, g);
    int keep_blocks = blocks_for(g, slots);
    while (static_cast<int>(state.block_table.size()) > keep_blocks) {
      release_block(g, state.block_table.back());
      state.block_table.pop_back();
    }
    int full = slots / block_size(g);
    if (static_cast<int>(state.block_hashes.size()) > full) state.block_hashes.resize(full);
    state.num_registered_blocks = std::min(state.num_registered_blocks, full);
  }
}

void BlockManager::fork(int64_t parent_id, int64_t child_id) {
  const Sequence& parent = get(parent_id);
  ES_CHECK(!contains(child_id)) << "sequence " << child_id << " already exists";
  ES_CHECK_EQ(parent.num_computed, parent.num_tokens)
      << "fork of sequence " << parent_id << " with uncomputed tokens";
  Sequence child = parent;
  for (int g = 0; g < num_groups(); ++g) {
    for (int block : child.groups[g].block_table) pools_[g].allocator.incref(block);
  }
  seqs_.emplace(child_id, std::move(child));
}

void BlockManager::free(int64_t seq_id) {
  auto it = seqs_.find(seq_id);
  ES_CHECK(it != seqs_.end()) << "free of unknown sequence " << seq_id;
  for (int g = 0; g < num_groups(); ++g) {
    const std::vector<int>& table = it->second.groups[g].block_table;
    // Tail first, so a prefix's head blocks, the likeliest to be shared, are evicted last.
    for (auto block = table.rbegin(); block != table.rend(); ++block) release_block(g, *block);
  }
  seqs_.erase(it);
}

}  // namespace earnserve
