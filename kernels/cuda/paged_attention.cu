// Causal attention over paged KV on the GPU, for prefill chunks and decodes in one launch.
//
// Launch: grid (num_tokens, num_kv_heads), kThreads threads. A block serves one query token and
// one KV head together with the group of num_heads / num_kv_heads query heads that share it
// (GQA), so each K/V vector is read from memory once per group. It walks the token's visible KV
// entries in tiles of kTile keys through the block table, with an online softmax:
//   1. resolve the tile's KV slots from the block table (shared memory);
//   2. scores: one warp per key holds the key in registers and dots it with every query of the
//      group (queries pre-scaled, in shared memory);
//   3. one warp per query head: tile max, p = exp(s - m_new), rescale factor, running sum;
//   4. every thread owns (head, dim) accumulators in shared memory: acc = acc * rescale + P V.
// The sequence of a token is found by binary search in query_start_loc.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerLane = kMaxHeadDim / 32;
constexpr int kDefaultSharedBytes = 48 * 1024;

struct AttentionParams {
  const float* query;        // [num_tokens, num_heads, head_dim]
  const float* key_cache;    // [num_blocks, block_size, num_kv_heads, head_dim]
  const float* value_cache;  // [num_blocks, block_size, num_kv_heads, head_dim]
  const int32_t* block_tables;     // [num_seqs, max_blocks_per_seq]
  const int32_t* seq_lens;         // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1]
  float* out;                // [num_tokens, num_heads, head_dim]
  float scale;
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  int max_blocks_per_seq;
};

// Shared memory of one block, carved from the dynamic allocation.
size_t shared_bytes(int group, int head_dim) {
  return kTile * sizeof(int64_t) +
         sizeof(float) * (2 * static_cast<size_t>(group) * head_dim + group * kTile + 3 * group);
}

__global__ void paged_attention_kernel(AttentionParams p) {
  extern __shared__ int64_t shared_raw[];
  const int group = p.num_heads / p.num_kv_heads;
  const int head_dim = p.head_dim;
  int64_t* kv_rows = shared_raw;                             // [kTile] element offsets
  float* q_s = reinterpret_cast<float*>(shared_raw + kTile);  // [group, head_dim], scaled
  float* acc = q_s + group * head_dim;                       // [group, head_dim]
  float* scores = acc + group * head_dim;                    // [group, kTile]
  float* run_max = scores + group * kTile;                   // [group]
  float* run_sum = run_max + group;                          // [group]
  float* rescale = run_sum + group;                          // [group]

  const int token = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  const int group_elems = group * head_dim;
  const int64_t head_offset =
      (static_cast<int64_t>(token) * p.num_heads + static_cast<int64_t>(kv_head) * group) *
      head_dim;
  float* out = p.out + head_offset;

  // The sequence owning this token: the last s with query_start_loc[s] <= token.
  int lo = 0;
  int hi = p.num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.query_start_loc[mid] <= token) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int seq = lo;
  const int q_begin = p.query_start_loc[seq];
  const int q_end = p.query_start_loc[seq + 1];
  int context = 0;  // KV entries this query sees; 0 for a token outside every sequence
  if (token >= q_begin && token < q_end) {
    context = p.seq_lens[seq] - (q_end - q_begin) + (token - q_begin) + 1;
    context = min(context, p.max_blocks_per_seq * p.block_size);
  }
  if (context <= 0) {
    for (int i = threadIdx.x; i < group_elems; i += blockDim.x) out[i] = 0.0f;
    return;
  }
  const int32_t* block_table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  for (int i = threadIdx.x; i < group_elems; i += blockDim.x) {
    q_s[i] = p.query[head_offset + i] * p.scale;
    acc[i] = 0.0f;
  }
  for (int g = threadIdx.x; g < group; g += blockDim.x) {
    run_max[g] = -INFINITY;
    run_sum[g] = 0.0f;
  }
  __syncthreads();

  for (int tile_start = 0; tile_start < context; tile_start += kTile) {
    const int tile_len = min(kTile, context - tile_start);

    // 1. KV slots of this tile.
    for (int t = threadIdx.x; t < tile_len; t += blockDim.x) {
      const int pos = tile_start + t;
      const int64_t block = block_table[pos / p.block_size];
      const int64_t slot = block * p.block_size + pos % p.block_size;
      kv_rows[t] = (slot * p.num_kv_heads + kv_head) * head_dim;
    }
    __syncthreads();

    // 2. Scores: warp per key.
    for (int t = warp; t < tile_len; t += num_warps) {
      const float* key = p.key_cache + kv_rows[t];
      float key_reg[kDimsPerLane];
#pragma unroll
      for (int r = 0; r < kDimsPerLane; ++r) {
        const int d = lane + 32 * r;
        key_reg[r] = d < head_dim ? key[d] : 0.0f;
      }
      for (int g = 0; g < group; ++g) {
        const float* q = q_s + g * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int r = 0; r < kDimsPerLane; ++r) {
          const int d = lane + 32 * r;
          if (d < head_dim) dot += q[d] * key_reg[r];
        }
        dot = warp_sum(dot);
        if (lane == 0) scores[g * kTile + t] = dot;
      }
    }
    __syncthreads();

    // 3. Online softmax update: warp per query head.
    for (int g = warp; g < group; g += num_warps) {
      float* s = scores + g * kTile;
      float tile_max = -INFINITY;
      for (int t = lane; t < tile_len; t += 32) tile_max = fmaxf(tile_max, s[t]);
      tile_max = warp_max(tile_max);
      const float old_max = run_max[g];
      const float new_max = fmaxf(old_max, tile_max);
      float tile_sum = 0.0f;
      for (int t = lane; t < tile_len; t += 32) {
        const float e = expf(s[t] - new_max);
        s[t] = e;
        tile_sum += e;
      }
      tile_sum = warp_sum(tile_sum);
      if (lane == 0) {
        const float r = old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
        rescale[g] = r;
        run_sum[g] = run_sum[g] * r + tile_sum;
        run_max[g] = new_max;
      }
    }
    __syncthreads();

    // 4. acc = acc * rescale + P V.
    for (int i = threadIdx.x; i < group_elems; i += blockDim.x) {
      const int g = i / head_dim;
      const int d = i - g * head_dim;
      const float* s = scores + g * kTile;
      float a = acc[i] * rescale[g];
      for (int t = 0; t < tile_len; ++t) a += s[t] * p.value_cache[kv_rows[t] + d];
      acc[i] = a;
    }
    __syncthreads();
  }

  for (int i = threadIdx.x; i < group_elems; i += blockDim.x) {
    const float sum = run_sum[i / head_dim];
    out[i] = sum > 0.0f ? acc[i] / sum : 0.0f;
  }
}

}  // namespace

void paged_attention(const ops::PagedAttentionArgs& args, Tensor& out) {
  const int64_t num_tokens = args.query.dim(0);
  const int num_heads = static_cast<int>(args.query.dim(1));
  const int head_dim = static_cast<int>(args.query.dim(2));
  const int num_kv_heads = static_cast<int>(args.key_cache.dim(2));
  const int num_seqs = static_cast<int>(args.seq_lens.numel());
  if (num_tokens == 0 || num_heads == 0 || head_dim == 0) return;
  ES_CHECK(head_dim <= kMaxHeadDim) << "paged_attention: head_dim " << head_dim << " > "
                                    << kMaxHeadDim;
  ES_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0)
      << num_heads << " heads over " << num_kv_heads << " KV heads";
  ES_CHECK(num_kv_heads <= 65535) << "paged_attention: " << num_kv_heads << " KV heads";
  if (num_seqs == 0) {
    CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes()));
    return;
  }
  AttentionParams p;
  p.query = args.query.data<float>();
  p.key_cache = args.key_cache.data<float>();
  p.value_cache = args.value_cache.data<float>();
  p.block_tables = args.block_tables.data<int32_t>();
  p.seq_lens = args.seq_lens.data<int32_t>();
  p.query_start_loc = args.query_start_loc.data<int32_t>();
  p.out = out.data<float>();
  p.scale = args.scale;
  p.num_seqs = num_seqs;
  p.num_heads = num_heads;
  p.num_kv_heads = num_kv_heads;
  p.head_dim = head_dim;
  p.block_size = static_cast<int>(args.key_cache.dim(1));
  p.max_blocks_per_seq = static_cast<int>(args.block_tables.dim(1));

  const size_t smem = shared_bytes(num_heads / num_kv_heads, head_dim);
  if (smem > kDefaultSharedBytes) {
    CUDA_CHECK(cudaFuncSetAttribute(paged_attention_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  }
  const dim3 grid(static_cast<unsigned>(num_tokens), static_cast<unsigned>(num_kv_heads));
  paged_attention_kernel<<<grid, kThreads, smem>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
