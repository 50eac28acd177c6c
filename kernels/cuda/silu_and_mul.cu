// SwiGLU activation on the GPU: out = silu(gate) * up, grid-stride over all output elements.
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 256;

// gate_up: [num_tokens, 2 * inter], out: [num_tokens, inter]
__global__ void silu_and_mul_kernel(const float* __restrict__ gate_up, float* __restrict__ out,
                                    int64_t num_tokens, int64_t inter) {
  const int64_t n = num_tokens * inter;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const int64_t token = e / inter;
    const int64_t i = e - token * inter;
    const float gate = gate_up[token * 2 * inter + i];
    const float up = gate_up[token * 2 * inter + inter + i];
    out[e] = gate / (1.0f + expf(-gate)) * up;
  }
}

}  // namespace

void silu_and_mul(const Tensor& gate_up, Tensor& out) {
  const int64_t num_tokens = gate_up.dim(0);
  const int64_t inter = gate_up.dim(1) / 2;
  const int64_t n = num_tokens * inter;
  if (n == 0) return;
  constexpr int64_t kMaxBlocks = 8192;
  const int64_t blocks = std::min(ceil_div(n, kThreads), kMaxBlocks);
  silu_and_mul_kernel<<<static_cast<unsigned>(blocks), kThreads>>>(
      gate_up.data<float>(), out.data<float>(), num_tokens, inter);
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
