#include "cache/kv_cache.h"

#include <cmath>
#include <string>

#include "core/logging.h"

namespace earnserve {

namespace {

Status validate_options(const KvCacheOptions& o) {
  ES_RETURN_IF_ERROR(validate_kv_groups(o.groups, o.num_layers).with_prefix("KV cache"));
  if (o.num_kv_heads <= 0 || o.head_dim <= 0 || o.block_size <= 0) {
    return invalid_argument(
        "KV cache: num_kv_heads, head_dim and block_size must be positive, got " +
        std::to_string(o.num_kv_heads) + ", " + std::to_string(o.head_dim) + ", " +
        std::to_string(o.block_size));
  }
  if (o.dtype != DType::kF32 && o.dtype != DType::kF16 && o.dtype != DType::kBF16) {
    return invalid_argument(std::string("KV cache: dtype must be f32, f16 or bf16, got ") +
                            dtype_name(o.dtype));
  }
  if (o.memory_budget_bytes <= 0) {
    return invalid_argument("KV cache: memory budget must be positive, got " +
                            std::to_string(o.memory_budget_bytes) + " bytes");
  }
  if (!o.group_weights.empty()) {
    if (o.group_weights.size() != o.groups.size()) {
      return invalid_argument("KV cache: " + std::to_string(o.group_weights.size()) +
                              " group weights for " + std::to_string(o.groups.size()) + " groups");
    }
    for (size_t g = 0; g < o.group_weights.size(); ++g) {
      double w = o.group_weights[g];
      if (!std::isfinite(w) || w <= 0) {
        return invalid_argument("KV cache: weight of group " + std::to_string(g) +
                                " must be positive and finite, got " + std::to_string(w));
      }
    }
  }
  return Status::Ok();
}

}  // namespace

StatusOr<KvCache> KvCache::create(const KvCacheOptions& options) {
  ES_RETURN_IF_ERROR(validate_options(options));
  KvCache cache;
  cache.options_ = options;
  cache.options_.groups = resolve_block_sizes(options.groups, options.block_size);
  cache.layer_group_ = layer_to_group(options.groups, options.num_layers);

  int num_groups = cache.num_groups();
  int64_t sum_bytes = 0;
  for (int g = 0; g < num_groups; ++g) sum_bytes += cache.bytes_per_block(g);
  double weighted_bytes = 0;
  for (int g = 0; g < num_groups; ++g) {
    if (!options.group_weights.empty()) {
      weighted_bytes += options.group_weights[g] * static_cast<double>(cache.bytes_per_block(g));
    }
  }
  cache.num_blocks_per_group_.resize(num_groups);
  for (int g = 0; g < num_groups; ++g) {
    // Equal counts in integers, so an exact fit is not lost to rounding; weighted counts round
    // down, never past the budget.
    double blocks =
        options.group_weights.empty()
            ? static_cast<double>(options.memory_budget_bytes / sum_bytes)
            : std::floor(options.group_weights[g] *
                         static_cast<double>(options.memory_budget_bytes) / weighted_bytes);
    if (blocks < 1) {
      return resource_exhausted(
          "KV cache: memory budget of " + std::to_string(options.memory_budget_bytes) +
          " bytes leaves group " + std::to_string(g) + " without a block (one block needs " +
          std::to_string(cache.bytes_per_block(g)) + " bytes)");
    }
    if (blocks > (1 << 30)) {
      return invalid_argument("KV cache: memory budget gives group " + std::to_string(g) +
                              " more than 2^30 blocks");
    }
    cache.num_blocks_per_group_[g] = static_cast<int>(blocks);
  }

  cache.tensors_.key.resize(options.num_layers);
  cache.tensors_.value.resize(options.num_layers);
  for (int layer = 0; layer < options.num_layers; ++layer) {
    const int g = cache.layer_group_[layer];
    Shape shape{cache.num_blocks_per_group_[g], cache.block_size(g), options.num_kv_heads,
                options.head_dim};
    for (Tensor* t : {&cache.tensors_.key[layer], &cache.tensors_.value[layer]}) {
      StatusOr<Tensor> storage = Tensor::zeros(shape, options.dtype, options.device);
      if (!storage.ok()) {
        return Status(StatusCode::kResourceExhausted, "KV cache: layer " + std::to_string(layer) +
                                                          " " + shape_to_string(shape) + ": " +
                                                          storage.status().message());
      }
      *t = std::move(storage).value();
    }
  }
  return cache;
}

int64_t KvCache::bytes_per_block(int group) const {
  int64_t per_layer = 2LL * block_size(group) * options_.num_kv_heads * options_.head_dim *
                      static_cast<int64_t>(dtype_size(options_.dtype));
  return per_layer * static_cast<int64_t>(options_.groups[group].layers.size());
}

int64_t KvCache::total_bytes() const {
  int64_t total = 0;
  for (int g = 0; g < num_groups(); ++g) total += bytes_per_block(g) * num_blocks_per_group_[g];
  return total;
}

Status KvCache::execute_copies(const std::vector<BlockCopy>& copies) {
  for (const BlockCopy& copy : copies) {
    if (copy.group < 0 || copy.group >= num_groups()) {
      return invalid_argument("KV cache: copy names group " + std::to_string(copy.group) + " of " +
                              std::to_string(num_groups()));
    }
    int num_blocks = num_blocks_per_group_[copy.group];
    if (copy.src_block < 0 || copy.src_block >= num_blocks || copy.dst_block < 0 ||
        copy.dst_block >= num_blocks) {
      return invalid_argument("KV cache: copy of block " + std::to_string(copy.src_block) + " to " +
                              std::to_string(copy.dst_block) + " in group " +
                              std::to_string(copy.group) + " of " + std::to_string(num_blocks) +
                              " blocks");
    }
    if (copy.src_block == copy.dst_block) continue;
    for (int layer : options_.groups[copy.group].layers) {
      for (Tensor* t : {&tensors_.key[layer], &tensors_.value[layer]}) {
        Tensor dst = t->slice_rows(copy.dst_block, copy.dst_block + 1);
        ES_RETURN_IF_ERROR(dst.copy_from(t->slice_rows(copy.src_block, copy.src_block + 1)));
      }
    }
  }
  return Status::Ok();
}

}  // namespace earnserve
