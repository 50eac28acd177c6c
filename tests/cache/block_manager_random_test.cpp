// Thousands of random operations against a BlockManager, checked after every one of them against
// an independent model: the sequences' tables and the ref counts must agree, and a simulated KV
// store (each slot holding a fingerprint of the token prefix whose KV it stores) must give every
// computed token of every live sequence its own KV in every group, through prefix hits, forks,
// copies-on-write, evictions and preemptions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "cache/block_manager.h"

namespace earnserve {
namespace {

constexpr int kBlockSize = 4;

struct Config {
  const char* name;
  std::vector<KvGroupSpec> groups;
  std::vector<int> num_blocks;
  bool prefix_caching;
};

// What the test knows of a live sequence, independently of the manager.
struct LiveSeq {
  std::vector<int32_t> token_ids;
  std::vector<uint8_t> kept;
  std::vector<uint64_t> fingerprints;  // per token: its KV's identity (the prefix it has seen)
  uint64_t extra_key = 0;
  int num_computed = 0;
};

// A token is kept in register layers when it is a multiple of 3: a function of the token, so
// equal prefixes carry equal flags, as EARN's register tokens do.
uint8_t kept_flag(int32_t token) { return token % 3 == 0 ? 1 : 0; }

uint64_t next_fingerprint(uint64_t previous, int32_t token, uint8_t kept) {
  uint64_t h = previous ^ (static_cast<uint64_t>(static_cast<uint32_t>(token)) * 2 + kept);
  h *= 0x100000001B3ull;  // FNV-1a prime
  h ^= h >> 29;
  return h * 0xFF51AFD7ED558CCDull;
}

class BlockManagerRandomTest : public ::testing::TestWithParam<Config> {
 protected:
  void SetUp() override {
    const Config& config = GetParam();
    manager_ = std::make_unique<BlockManager>(config.groups, config.num_blocks, kBlockSize,
                                              config.prefix_caching);
    for (int g = 0; g < manager_->num_groups(); ++g) {
      kv_.emplace_back(static_cast<size_t>(config.num_blocks[g]) * manager_->block_size(g), 0);
    }
    for (int b = 0; b < 3; ++b) {
      std::vector<int32_t> base;
      for (int i = 0; i < 24; ++i) base.push_back(static_cast<int32_t>(rng_() % 30));
      bases_.push_back(base);
    }
  }

  void append_tokens(LiveSeq& seq, const std::vector<int32_t>& tokens) {
    for (int32_t t : tokens) {
      uint8_t kept = kept_flag(t);
      uint64_t previous = seq.fingerprints.empty() ? seq.extra_key + 1 : seq.fingerprints.back();
      seq.token_ids.push_back(t);
      seq.kept.push_back(kept);
      seq.fingerprints.push_back(next_fingerprint(previous, t, kept));
    }
  }

  std::vector<int32_t> random_prompt() {
    std::vector<int32_t> prompt;
    if (rng_() % 4 != 0) {
      const std::vector<int32_t>& base = bases_[rng_() % bases_.size()];
      prompt.assign(base.begin(), base.begin() + 1 + rng_() % base.size());
      // Sometimes another history under the same registers: one unkept token changes.
      size_t i = rng_() % prompt.size();
      if (rng_() % 3 == 0 && !kept_flag(prompt[i])) prompt[i] = prompt[i] % 3 == 1 ? 2 : 1;
    }
    int extra = static_cast<int>(rng_() % 8) + (prompt.empty() ? 1 : 0);
    for (int i = 0; i < extra; ++i) prompt.push_back(static_cast<int32_t>(rng_() % 30));
    return prompt;
  }

  // Allocates `seq` under a new id; returns whether it fit.
  bool try_allocate(LiveSeq seq) {
    bool predicted = manager_->can_allocate(seq.token_ids, seq.kept, seq.extra_key);
    int64_t id = next_id_++;
    std::optional<int> cached = manager_->allocate(id, seq.token_ids, seq.kept, seq.extra_key);
    EXPECT_EQ(cached.has_value(), predicted);
    if (!cached) {
      ++num_refused_;
      return false;
    }
    EXPECT_GE(*cached, 0);
    EXPECT_LT(*cached, static_cast<int>(seq.token_ids.size()));
    num_cached_tokens_ += *cached;
    seq.num_computed = *cached;
    live_.emplace(id, std::move(seq));
    return true;
  }

  void execute_copies() {
    for (const BlockCopy& copy : manager_->take_pending_copies()) {
      ++num_copies_;
      EXPECT_NE(copy.src_block, copy.dst_block);
      EXPECT_GT(manager_->allocator(copy.group).ref_count(copy.dst_block), 0);
      std::vector<uint64_t>& kv = kv_[copy.group];
      const int bs = manager_->block_size(copy.group);
      std::copy_n(kv.begin() + copy.src_block * bs, bs, kv.begin() + copy.dst_block * bs);
    }
  }

  // One model step for the sequence: copies first, then its next tokens' KV is written.
  void compute(int64_t id, LiveSeq& seq) {
    int n = static_cast<int>(seq.token_ids.size());
    int target = seq.num_computed + 1 + static_cast<int>(rng_() % (n - seq.num_computed));
    execute_copies();
    for (int g = 0; g < manager_->num_groups(); ++g) {
      for (int t = seq.num_computed; t < target; ++t) {
        int slot = manager_->slot(id, g, t);
        if (slot >= 0) kv_[g][slot] = seq.fingerprints[t];
      }
    }
    seq.num_computed = target;
    manager_->mark_computed(id, target, seq.token_ids, seq.kept);
  }

  int64_t pick_live() {
    auto it = live_.begin();
    std::advance(it, rng_() % live_.size());
    return it->first;
  }

  void preempt(int64_t id) {
    LiveSeq seq = std::move(live_.at(id));
    live_.erase(id);
    manager_->free(id);
    seq.num_computed = 0;
    preempted_.push_back(std::move(seq));
    ++num_preempted_;
  }

  void step() {
    uint32_t op = rng_() % 100;
    if (op < 20 && live_.size() < 14) {
      LiveSeq seq;
      seq.extra_key = rng_() % 8 == 0 ? 1 : 0;
      append_tokens(seq, random_prompt());
      try_allocate(std::move(seq));
    } else if (op < 28 && !preempted_.empty()) {
      // Resume a preempted sequence with everything it had: a prefix-cache hit if it survived.
      if (try_allocate(preempted_.front())) preempted_.erase(preempted_.begin());
    } else if (op < 70 && !live_.empty()) {
      int64_t id = pick_live();
      LiveSeq& seq = live_.at(id);
      if (seq.num_computed < static_cast<int>(seq.token_ids.size())) {
        compute(id, seq);
        return;
      }
      if (rng_() % 5 == 0) {
        // Rejected draft tokens (or a rollback): the tail goes, the rest keeps its KV.
        int keep = 1 + static_cast<int>(rng_() % seq.token_ids.size());
        manager_->truncate(id, keep);
        seq.token_ids.resize(keep);
        seq.kept.resize(keep);
        seq.fingerprints.resize(keep);
        seq.num_computed = std::min(seq.num_computed, keep);
        ++num_truncated_;
        return;
      }
      std::vector<int32_t> tokens;
      int count = 1 + static_cast<int>(rng_() % 3);
      for (int i = 0; i < count; ++i) tokens.push_back(static_cast<int32_t>(rng_() % 30));
      std::vector<uint8_t> kept;
      for (int32_t t : tokens) kept.push_back(kept_flag(t));
      if (manager_->append_slots(id, tokens, kept)) {
        append_tokens(seq, tokens);
      } else {
        preempt(id);
      }
    } else if (op < 82 && !live_.empty() && live_.size() < 14) {
      int64_t parent = pick_live();
      LiveSeq& seq = live_.at(parent);
      if (seq.num_computed < static_cast<int>(seq.token_ids.size())) return;
      int64_t child = next_id_++;
      manager_->fork(parent, child);
      live_.emplace(child, live_.at(parent));
      ++num_forks_;
    } else if (op < 94 && !live_.empty()) {
      int64_t id = pick_live();
      manager_->free(id);
      live_.erase(id);
    } else if (!live_.empty()) {
      preempt(pick_live());
    }
  }

  void check_invariants() {
    // The KV as the next step will see it: after the copies the manager has asked for.
    std::vector<std::vector<uint64_t>> kv = kv_;
    for (const BlockCopy& copy : manager_->pending_copies()) {
      const int bs = manager_->block_size(copy.group);
      std::copy_n(kv[copy.group].begin() + copy.src_block * bs, bs,
                  kv[copy.group].begin() + copy.dst_block * bs);
    }
    for (int g = 0; g < manager_->num_groups(); ++g) {
      const BlockAllocator& allocator = manager_->allocator(g);
      std::map<int, int> holders;
      for (const auto& [id, seq] : live_) {
        const std::vector<int>& table = manager_->block_table(id, g);
        std::set<int> distinct(table.begin(), table.end());
        ASSERT_EQ(distinct.size(), table.size()) << "a block twice in sequence " << id;
        int num_slots = manager_->num_kept_tokens(id, g);
        const int bs = manager_->block_size(g);
        ASSERT_EQ(static_cast<int>(table.size()), (num_slots + bs - 1) / bs);
        for (int block : table) ++holders[block];
        // Every computed token's KV is its own, wherever the manager put it.
        for (int t = 0; t < seq.num_computed; ++t) {
          int slot = manager_->slot(id, g, t);
          bool kept = manager_->group_spec(g).rule == TokenRule::kAllTokens || seq.kept[t];
          ASSERT_EQ(slot >= 0, kept);
          if (slot >= 0) {
            ASSERT_EQ(kv[g][slot], seq.fingerprints[t])
                << "sequence " << id << " token " << t << " group " << g;
          }
        }
      }
      int num_free = 0;
      for (int block = 0; block < allocator.num_total(); ++block) {
        int held = holders.count(block) ? holders[block] : 0;
        ASSERT_EQ(allocator.ref_count(block), held) << "group " << g << " block " << block;
        ASSERT_EQ(allocator.is_free(block), held == 0);
        num_free += held == 0 ? 1 : 0;
      }
      ASSERT_EQ(allocator.num_free(), num_free);
      ASSERT_EQ(manager_->num_free_blocks(g) + manager_->num_used_blocks(g),
                manager_->num_total_blocks(g));
      ASSERT_EQ(static_cast<int>(allocator.free_queue().size()), num_free);
    }
    ASSERT_EQ(manager_->num_sequences(), static_cast<int>(live_.size()));
  }

  std::mt19937_64 rng_{20250715};
  std::unique_ptr<BlockManager> manager_;
  std::vector<std::vector<uint64_t>> kv_;  // per group, per slot: the fingerprint stored there
  std::vector<std::vector<int32_t>> bases_;
  std::map<int64_t, LiveSeq> live_;
  std::vector<LiveSeq> preempted_;
  int64_t next_id_ = 1;
  int64_t num_cached_tokens_ = 0;
  int num_refused_ = 0, num_copies_ = 0, num_forks_ = 0, num_preempted_ = 0, num_truncated_ = 0;
};

TEST_P(BlockManagerRandomTest, KeepsEveryInvariantThroughThousandsOfOperations) {
  for (int i = 0; i < 6000; ++i) {
    step();
    ASSERT_NO_FATAL_FAILURE(check_invariants()) << "after operation " << i;
  }
  // The run went through the paths it is meant to test.
  EXPECT_GT(num_forks_, 100);
  EXPECT_GT(num_copies_, 20);
  EXPECT_GT(num_preempted_, 50);
  EXPECT_GT(num_refused_, 10);
  EXPECT_GT(num_truncated_, 50);
  const PrefixCacheStats& stats = manager_->prefix_cache_stats();
  if (GetParam().prefix_caching) {
    EXPECT_GT(num_cached_tokens_, 500);
    for (int g = 0; g < manager_->num_groups(); ++g) {
      EXPECT_GT(stats.hit_blocks[g], 50) << "group " << g;
      EXPECT_GT(stats.evictions[g], 20) << "group " << g;
    }
  } else {
    EXPECT_EQ(num_cached_tokens_, 0);
  }

  while (!live_.empty()) {
    manager_->free(live_.begin()->first);
    live_.erase(live_.begin());
  }
  execute_copies();
  for (int g = 0; g < manager_->num_groups(); ++g) {
    EXPECT_EQ(manager_->num_free_blocks(g), manager_->num_total_blocks(g));
    EXPECT_EQ(manager_->num_used_blocks(g), 0);
  }
  EXPECT_DOUBLE_EQ(manager_->usage(), 0.0);
}

std::vector<KvGroupSpec> two_groups() {
  return {KvGroupSpec{{0, 1}, TokenRule::kAllTokens},
          KvGroupSpec{{2, 3}, TokenRule::kMarkedTokens}};
}

// EARN's register-sized pages: the marked group's blocks hold `block_size` tokens, not 4.
std::vector<KvGroupSpec> two_groups_with_marked_pages_of(int block_size) {
  std::vector<KvGroupSpec> groups = two_groups();
  groups[1].block_size = block_size;
  return groups;
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, BlockManagerRandomTest,
    ::testing::Values(Config{"TwoGroupsPrefixCaching", two_groups(), {40, 16}, true},
                      Config{"TwoGroupsSmallerMarkedPagesPrefixCaching",
                             two_groups_with_marked_pages_of(2),
                             {40, 32},
                             true},
                      Config{"TwoGroupsOddMarkedPagesNoCaching",
                             two_groups_with_marked_pages_of(3),
                             {40, 22},
                             false},
                      Config{"TwoGroupsNoCaching", two_groups(), {40, 16}, false},
                      Config{"OneGroupPrefixCaching", single_group_layout(2), {32}, true},
                      Config{"MarkedGroupOnlyPrefixCaching",
                             {KvGroupSpec{{0, 1}, TokenRule::kMarkedTokens}},
                             {12},
                             true}),
    [](const ::testing::TestParamInfo<Config>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace earnserve
