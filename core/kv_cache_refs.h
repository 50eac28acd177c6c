// KvCacheRefs: per-layer views of the paged KV storage, in layer order. The storage belongs to
// cache/kv_cache.h's KvCache, which hands out this struct; the model (model/causal_lm.h) writes
// and reads the pages through it each step. It lives in core so that cache/ and model/, which
// must not include each other, share one definition and no step copies it.
//
// The tensors share the KvCache's storage and must not outlive it. Plain data; not thread-safe.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace earnserve {

struct KvCacheRefs {
  std::vector<Tensor> key;    // per layer: [num_blocks, block_size, num_kv_heads, head_dim]
  std::vector<Tensor> value;  // per layer: same
};

}  // namespace earnserve
