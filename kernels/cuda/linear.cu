// out = x @ weight^T (+ bias) on the GPU through cuBLAS.
//
// Row-major out[M, N] = x[M, K] @ W[N, K]^T is, in cuBLAS's column-major terms,
// out^T (N x M, ld N) = op_T(W as K x N, ld K) * (x^T as K x M, ld K).
//
// Precision per weight dtype (activations are always f32, accumulation always FP32):
//   f32:  cublasSgemm with CUBLAS_DEFAULT_MATH, i.e. plain FP32, no TF32.
//   bf16: x is split on the device into bf16 terms hi = bf16(x), lo = bf16(x - hi), and
//         out = W @ hi^T + W @ lo^T runs on the tensor cores (cublasGemmEx, CUBLAS_COMPUTE_32F).
//         The weights are used exactly; x keeps ~16 of its 24 mantissa bits (relative error
//         <= 2^-17 per element), so results match an FP32 reference to ~1e-5 relative, while the
//         weights are read as 2 bytes each and the math runs at bf16 tensor-core rate.
//   f16:  a chunk of weight rows is widened to f32 in scratch, then cublasSgemm (plain FP32).
//         (Splitting x into f16 terms would overflow above 65504 and lose small values.)
#include <algorithm>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 8192;
// Scratch for one chunk of widened f16 weights.
constexpr int64_t kWidenChunkBytes = int64_t{32} << 20;
constexpr size_t kScratchAlign = 256;

int64_t grid_for(int64_t n) {
  return std::max<int64_t>(1, std::min(ceil_div(n, kThreads), kMaxBlocks));
}

// out: [num_rows, cols] <- bias broadcast over rows (or zeros when bias is null).
template <typename W>
__global__ void fill_bias_kernel(const W* __restrict__ bias, float* __restrict__ out,
                                 int64_t num_rows, int64_t cols) {
  const int64_t n = num_rows * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    out[e] = bias == nullptr ? 0.0f : load_f32(bias, e % cols);
  }
}

// x: [n] f32 -> hi, lo: [n] bf16 with hi + lo ~= x.
__global__ void split_bf16_kernel(const float* __restrict__ x, __nv_bfloat16* __restrict__ hi,
                                  __nv_bfloat16* __restrict__ lo, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    const float v = x[e];
    const __nv_bfloat16 h = __float2bfloat16_rn(v);
    hi[e] = h;
    lo[e] = __float2bfloat16_rn(v - __bfloat162float(h));  // exact difference in f32
  }
}

// src: [n] f16 -> dst: [n] f32
__global__ void widen_f16_kernel(const __half* __restrict__ src, float* __restrict__ dst,
                                 int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += stride) {
    dst[e] = __half2float(src[e]);
  }
}

// out <- bias rows (or zeros).
void fill_bias(const Tensor& bias, Tensor& out, int64_t num_rows, int64_t cols) {
  if (!bias.defined()) {
    fill_bias_kernel<float>
        <<<grid_for(num_rows * cols), kThreads>>>(nullptr, out.data<float>(), num_rows, cols);
  } else {
    dispatch_weight_dtype(bias.dtype(), [&](auto tag) {
      using W = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
      fill_bias_kernel<W><<<grid_for(num_rows * cols), kThreads>>>(
          weight_ptr<W>(bias), out.data<float>(), num_rows, cols);
    });
  }
  CUDA_CHECK_LAUNCH();
}

size_t align_up(size_t n) { return (n + kScratchAlign - 1) / kScratchAlign * kScratchAlign; }

void linear_bf16(cublasHandle_t handle, const Tensor& x, const Tensor& weight, float beta,
                 Tensor& out, int m, int n, int k) {
  const int64_t count = static_cast<int64_t>(m) * k;
  const size_t half_bytes = align_up(static_cast<size_t>(count) * sizeof(__nv_bfloat16));
  ScratchLease scratch(2 * half_bytes);
  auto* hi = static_cast<__nv_bfloat16*>(scratch.data());
  auto* lo = reinterpret_cast<__nv_bfloat16*>(static_cast<char*>(scratch.data()) + half_bytes);
  split_bf16_kernel<<<grid_for(count), kThreads>>>(x.data<float>(), hi, lo, count);
  CUDA_CHECK_LAUNCH();
  const float one = 1.0f;
  const void* w = weight.raw_data();
  float* c = out.data<float>();
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w, CUDA_R_16BF, k, hi,
                            CUDA_R_16BF, k, &beta, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one, w, CUDA_R_16BF, k, lo,
                            CUDA_R_16BF, k, &one, c, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

void linear_f16(cublasHandle_t handle, const Tensor& x, const Tensor& weight, float beta,
                Tensor& out, int m, int n, int k) {
  const int64_t chunk_rows =
      std::clamp<int64_t>(kWidenChunkBytes / (static_cast<int64_t>(k) * 4), 1, n);
  ScratchLease scratch(static_cast<size_t>(chunk_rows * k) * sizeof(float));
  auto* widened = static_cast<float*>(scratch.data());
  const auto* w = static_cast<const __half*>(weight.raw_data());
  const float one = 1.0f;
  for (int64_t row0 = 0; row0 < n; row0 += chunk_rows) {
    const int64_t rows = std::min<int64_t>(chunk_rows, n - row0);
    widen_f16_kernel<<<grid_for(rows * k), kThreads>>>(w + row0 * k, widened, rows * k);
    CUDA_CHECK_LAUNCH();
    // Output columns [row0, row0 + rows): rows row0.. of out^T, which start at out + row0.
    CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rows), m, k, &one,
                             widened, k, x.data<float>(), k, &beta, out.data<float>() + row0, n));
  }
}

}  // namespace

void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) {
  const int64_t k = x.dim(-1);
  const int64_t n = weight.dim(0);
  const int64_t m = out.numel() / (n == 0 ? 1 : n);
  if (m == 0 || n == 0) return;
  ES_CHECK(m < INT32_MAX && n < INT32_MAX && k < INT32_MAX)
      << "linear too large for cuBLAS: " << m << "x" << n << "x" << k;
  const bool has_bias = bias.defined();
  if (has_bias || k == 0) fill_bias(bias, out, m, n);
  if (k == 0) return;
  // With a bias, out already holds it and the product accumulates onto it.
  const float beta = has_bias ? 1.0f : 0.0f;
  cublasHandle_t handle = cublas_handle();
  const int mi = static_cast<int>(m);
  const int ni = static_cast<int>(n);
  const int ki = static_cast<int>(k);
  switch (weight.dtype()) {
    case DType::kF32: {
      const float one = 1.0f;
      CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &one,
                               weight.data<float>(), ki, x.data<float>(), ki, &beta,
                               out.data<float>(), ni));
      break;
    }
    case DType::kBF16:
      linear_bf16(handle, x, weight, beta, out, mi, ni, ki);
      break;
    case DType::kF16:
      linear_f16(handle, x, weight, beta, out, mi, ni, ki);
      break;
    default:
      ES_CHECK(false) << "linear: unsupported weight dtype " << dtype_name(weight.dtype());
  }
}

}  // namespace earnserve::cuda
