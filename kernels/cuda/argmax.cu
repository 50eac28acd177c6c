// Row-wise argmax on the GPU: one thread block per row, first index wins ties.
#include <climits>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 512;

// True when (va, ia) ranks before (vb, ib): larger value, then smaller index.
__device__ __forceinline__ bool ranks_before(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// x: [rows, cols], out: [rows]
__global__ void argmax_kernel(const float* __restrict__ x, int32_t* __restrict__ out, int cols) {
  __shared__ float best_values[32];
  __shared__ int best_indices[32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  // -inf with index INT_MAX loses to any element, -inf ones included.
  float best = -INFINITY;
  int best_index = INT_MAX;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = row[i];
    if (ranks_before(v, i, best, best_index)) {
      best = v;
      best_index = i;
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, offset);
    const int i = __shfl_xor_sync(0xffffffffu, best_index, offset);
    if (ranks_before(v, i, best, best_index)) {
      best = v;
      best_index = i;
    }
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) {
    best_values[warp] = best;
    best_indices[warp] = best_index;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
      if (ranks_before(best_values[w], best_indices[w], best, best_index)) {
        best = best_values[w];
        best_index = best_indices[w];
      }
    }
    // Only an all-NaN row leaves no winner; report its first element.
    out[blockIdx.x] = best_index == INT_MAX ? 0 : best_index;
  }
}

}  // namespace

void argmax(const Tensor& x, Tensor& out) {
  const int64_t cols = x.dim(-1);
  const int64_t rows = out.numel();
  if (rows == 0) return;
  ES_CHECK(cols > 0 && cols < INT_MAX) << "argmax over " << cols << " columns";
  argmax_kernel<<<static_cast<unsigned>(rows), kThreads>>>(x.data<float>(), out.data<int32_t>(),
                                                           static_cast<int>(cols));
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
