#include "cache/kv_group_spec.h"

#include <string>

#include "core/logging.h"

namespace earnserve {

std::vector<KvGroupSpec> single_group_layout(int num_layers) {
  KvGroupSpec spec;
  for (int layer = 0; layer < num_layers; ++layer) spec.layers.push_back(layer);
  return {spec};
}

Status validate_kv_groups(const std::vector<KvGroupSpec>& groups, int num_layers) {
  if (num_layers <= 0) {
    return invalid_argument("KV groups: num_layers must be positive, got " +
                            std::to_string(num_layers));
  }
  if (groups.empty()) return invalid_argument("KV groups: no group given");
  std::vector<int> owner(num_layers, -1);
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<int>& layers = groups[g].layers;
    if (layers.empty()) {
      return invalid_argument("KV groups: group " + std::to_string(g) + " has no layers");
    }
    if (groups[g].block_size < 0 || groups[g].block_size > 256) {
      return invalid_argument("KV groups: group " + std::to_string(g) + " has block size " +
                              std::to_string(groups[g].block_size) + ", outside [0, 256]");
    }
    for (size_t i = 0; i < layers.size(); ++i) {
      int layer = layers[i];
      if (layer < 0 || layer >= num_layers) {
        return invalid_argument("KV groups: group " + std::to_string(g) + " names layer " +
                                std::to_string(layer) + ", outside [0, " +
                                std::to_string(num_layers) + ")");
      }
      if (i > 0 && layer <= layers[i - 1]) {
        return invalid_argument("KV groups: group " + std::to_string(g) +
                                " does not list its layers in ascending order");
      }
      if (owner[layer] >= 0) {
        return invalid_argument("KV groups: layer " + std::to_string(layer) + " is in groups " +
                                std::to_string(owner[layer]) + " and " + std::to_string(g));
      }
      owner[layer] = static_cast<int>(g);
    }
  }
  for (int layer = 0; layer < num_layers; ++layer) {
    if (owner[layer] < 0) {
      return invalid_argument("KV groups: layer " + std::to_string(layer) + " is in no group");
    }
  }
  return Status::Ok();
}

std::vector<KvGroupSpec> resolve_block_sizes(std::vector<KvGroupSpec> groups,
                                             int default_block_size) {
  for (KvGroupSpec& g : groups) {
    if (g.block_size == 0) g.block_size = default_block_size;
  }
  return groups;
}

std::vector<int> layer_to_group(const std::vector<KvGroupSpec>& groups, int num_layers) {
  std::vector<int> group_of(num_layers, -1);
  for (size_t g = 0; g < groups.size(); ++g) {
    for (int layer : groups[g].layers) {
      ES_CHECK(layer >= 0 && layer < num_layers) << "layer " << layer;
      group_of[layer] = static_cast<int>(g);
    }
  }
  return group_of;
}

}  // namespace earnserve
