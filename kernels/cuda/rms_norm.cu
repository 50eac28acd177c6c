// RMSNorm, fused residual-add + RMSNorm, and in-place add on the GPU.
// rms_norm / add_rms_norm: one thread block per row. Each thread touches the same elements in
// both passes (sum of squares, then scale), so `out` may alias `x` without a hazard.
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 256;

// x, out: [num_rows, hidden], weight: [hidden]
template <typename W>
__global__ void rms_norm_kernel(const float* x, const W* __restrict__ weight, float eps, float* out,
                                int64_t hidden) {
  __shared__ float reduce[32];
  const float* row = x + blockIdx.x * hidden;
  float* dst = out + blockIdx.x * hidden;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) sum_sq += row[i] * row[i];
  sum_sq = block_sum(sum_sq, reduce);
  const float inv_rms = 1.0f / sqrtf(sum_sq / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    dst[i] = row[i] * inv_rms * load_f32(weight, i);
  }
}

// residual, x, out: [num_rows, hidden], weight: [hidden]. residual += x; out = norm(residual).
template <typename W>
__global__ void add_rms_norm_kernel(float* __restrict__ residual, const float* x,
                                    const W* __restrict__ weight, float eps, float* out,
                                    int64_t hidden) {
  __shared__ float reduce[32];
  float* res = residual + blockIdx.x * hidden;
  const float* row = x + blockIdx.x * hidden;
  float* dst = out + blockIdx.x * hidden;
  float sum_sq = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    const float v = res[i] + row[i];
    res[i] = v;
    sum_sq += v * v;
  }
  sum_sq = block_sum(sum_sq, reduce);
  const float inv_rms = 1.0f / sqrtf(sum_sq / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    dst[i] = res[i] * inv_rms * load_f32(weight, i);
  }
}

// y += x over n elements.
__global__ void add_inplace_kernel(float* y, const float* x, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] += x[i];
  }
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t hidden = x.dim(-1);
  const int64_t num_rows = hidden == 0 ? 0 : x.numel() / hidden;
  if (num_rows == 0) return;
  dispatch_weight_dtype(weight.dtype(), [&](auto tag) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    rms_norm_kernel<W><<<static_cast<unsigned>(num_rows), kThreads>>>(
        x.data<float>(), weight_ptr<W>(weight), eps, out.data<float>(), hidden);
  });
  CUDA_CHECK_LAUNCH();
}

void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t hidden = x.dim(-1);
  const int64_t num_rows = hidden == 0 ? 0 : x.numel() / hidden;
  if (num_rows == 0) return;
  dispatch_weight_dtype(weight.dtype(), [&](auto tag) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    add_rms_norm_kernel<W><<<static_cast<unsigned>(num_rows), kThreads>>>(
        residual.data<float>(), x.data<float>(), weight_ptr<W>(weight), eps, out.data<float>(),
        hidden);
  });
  CUDA_CHECK_LAUNCH();
}

void add_inplace(Tensor& y, const Tensor& x) {
  const int64_t n = y.numel();
  if (n == 0) return;
  constexpr int64_t kMaxBlocks = 4096;
  const int64_t blocks = std::min(ceil_div(n, kThreads), kMaxBlocks);
  add_inplace_kernel<<<static_cast<unsigned>(blocks), kThreads>>>(y.data<float>(), x.data<float>(),
                                                                  n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
