// Writes this step's keys and values into their paged KV slots on the GPU.
// One thread block per token; threads copy its num_kv_heads * head_dim floats.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 256;

// key, value: [num_tokens, row] with row = num_kv_heads * head_dim,
// key_cache, value_cache: [num_slots, row], slot_mapping: [num_tokens]
__global__ void reshape_and_cache_kernel(const float* __restrict__ key,
                                         const float* __restrict__ value,
                                         float* __restrict__ key_cache,
                                         float* __restrict__ value_cache,
                                         const int32_t* __restrict__ slot_mapping, int64_t row,
                                         int64_t num_slots) {
  const int64_t token = blockIdx.x;
  const int64_t slot = slot_mapping[token];
  if (slot < 0 || slot >= num_slots) return;  // negative: no KV kept for this token
  const float* k_src = key + token * row;
  const float* v_src = value + token * row;
  float* k_dst = key_cache + slot * row;
  float* v_dst = value_cache + slot * row;
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    k_dst[i] = k_src[i];
    v_dst[i] = v_src[i];
  }
}

}  // namespace

void reshape_and_cache(const Tensor& key, const Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, const Tensor& slot_mapping) {
  const int64_t num_tokens = key.dim(0);
  const int64_t row = key.dim(1) * key.dim(2);
  const int64_t num_slots = key_cache.dim(0) * key_cache.dim(1);
  if (num_tokens == 0 || row == 0) return;
  reshape_and_cache_kernel<<<static_cast<unsigned>(num_tokens), kThreads>>>(
      key.data<float>(), value.data<float>(), key_cache.data<float>(), value_cache.data<float>(),
      slot_mapping.data<int32_t>(), row, num_slots);
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
