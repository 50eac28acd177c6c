#include "scheduler/executor/kv_layout.h"

namespace earnserve {

KvCacheOptions kv_cache_options(const ExecutorOptions& options, const ModelConfig& config,
                                int64_t num_local_kv_heads) {
  const int num_layers = static_cast<int>(config.num_hidden_layers);
  KvCacheOptions kv;
  kv.groups = single_group_layout(num_layers);
  if (config.earn) {
    // EARN: layers below the split keep every token; layers from the split up keep only register
    // and generated tokens, so their pool needs far fewer blocks per request.
    const int k = static_cast<int>(config.earn->split_layer);
    kv.groups.assign(2, KvGroupSpec{});
    for (int l = 0; l < num_layers; ++l) kv.groups[l < k ? 0 : 1].layers.push_back(l);
    kv.groups[1].rule = TokenRule::kMarkedTokens;
    const int marked_block_size =
        options.earn_block_size > 0 ? options.earn_block_size : options.block_size;
    kv.groups[1].block_size = marked_block_size;
    // Weights count blocks: the slot ratio scaled by the two page sizes.
    kv.group_weights = {1.0, options.earn_marked_slot_ratio * options.block_size /
                                 static_cast<double>(marked_block_size)};
  }
  kv.num_layers = num_layers;
  kv.num_kv_heads = static_cast<int>(num_local_kv_heads);
  kv.head_dim = static_cast<int>(config.head_dim);
  kv.block_size = options.block_size;
  kv.memory_budget_bytes = options.kv_cache_memory_bytes;
  kv.device = options.device;
  return kv;
}

}  // namespace earnserve
