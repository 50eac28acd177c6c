#include "cache/prefix_cache.h"

#include "core/logging.h"

namespace earnserve {

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr uint64_t kRootSeed = 0x6A09E667F3BCC908ull;
constexpr uint64_t kBlockSeed = 0xBB67AE8584CAA73Bull;

// The splitmix64 finaliser: a bijection on 64 bits with full avalanche.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

// Absorbs one word; the golden-ratio offset keeps a zero word from being a no-op.
uint64_t absorb(uint64_t state, uint64_t word) { return mix64(state ^ (word + kGolden)); }

}  // namespace

uint64_t prefix_root_hash(uint64_t extra_key) { return absorb(kRootSeed, extra_key); }

uint64_t hash_block_tokens(uint64_t parent_hash, std::span<const int32_t> token_ids,
                           std::span<const uint8_t> kept) {
  ES_CHECK_EQ(token_ids.size(), kept.size());
  uint64_t state = absorb(kBlockSeed, parent_hash);
  for (size_t i = 0; i < token_ids.size(); ++i) {
    // 32 bits of token id and the kept flag in one word.
    uint64_t word = (static_cast<uint64_t>(static_cast<uint32_t>(token_ids[i])) << 1) |
                    (kept[i] != 0 ? 1u : 0u);
    state = absorb(state, word);
  }
  // The length closes the message so no block is a prefix of another's absorption.
  return absorb(state, token_ids.size());
}

PrefixCache::PrefixCache(int num_blocks)
    : hash_of_block_(num_blocks, 0), has_hash_(num_blocks, 0) {}

std::optional<int> PrefixCache::lookup(uint64_t hash) const {
  auto it = block_of_hash_.find(hash);
  if (it == block_of_hash_.end()) return std::nullopt;
  return it->second;
}

bool PrefixCache::insert(uint64_t hash, int block) {
  ES_CHECK(block >= 0 && block < static_cast<int>(has_hash_.size())) << "block " << block;
  if (has_hash_[block]) return false;
  if (!block_of_hash_.emplace(hash, block).second) return false;
  hash_of_block_[block] = hash;
  has_hash_[block] = 1;
  return true;
}

bool PrefixCache::erase(int block) {
  ES_CHECK(block >= 0 && block < static_cast<int>(has_hash_.size())) << "block " << block;
  if (!has_hash_[block]) return false;
  block_of_hash_.erase(hash_of_block_[block]);
  has_hash_[block] = 0;
  return true;
}

}  // namespace earnserve
