// KvCache: the paged KV storage. For every layer it owns a key and a value tensor of shape
// [num_blocks_of_its_group, block_size_of_its_group, num_kv_heads, head_dim] on one device; the
// layer's group (cache/kv_group_spec.h) decides how many blocks it has and how many tokens each
// holds (the attention kernels read the page size from the tensor). Which sequence uses which block
// is cache/block_manager.h's business: build it with num_blocks_per_group() from this object, and
// execute the copies it asks for with execute_copies() before each step.
//
// Sizing: the memory budget is split so that every group gets the same number of blocks, unless
// group_weights say otherwise: group g gets floor(w_g * x) blocks with x the largest value that
// keeps sum_g w_g * x * bytes_per_block(g) within the budget.
//
// Move-only; the tensors returned by refs() share the storage and must not outlive its use.
// Not thread-safe: written by the model step and execute_copies() on the engine thread.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/block_copy.h"
#include "cache/kv_group_spec.h"
#include "core/kv_cache_refs.h"
#include "core/status.h"
#include "core/tensor.h"

namespace earnserve {

struct KvCacheOptions {
  std::vector<KvGroupSpec> groups;
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;              // tokens per block of every group whose spec leaves it 0
  int64_t memory_budget_bytes = 0;  // keys and values of all layers together
  DType dtype = DType::kF32;
  Device device = Device::kCPU;
  // Relative block counts per group; empty = the same number of blocks in every group.
  std::vector<double> group_weights;
};

class KvCache {
 public:
  // Validates the options (a one-line error naming the bad field), sizes the groups from the
  // budget and allocates zeroed storage. RESOURCE_EXHAUSTED when the budget leaves a group
  // without a single block, or the device cannot hold it.
  static StatusOr<KvCache> create(const KvCacheOptions& options);

  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  // Bytes one block of the group takes: keys and values in all its layers.
  int64_t bytes_per_block(int group) const;
  int num_blocks(int group) const { return num_blocks_per_group_[group]; }
  const std::vector<int>& num_blocks_per_group() const { return num_blocks_per_group_; }
  int64_t total_bytes() const;

  int num_groups() const { return static_cast<int>(options_.groups.size()); }
  int num_layers() const { return options_.num_layers; }
  // Tokens per block in the group's pages.
  int block_size(int group) const { return options_.groups[group].block_size; }
  // Every group's block_size is set (> 0).
  const std::vector<KvGroupSpec>& groups() const { return options_.groups; }
  // [num_layers]: the group of each layer.
  const std::vector<int>& layer_group() const { return layer_group_; }
  Device device() const { return options_.device; }

  // Copies each source block's keys and values into the destination block in every layer of the
  // copy's group, in the order given (later copies may read earlier destinations).
  Status execute_copies(const std::vector<BlockCopy>& copies);

  // Per-layer views of the pages, what the model writes and reads each step.
  const KvCacheRefs& refs() const { return tensors_; }

 private:
  KvCache() = default;

  // Constant after construction. options_.groups have their block sizes resolved.
  KvCacheOptions options_;
  std::vector<int> layer_group_;
  std::vector<int> num_blocks_per_group_;

  KvCacheRefs tensors_;
};

}  // namespace earnserve
