// ExecutorOptions: what an Executor (scheduler/executor/executor.h) needs to load a model and
// size its KV pages: the checkpoint, weight dtype, device, KV block size and memory, the EARN
// group ratio and the tensor-parallel layout. EngineOptions (scheduler/engine.h) extends them
// with the scheduler's; the draft model has its own (DrafterOptions); a tensor-parallel worker
// runs with rank 0's. Plain value type.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "scheduler/parallel/tp_options.h"

namespace earnserve {

struct ExecutorOptions {
  std::string model_dir;
  DType weight_dtype = DType::kF32;
  Device device = Device::kCPU;
  // With device kCUDA and no tensor parallelism: the GPU to make current; -1 keeps the current
  // one (the draft model runs on the target's GPU). Tensor-parallel ranks use theirs
  // (TensorParallelOptions::gpus_per_node).
  int cuda_device = 0;
  int block_size = 16;  // tokens per KV block, in [1, 256]
  // EARN models: tokens per block of the register-only layer group (registers and generated
  // tokens above the split), in [1, 256]; 0 = block_size. A request keeps a handful of tokens
  // there per beam: 2-token pages hold 1+1 or 2+2 registers in pages every beam shares (no
  // partial page to copy on a fork) and an item's codes in whole pages per beam, where 16-token
  // pages would stay mostly empty.
  int earn_block_size = 2;
  int64_t kv_cache_memory_bytes = 512ll << 20;
  // EARN models: KV slots (tokens) of the register-only layer group per slot of the all-token
  // group, whatever the two block sizes. A request keeps registers and generated tokens there, a
  // small fraction of its prompt.
  double earn_marked_slot_ratio = 0.25;
  // Tensor parallelism across processes (size > 1): rank 0 leads the group (the engine), ranks
  // 1..size-1 are workers. The KV budget above is per rank.
  TensorParallelOptions tensor_parallel;
};

}  // namespace earnserve
