// Shared pieces of the CUDA kernels: error-check macros, launch helpers, weight-dtype loads,
// warp/block reductions, the online-softmax tile update, and per-device cuBLAS handles and
// scratch memory.
// The handle and scratch accessors are thread-safe; a ScratchLease serialises its users.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "core/logging.h"
#include "core/tensor.h"

// Aborts with file:line and CUDA's message when a runtime call fails.
#define CUDA_CHECK(expr)                                                                        \
  do {                                                                                          \
    cudaError_t es_cuda_err_ = (expr);                                                          \
    ES_CHECK(es_cuda_err_ == cudaSuccess) << #expr << ": " << cudaGetErrorString(es_cuda_err_); \
  } while (0)

// Aborts with file:line and cuBLAS's status name when a cuBLAS call fails.
#define CUBLAS_CHECK(expr)                                          \
  do {                                                              \
    cublasStatus_t es_cublas_status_ = (expr);                      \
    ES_CHECK(es_cublas_status_ == CUBLAS_STATUS_SUCCESS)            \
        << #expr << ": " << cublasGetStatusName(es_cublas_status_); \
  } while (0)

// Checks the launch that was just queued (bad configuration, missing kernel image).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace earnserve::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Widening loads of a weight element. bf16 and f16 arrive as raw 16-bit payloads.
__device__ __forceinline__ float load_f32(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ float load_f32(const __half* p, int64_t i) { return __half2float(p[i]); }

// Calls fn(static_cast<const W*>(nullptr)) with W the device type of a weight tensor's dtype, so
// a host launcher can pick the kernel instantiation: float, __nv_bfloat16 or __half.
template <typename Fn>
void dispatch_weight_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      fn(static_cast<const float*>(nullptr));
      return;
    case DType::kBF16:
      fn(static_cast<const __nv_bfloat16*>(nullptr));
      return;
    case DType::kF16:
      fn(static_cast<const __half*>(nullptr));
      return;
    default:
      ES_CHECK(false) << "unsupported weight dtype " << dtype_name(dtype);
  }
}

template <typename W>
const W* weight_ptr(const Tensor& t) {
  return static_cast<const W*>(t.raw_data());
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Sum over the block, returned to every thread. `shared` holds >= 32 floats. Every thread of
// the block must call it; blockDim.x is a multiple of 32. Ends with a barrier, so `shared` may
// be reused right after.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < num_warps; ++w) total += shared[w];  // same order in every thread
  __syncthreads();
  return total;
}

// One tile of an online softmax for one row (flash-attention style), run by every lane of one
// warp. scores: [len] raw scores of the tile, replaced in place by p = exp(s - new_max), where
// new_max = max(run_max, max of the tile). Lane 0 then writes rescale = exp(run_max - new_max)
// (0 while the row had no finite score yet), run_sum = run_sum * rescale + sum(p) and
// run_max = new_max; the caller multiplies its accumulators by rescale before adding P V.
// run_max, run_sum and rescale are the row's state in shared memory; the caller synchronises
// before other warps read them.
__device__ __forceinline__ void warp_online_softmax_update(float* scores, int len, float& run_max,
                                                           float& run_sum, float& rescale) {
  const int lane = threadIdx.x & 31;
  float tile_max = -INFINITY;
  for (int t = lane; t < len; t += 32) tile_max = fmaxf(tile_max, scores[t]);
  tile_max = warp_max(tile_max);
  const float old_max = run_max;
  const float new_max = fmaxf(old_max, tile_max);
  float tile_sum = 0.0f;
  for (int t = lane; t < len; t += 32) {
    const float e = expf(scores[t] - new_max);
    scores[t] = e;
    tile_sum += e;
  }
  tile_sum = warp_sum(tile_sum);
  if (lane == 0) {
    const float factor = old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
    rescale = factor;
    run_sum = run_sum * factor + tile_sum;
    run_max = new_max;
  }
}

// The cuBLAS handle of the current device, created on first use and kept for the process.
cublasHandle_t cublas_handle();

// A per-device grow-only scratch allocation, leased exclusively: the lease holds the device's
// lock until destroyed, so work queued on the default stream between lease and release sees
// the buffer alone (later users queue behind it on the same stream).
class ScratchLease {
 public:
  // Returns at least `nbytes` of device memory on the current device. Growing synchronises the
  // device first; that happens only while sizes still increase (the first calls).
  explicit ScratchLease(size_t nbytes);
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

  void* data() const { return data_; }

 private:
  std::unique_lock<std::mutex> lock_;
  void* data_ = nullptr;
};

}  // namespace earnserve::cuda
