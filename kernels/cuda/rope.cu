// Rotary position embedding (rotate-half layout) on the GPU, in place on q and k.
// One thread block per token; each thread rotates (x[i], x[i + d/2]) pairs of q and k heads.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 128;

// q: [num_tokens, num_heads, head_dim], k: [num_tokens, num_kv_heads, head_dim],
// positions: [num_tokens], inv_freq: [head_dim / 2]
__global__ void rope_kernel(float* __restrict__ q, float* __restrict__ k,
                            const int32_t* __restrict__ positions,
                            const float* __restrict__ inv_freq, int num_heads, int num_kv_heads,
                            int head_dim) {
  const int64_t token = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[token]);
  const int num_pairs = (num_heads + num_kv_heads) * half;
  for (int p = threadIdx.x; p < num_pairs; p += blockDim.x) {
    const int head = p / half;
    const int i = p - head * half;
    float* x = head < num_heads ? q + (token * num_heads + head) * head_dim
                                : k + (token * num_kv_heads + (head - num_heads)) * head_dim;
    // Angle rounded to f32 first, as the reference computes positions * inv_freq in f32.
    const float angle = pos * inv_freq[i];
    float sin_a;
    float cos_a;
    sincosf(angle, &sin_a, &cos_a);
    const float x0 = x[i];
    const float x1 = x[i + half];
    x[i] = x0 * cos_a - x1 * sin_a;
    x[i + half] = x1 * cos_a + x0 * sin_a;
  }
}

}  // namespace

void rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq) {
  const int64_t num_tokens = q.dim(0);
  if (num_tokens == 0) return;
  const int num_heads = static_cast<int>(q.dim(1));
  const int num_kv_heads = static_cast<int>(k.dim(1));
  const int head_dim = static_cast<int>(q.dim(2));
  rope_kernel<<<static_cast<unsigned>(num_tokens), kThreads>>>(
      q.data<float>(), k.data<float>(), positions.data<int32_t>(), inv_freq.data<float>(),
      num_heads, num_kv_heads, head_dim);
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
