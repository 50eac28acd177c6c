// Row gather on the GPU: one thread block per output row.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 256;

// x: [num_rows, cols], indices: [num_out], out: [num_out, cols]
__global__ void gather_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ indices,
                                   float* __restrict__ out, int64_t num_rows, int64_t cols) {
  const int64_t row = blockIdx.x;
  const int32_t src_row = indices[row];
  float* dst = out + row * cols;
  if (src_row < 0 || src_row >= num_rows) {
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = 0.0f;
    return;
  }
  const float* src = x + static_cast<int64_t>(src_row) * cols;
  for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) {
  const int64_t num_out = indices.numel();
  const int64_t num_rows = x.dim(0);
  const int64_t cols = x.numel() / (num_rows == 0 ? 1 : num_rows);
  if (num_out == 0 || cols == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(num_out), kThreads>>>(x.data<float>(), indices.data<int32_t>(),
                                            out.data<float>(), num_rows, cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
