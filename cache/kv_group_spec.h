// KvGroupSpec: the KV-cache layout as data. Layers are split into groups; each group has its own
// block pool and a rule saying which tokens of a sequence keep KV in the group's layers. A plain
// model has one kAllTokens group holding every layer. An EARN model adds a kMarkedTokens group
// for layers k..L-1 that keeps KV only for the tokens a sequence marks as kept (registers and
// generated tokens). Each group may have its own page size: EARN's marked group holds a handful of
// tokens per beam, which 16-token pages would leave mostly empty. Plain values; thread-compatible.
#pragma once

#include <vector>

#include "core/status.h"

namespace earnserve {

enum class TokenRule {
  kAllTokens,     // every token of the sequence occupies a slot
  kMarkedTokens,  // only tokens whose kept flag is set occupy a slot
};

struct KvGroupSpec {
  std::vector<int> layers;  // model layer indices in this group, ascending
  TokenRule rule = TokenRule::kAllTokens;
  // Tokens per block in this group's pages; 0 = the layout's default block size (what
  // KvCacheOptions::block_size or the BlockManager's constructor says).
  int block_size = 0;
};

// The one plain-model layout: every layer in one kAllTokens group.
std::vector<KvGroupSpec> single_group_layout(int num_layers);

// OK when the groups are non-empty, every layer in [0, num_layers) is in exactly one group and
// each group lists its layers in ascending order and has a block size in [0, 256] (0 = the
// default); otherwise a one-line error naming the problem.
Status validate_kv_groups(const std::vector<KvGroupSpec>& groups, int num_layers);

// The groups with every block_size of 0 replaced by `default_block_size`.
std::vector<KvGroupSpec> resolve_block_sizes(std::vector<KvGroupSpec> groups,
                                             int default_block_size);

// [num_layers]: the group index of each layer. REQUIRES: validate_kv_groups(...) is OK.
std::vector<int> layer_to_group(const std::vector<KvGroupSpec>& groups, int num_layers);

}  // namespace earnserve
