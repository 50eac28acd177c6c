// The KV cache an executor runs against, as KvCacheOptions: which layer groups the model has
// (one group of every layer, or for EARN models the all-token layers below the split and the
// register-only layers from it up), how the memory budget is split between them, and the
// per-rank page shape. Every executor (rank 0, each tensor-parallel worker, the draft model)
// sizes its pages with this function, so that the same options give the same block counts on
// every rank. Stateless.
#pragma once

#include <cstdint>

#include "cache/kv_cache.h"
#include "model/config.h"
#include "scheduler/executor/executor_options.h"

namespace earnserve {

// `num_local_kv_heads`: the KV heads this rank stores per layer (CausalLM::num_local_kv_heads()).
KvCacheOptions kv_cache_options(const ExecutorOptions& options, const ModelConfig& config,
                                int64_t num_local_kv_heads);

}  // namespace earnserve
