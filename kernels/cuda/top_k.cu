// Per-row top-k on the GPU (k <= kMaxTopK), sorted descending, ties by smaller index.
//
// One thread block per row:
//   1. Radix select: floats map to order-preserving 32-bit keys; four 8-bit histogram passes
//      find the key T of the k-th largest element and how many elements equal to T it takes
//      (take_equal). Elements above T number exactly k - take_equal.
//   2. Collect: elements above T go to candidate slots [0, k - take_equal) via a shared
//      counter; elements equal to T are ranked in index order with a block-wide scan and the
//      first take_equal of them fill the remaining slots, which realises "smaller index wins".
//   3. Bitonic sort of the k candidates (padded to a power of two) by (key desc, index asc).
#include <climits>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;

// Larger float -> larger key. -0 and +0 share a key, as they compare equal.
__device__ __forceinline__ uint32_t order_key(float v) {
  uint32_t bits = __float_as_uint(v);
  if (bits == 0x80000000u) bits = 0;
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// True when candidate a sorts before b: larger key, then smaller index.
__device__ __forceinline__ bool sorts_before(uint32_t key_a, int idx_a, uint32_t key_b, int idx_b) {
  return key_a > key_b || (key_a == key_b && idx_a < idx_b);
}

// x: [rows, cols], values: [rows, k], indices: [rows, k]
__global__ void top_k_kernel(const float* __restrict__ x, int cols, int k, int sort_size,
                             float* __restrict__ values, int32_t* __restrict__ indices) {
  __shared__ uint32_t histogram[kRadixBins];
  __shared__ uint32_t cand_keys[kMaxTopK];
  __shared__ int cand_idx[kMaxTopK];
  __shared__ int warp_counts[32];
  __shared__ uint32_t shared_prefix;
  __shared__ int shared_remaining;
  __shared__ int num_above;

  const float* row = x + static_cast<int64_t>(blockIdx.x) * cols;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;

  // 1. Radix select, most significant digit first.
  uint32_t prefix = 0;  // the selected high digits of T
  uint32_t mask = 0;    // which bits of prefix are decided
  int remaining = k;    // rank of T among the elements matching prefix
  for (int shift = 32 - kRadixBits; shift >= 0; shift -= kRadixBits) {
    for (int b = threadIdx.x; b < kRadixBins; b += blockDim.x) histogram[b] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
      const uint32_t key = order_key(row[i]);
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & (kRadixBins - 1)], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t above = 0;
      int digit = kRadixBins - 1;
      for (; digit > 0; --digit) {
        if (above + histogram[digit] >= static_cast<uint32_t>(remaining)) break;
        above += histogram[digit];
      }
      shared_prefix = prefix | (static_cast<uint32_t>(digit) << shift);
      shared_remaining = remaining - static_cast<int>(above);
    }
    __syncthreads();
    prefix = shared_prefix;
    remaining = shared_remaining;
    mask |= static_cast<uint32_t>(kRadixBins - 1) << shift;
  }
  const uint32_t threshold = prefix;
  const int take_equal = remaining;  // >= 1
  const int num_strictly_above = k - take_equal;

  // 2. Collect the k candidates.
  if (threadIdx.x == 0) num_above = 0;
  __syncthreads();
  int equal_seen = 0;  // elements equal to T in earlier chunks; uniform over the block
  for (int base = 0; base < cols; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const bool valid = i < cols;
    const uint32_t key = valid ? order_key(row[i]) : 0u;
    if (valid && key > threshold) {
      const int slot = atomicAdd(&num_above, 1);
      cand_keys[slot] = key;
      cand_idx[slot] = i;
    }
    const bool equal = valid && key == threshold;
    const unsigned ballot = __ballot_sync(0xffffffffu, equal);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int before = 0;
    int chunk_total = 0;
    for (int w = 0; w < num_warps; ++w) {
      if (w < warp) before += warp_counts[w];
      chunk_total += warp_counts[w];
    }
    const int rank = equal_seen + before + __popc(ballot & ((1u << lane) - 1u));
    if (equal && rank < take_equal) {
      cand_keys[num_strictly_above + rank] = key;
      cand_idx[num_strictly_above + rank] = i;
    }
    equal_seen += chunk_total;
    __syncthreads();
  }

  // 3. Bitonic sort; padding sorts last (smallest key, largest index).
  for (int i = k + threadIdx.x; i < sort_size; i += blockDim.x) {
    cand_keys[i] = 0u;
    cand_idx[i] = INT_MAX;
  }
  __syncthreads();
  for (int size = 2; size <= sort_size; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < sort_size; i += blockDim.x) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const bool forward = (i & size) == 0;
        const uint32_t key_i = cand_keys[i];
        const uint32_t key_j = cand_keys[j];
        const int idx_i = cand_idx[i];
        const int idx_j = cand_idx[j];
        const bool swap = forward ? sorts_before(key_j, idx_j, key_i, idx_i)
                                  : sorts_before(key_i, idx_i, key_j, idx_j);
        if (swap) {
          cand_keys[i] = key_j;
          cand_keys[j] = key_i;
          cand_idx[i] = idx_j;
          cand_idx[j] = idx_i;
        }
      }
      __syncthreads();
    }
  }

  const int64_t out_base = static_cast<int64_t>(blockIdx.x) * k;
  for (int r = threadIdx.x; r < k; r += blockDim.x) {
    const int idx = cand_idx[r];
    values[out_base + r] = row[idx];
    indices[out_base + r] = idx;
  }
}

}  // namespace

void top_k(const Tensor& x, int k, Tensor& values, Tensor& indices) {
  const int64_t cols = x.dim(-1);
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows == 0 || k <= 0) return;
  ES_CHECK(k <= kMaxTopK) << "top_k on CUDA supports k <= " << kMaxTopK << ", got " << k;
  ES_CHECK(k <= cols && cols < INT_MAX) << "top_k: k " << k << " over " << cols << " columns";
  int sort_size = 1;
  while (sort_size < k) sort_size <<= 1;
  top_k_kernel<<<static_cast<unsigned>(rows), kThreads>>>(x.data<float>(), static_cast<int>(cols),
                                                          k, sort_size, values.data<float>(),
                                                          indices.data<int32_t>());
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
