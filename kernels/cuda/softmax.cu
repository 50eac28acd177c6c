// Row-wise softmax and log-softmax on the GPU. One thread block per row: each thread keeps an
// online (max, sum of exp) over its strided elements, the block merges them, then a second pass
// writes the row. Each thread rewrites only elements it read, so out may alias x.
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 512;

// Running softmax statistics: max and sum of exp(v - max). max = -inf means "no finite term".
struct MaxSum {
  float max;
  float sum;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  if (a.max == -INFINITY) return b;
  if (b.max == -INFINITY) return a;
  const float m = fmaxf(a.max, b.max);
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

// x, out: [rows, cols]
template <bool kLog>
__global__ void softmax_kernel(const float* x, float* out, int64_t cols) {
  __shared__ MaxSum partial[32];
  __shared__ MaxSum row_stats;
  const float* row = x + blockIdx.x * cols;
  float* dst = out + blockIdx.x * cols;

  MaxSum stats{-INFINITY, 0.0f};
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = row[i];
    if (v > stats.max) {
      stats.sum = (stats.max == -INFINITY ? 0.0f : stats.sum * expf(stats.max - v)) + 1.0f;
      stats.max = v;
    } else if (v != -INFINITY) {
      stats.sum += expf(v - stats.max);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, stats.max, offset),
                 __shfl_xor_sync(0xffffffffu, stats.sum, offset)};
    stats = merge(stats, other);
  }
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = stats;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum total = partial[0];
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) total = merge(total, partial[w]);
    row_stats = total;
  }
  __syncthreads();
  const float m = row_stats.max;
  if (kLog) {
    const float log_sum = logf(row_stats.sum);
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = row[i] - m - log_sum;
  } else {
    const float inv_sum = 1.0f / row_stats.sum;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = expf(row[i] - m) * inv_sum;
  }
}

template <bool kLog>
void launch_softmax(const Tensor& x, Tensor& out) {
  const int64_t cols = x.dim(-1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows == 0) return;
  softmax_kernel<kLog>
      <<<static_cast<unsigned>(rows), kThreads>>>(x.data<float>(), out.data<float>(), cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void softmax(const Tensor& x, Tensor& out) { launch_softmax<false>(x, out); }

void log_softmax(const Tensor& x, Tensor& out) { launch_softmax<true>(x, out); }

}  // namespace earnserve::cuda
