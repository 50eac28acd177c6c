// Causal attention over paged KV on the GPU, for prefill chunks and decodes in one launch.
//
// Launch: grid (num_tokens, num_kv_heads), kThreads threads. A block serves one query token and
// one KV head together with the group of num_heads / num_kv_heads query heads that share it
// (GQA), so each K/V vector is read from memory once per group. It walks the token's visible KV
// entries in tiles of kTile keys through the block table, with an online softmax:
//   1. resolve the tile's KV slots from the block table (shared memory);
//   2. scores: one warp per key holds the key in registers and dots it with every query of the
//      group (queries pre-scaled, in shared memory);
//   3. one warp per query head: tile max, p = exp(s - m_new), rescale factor, running sum
//      (warp_online_softmax_update, cuda_common.cuh, which the prefix kernel uses too);
//   4. every thread owns (head, dim) accumulators in shared memory: acc = acc * rescale + P V.
// The sequence of a token is found by binary search in query_start_loc.
//
// Shared prefixes (beam search) take two launches more, before that one:
//  - group_prefix_tokens_kernel (one block) lists the query tokens of each prefix's member
//    sequences, grouped by prefix (a counting sort: prefix_offsets, prefix_tokens);
//  - prefix_partial_kernel, grid (token tile, kv head, prefix): a block stacks the queries of up
//    to `tokens_per_block` member tokens for the group's heads, walks the prefix's pages in
//    tiles of kKeyTile entries staged in shared memory (so each page is read once per token
//    tile, not once per beam) with an online softmax, and leaves the partial state per (token,
//    head): running max and sum in scratch, the unnormalised output in `out`;
//  - the main kernel then starts those tokens from that state and walks only the entries past
//    the prefix.
// The device cannot report errors, so a sequence whose prefix fields are out of range (ops.cpp
// checks the values only for CPU tensors) is simply computed without its prefix.
//
// Tree attention (query_parents): a query sees its sequence's cached entries [0, c) and then,
// instead of the run [c, c + j], only its ancestor chain. The block walks the same tiles over a
// virtual range [0, c + chain length): positions below c as before, the rest filled by thread 0
// walking up the chain (descending positions) while it resolves each tile's slots. A parent
// outside [-1, j) ends the chain (ops.cpp checks the values only for CPU tensors).
#include <algorithm>
#include <cmath>
#include <optional>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kTile = 64;
constexpr int kMaxHeadDim = 256;
constexpr int kDimsPerLane = kMaxHeadDim / 32;
constexpr int kDefaultSharedBytes = 48 * 1024;
// Prefix kernel: keys staged per tile, and the stacked query rows a block aims for.
constexpr int kKeyTile = 32;
constexpr int kTargetPrefixRows = 64;
constexpr int kPrefixThreads = 256;
constexpr int kGroupThreads = 1024;

struct AttentionParams {
  const float* query;              // [num_tokens, num_heads, head_dim]
  const float* key_cache;          // [num_blocks, block_size, num_kv_heads, head_dim]
  const float* value_cache;        // [num_blocks, block_size, num_kv_heads, head_dim]
  const int32_t* block_tables;     // [num_seqs, max_blocks_per_seq]
  const int32_t* seq_lens;         // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1]
  float* out;                      // [num_tokens, num_heads, head_dim]
  float scale;
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int head_dim;
  int block_size;
  int max_blocks_per_seq;
  // Shared prefixes; seq_prefix is null when the call has none.
  const int32_t* seq_prefix;   // [num_seqs], -1 = none
  const int32_t* prefix_lens;  // [num_prefixes]
  int num_prefixes;
  int tokens_per_block;     // prefix kernel: member tokens stacked per block
  float* prefix_max;        // [num_tokens, num_heads] running max over the prefix (scaled scores)
  float* prefix_sum;        // [num_tokens, num_heads] sum of exp(score - prefix_max)
  int32_t* prefix_offsets;  // [num_prefixes + 1] into prefix_tokens
  int32_t* prefix_cursor;   // [num_prefixes] counting-sort scratch
  int32_t* prefix_tokens;   // [num_tokens] member tokens grouped by prefix
  // Tree attention; null when the call is causal.
  const int32_t* query_parents;  // [num_tokens], parent's index within the sequence, -1 = root
};

// The sequence owning `token`: the last s with query_start_loc[s] <= token.
__device__ int find_sequence(const AttentionParams& p, int token) {
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
  return lo;
}

// The parent of query `node` of a sequence whose query_parents start at `parents`, or -1 at a
// root or where the parent breaks the contract (it must precede the node).
__device__ int parent_of(const int32_t* parents, int node) {
  const int parent = parents[node];
  return parent >= 0 && parent < node ? parent : -1;
}

// KV entries of `seq` served by its shared prefix; 0 without one or when its fields break the
// contract (then the sequence is computed in full, still correctly).
__device__ int prefix_len_of(const AttentionParams& p, int seq) {
  if (p.seq_prefix == nullptr) return 0;
  const int prefix = p.seq_prefix[seq];
  if (prefix < 0 || prefix >= p.num_prefixes) return 0;
  const int len = p.prefix_lens[prefix];
  const int context = p.seq_lens[seq] - (p.query_start_loc[seq + 1] - p.query_start_loc[seq]);
  const bool valid = len > 0 && len % p.block_size == 0 && len <= context &&
                     len <= p.max_blocks_per_seq * p.block_size;
  return valid ? len : 0;
}

// The prefix whose partial state `token` starts from, or -1.
__device__ int prefix_of_token(const AttentionParams& p, int token) {
  const int seq = find_sequence(p, token);
  if (token < p.query_start_loc[seq] || token >= p.query_start_loc[seq + 1]) return -1;
  return prefix_len_of(p, seq) > 0 ? p.seq_prefix[seq] : -1;
}

// One block of kGroupThreads: counting sort of the query tokens by prefix.
__global__ void group_prefix_tokens_kernel(AttentionParams p, int num_tokens) {
  for (int i = threadIdx.x; i < p.num_prefixes; i += blockDim.x) p.prefix_cursor[i] = 0;
  __syncthreads();
  for (int t = threadIdx.x; t < num_tokens; t += blockDim.x) {
    const int prefix = prefix_of_token(p, t);
    if (prefix >= 0) atomicAdd(&p.prefix_cursor[prefix], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int i = 0; i < p.num_prefixes; ++i) {
      const int count = p.prefix_cursor[i];
      p.prefix_offsets[i] = total;
      p.prefix_cursor[i] = total;
      total += count;
    }
    p.prefix_offsets[p.num_prefixes] = total;
  }
  __syncthreads();
  // Order within a prefix is arbitrary; every row's result is independent of it.
  for (int t = threadIdx.x; t < num_tokens; t += blockDim.x) {
    const int prefix = prefix_of_token(p, t);
    if (prefix >= 0) p.prefix_tokens[atomicAdd(&p.prefix_cursor[prefix], 1)] = t;
  }
}

// Shared memory of one prefix block: stacked queries and accumulators, a K tile (rows padded by
// one float against bank conflicts), a V tile, scores and per-row softmax state.
size_t prefix_shared_bytes(int rows, int head_dim) {
  return sizeof(float) * (2 * static_cast<size_t>(rows) * head_dim +
                          static_cast<size_t>(kKeyTile) * (2 * head_dim + 1) +
                          static_cast<size_t>(rows) * kKeyTile + 3 * static_cast<size_t>(rows));
}

// Grid (token tile, kv head, prefix). Row r of the block is query head kv_head * group +
// r % group of member token r / group of the tile.
__global__ void prefix_partial_kernel(AttentionParams p) {
  extern __shared__ float prefix_shared[];
  const int prefix = blockIdx.z;
  const int kv_head = blockIdx.y;
  const int begin = p.prefix_offsets[prefix] + blockIdx.x * p.tokens_per_block;
  const int end = p.prefix_offsets[prefix + 1];
  if (begin >= end) return;
  const int group = p.num_heads / p.num_kv_heads;
  const int head_dim = p.head_dim;
  const int k_stride = head_dim + 1;
  const int num_tok = min(p.tokens_per_block, end - begin);
  const int rows = num_tok * group;
  const int* tokens = p.prefix_tokens + begin;
  float* q_s = prefix_shared;                 // [rows, head_dim], scaled
  float* acc = q_s + rows * head_dim;         // [rows, head_dim]
  float* k_s = acc + rows * head_dim;         // [kKeyTile, head_dim + 1]
  float* v_s = k_s + kKeyTile * k_stride;     // [kKeyTile, head_dim]
  float* scores = v_s + kKeyTile * head_dim;  // [rows, kKeyTile]
  float* run_max = scores + rows * kKeyTile;  // [rows]
  float* run_sum = run_max + rows;            // [rows]
  float* rescale = run_sum + rows;            // [rows]
  const int warp = threadIdx.x >> 5;
  const int num_warps = blockDim.x >> 5;
  const int prefix_len = p.prefix_lens[prefix];
  // Every member's block table agrees on the prefix's pages; take the first token's.
  const int32_t* block_table =
      p.block_tables + static_cast<int64_t>(find_sequence(p, tokens[0])) * p.max_blocks_per_seq;
  auto head_row = [&](int r) {  // (token, head) index of row r
    return static_cast<int64_t>(tokens[r / group]) * p.num_heads +
           static_cast<int64_t>(kv_head) * group + r % group;
  };

  for (int i = threadIdx.x; i < rows * head_dim; i += blockDim.x) {
    const int r = i / head_dim;
    q_s[i] = p.query[head_row(r) * head_dim + (i - r * head_dim)] * p.scale;
    acc[i] = 0.0f;
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    run_max[r] = -INFINITY;
    run_sum[r] = 0.0f;
  }
  __syncthreads();

  for (int tile_start = 0; tile_start < prefix_len; tile_start += kKeyTile) {
    const int tile_len = min(kKeyTile, prefix_len - tile_start);

    // 1. Stage the tile's keys and values (coalesced along head_dim).
    for (int i = threadIdx.x; i < tile_len * head_dim; i += blockDim.x) {
      const int t = i / head_dim;
      const int d = i - t * head_dim;
      const int pos = tile_start + t;
      const int64_t block = block_table[pos / p.block_size];
      const int64_t slot = block * p.block_size + pos % p.block_size;
      const int64_t offset = (slot * p.num_kv_heads + kv_head) * head_dim + d;
      k_s[t * k_stride + d] = p.key_cache[offset];
      v_s[t * head_dim + d] = p.value_cache[offset];
    }
    __syncthreads();

    // 2. Scores, one (row, key) pair per thread.
    for (int i = threadIdx.x; i < rows * tile_len; i += blockDim.x) {
      const int r = i / tile_len;
      const int t = i - r * tile_len;
      const float* q = q_s + r * head_dim;
      const float* k = k_s + t * k_stride;
      float dot = 0.0f;
      for (int d = 0; d < head_dim; ++d) dot += q[d] * k[d];
      scores[r * kKeyTile + t] = dot;
    }
    __syncthreads();

    // 3. Online softmax update, one warp per row.
    for (int r = warp; r < rows; r += num_warps) {
      warp_online_softmax_update(scores + r * kKeyTile, tile_len, run_max[r], run_sum[r],
                                 rescale[r]);
    }
    __syncthreads();

    // 4. acc = acc * rescale + P V.
    for (int i = threadIdx.x; i < rows * head_dim; i += blockDim.x) {
      const int r = i / head_dim;
      const int d = i - r * head_dim;
      const float* s = scores + r * kKeyTile;
      float a = acc[i] * rescale[r];
      for (int t = 0; t < tile_len; ++t) a += s[t] * v_s[t * head_dim + d];
      acc[i] = a;
    }
    __syncthreads();
  }

  for (int i = threadIdx.x; i < rows * head_dim; i += blockDim.x) {
    const int r = i / head_dim;
    p.out[head_row(r) * head_dim + (i - r * head_dim)] = acc[i];
  }
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    p.prefix_max[head_row(r)] = run_max[r];
    p.prefix_sum[head_row(r)] = run_sum[r];
  }
}

// Shared memory of one block, carved from the dynamic allocation.
size_t shared_bytes(int group, int head_dim) {
  return kTile * sizeof(int64_t) +
         sizeof(float) * (2 * static_cast<size_t>(group) * head_dim + group * kTile + 3 * group);
}

__global__ void paged_attention_kernel(AttentionParams p) {
  extern __shared__ int64_t shared_raw[];
  const int group = p.num_heads / p.num_kv_heads;
  const int head_dim = p.head_dim;
  int64_t* kv_rows = shared_raw;                              // [kTile] element offsets
  float* q_s = reinterpret_cast<float*>(shared_raw + kTile);  // [group, head_dim], scaled
  float* acc = q_s + group * head_dim;                        // [group, head_dim]
  float* scores = acc + group * head_dim;                     // [group, kTile]
  float* run_max = scores + group * kTile;                    // [group]
  float* run_sum = run_max + group;                           // [group]
  float* rescale = run_sum + group;                           // [group]

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

  const int seq = find_sequence(p, token);
  const int q_begin = p.query_start_loc[seq];
  const int q_end = p.query_start_loc[seq + 1];
  int context = 0;   // KV entries this query sees; 0 for a token outside every sequence
  int kv_begin = 0;  // entries before it come as state from prefix_partial_kernel
  // Entries [0, num_cached) are read in place; the rest (tree attention) are the ancestor chain.
  int num_cached = 0;
  const int32_t* parents = nullptr;  // the sequence's query_parents; null = causal
  int chain_node = token - q_begin;  // thread 0's walk: next chain node to place
  if (token >= q_begin && token < q_end) {
    const int capacity = p.max_blocks_per_seq * p.block_size;
    const int cached = p.seq_lens[seq] - (q_end - q_begin);
    context = min(cached + (token - q_begin) + 1, capacity);
    num_cached = context;
    if (p.query_parents != nullptr) {
      parents = p.query_parents + q_begin;
      if (cached < 0 || context < cached + (token - q_begin) + 1) {
        context = 0;  // lengths break the contract; reading the chain could leave the table
      } else {
        int chain_len = 0;
        for (int a = token - q_begin; a >= 0; a = parent_of(parents, a)) ++chain_len;
        num_cached = cached;
        context = cached + chain_len;
      }
    }
    kv_begin = prefix_len_of(p, seq);
  }
  if (context <= 0) {
    for (int i = threadIdx.x; i < group_elems; i += blockDim.x) out[i] = 0.0f;
    return;
  }
  const int32_t* block_table = p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq;

  const int64_t state =
      static_cast<int64_t>(token) * p.num_heads + static_cast<int64_t>(kv_head) * group;
  for (int i = threadIdx.x; i < group_elems; i += blockDim.x) {
    q_s[i] = p.query[head_offset + i] * p.scale;
    acc[i] = kv_begin > 0 ? out[i] : 0.0f;
  }
  for (int g = threadIdx.x; g < group; g += blockDim.x) {
    run_max[g] = kv_begin > 0 ? p.prefix_max[state + g] : -INFINITY;
    run_sum[g] = kv_begin > 0 ? p.prefix_sum[state + g] : 0.0f;
  }
  __syncthreads();

  for (int tile_start = kv_begin; tile_start < context; tile_start += kTile) {
    const int tile_len = min(kTile, context - tile_start);

    // 1. KV slots of this tile: cached positions in parallel, then the chain's by thread 0.
    auto kv_row = [&](int pos) {
      const int64_t block = block_table[pos / p.block_size];
      const int64_t slot = block * p.block_size + pos % p.block_size;
      return (slot * p.num_kv_heads + kv_head) * head_dim;
    };
    const int cached_len = max(0, min(tile_len, num_cached - tile_start));
    for (int t = threadIdx.x; t < cached_len; t += blockDim.x) kv_rows[t] = kv_row(tile_start + t);
    if (threadIdx.x == 0) {
      for (int t = cached_len; t < tile_len; ++t) {
        kv_rows[t] = kv_row(num_cached + chain_node);
        chain_node = parent_of(parents, chain_node);
      }
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
      warp_online_softmax_update(scores + g * kTile, tile_len, run_max[g], run_sum[g], rescale[g]);
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

// Bytes of the prefix scratch: per (token, head) max and sum, then the counting sort's ints.
size_t prefix_scratch_bytes(int64_t num_tokens, int64_t num_heads, int64_t num_prefixes) {
  return sizeof(float) * 2 * static_cast<size_t>(num_tokens * num_heads) +
         sizeof(int32_t) * static_cast<size_t>(2 * num_prefixes + 1 + num_tokens);
}

// Queues the grouping and the prefix partials, filling p's prefix fields. `scratch` holds
// prefix_scratch_bytes() and stays leased until the main launch is queued.
void launch_prefix_partials(const ops::PagedAttentionArgs& args, void* scratch,
                            AttentionParams& p) {
  const int64_t num_tokens = args.query.dim(0);
  const int num_prefixes = static_cast<int>(args.prefix_lens.numel());
  const int group = p.num_heads / p.num_kv_heads;
  ES_CHECK(num_prefixes <= 65535) << "paged_attention: " << num_prefixes << " shared prefixes";
  p.seq_prefix = args.seq_prefix.data<int32_t>();
  p.prefix_lens = args.prefix_lens.data<int32_t>();
  p.num_prefixes = num_prefixes;

  int device = 0;
  int max_smem = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  int tokens_per_block = std::max(1, kTargetPrefixRows / group);
  while (tokens_per_block > 1 && prefix_shared_bytes(tokens_per_block * group, p.head_dim) >
                                     static_cast<size_t>(max_smem)) {
    tokens_per_block /= 2;
  }
  const size_t smem = prefix_shared_bytes(tokens_per_block * group, p.head_dim);
  ES_CHECK(smem <= static_cast<size_t>(max_smem))
      << "paged_attention: a shared prefix with " << group << " heads per KV head of dim "
      << p.head_dim << " needs " << smem << " bytes of shared memory, the device has " << max_smem;
  p.tokens_per_block = tokens_per_block;

  auto* floats = static_cast<float*>(scratch);
  p.prefix_max = floats;
  p.prefix_sum = floats + num_tokens * p.num_heads;
  auto* ints = reinterpret_cast<int32_t*>(floats + 2 * num_tokens * p.num_heads);
  p.prefix_offsets = ints;
  p.prefix_cursor = ints + num_prefixes + 1;
  p.prefix_tokens = ints + 2 * num_prefixes + 1;

  group_prefix_tokens_kernel<<<1, kGroupThreads>>>(p, static_cast<int>(num_tokens));
  CUDA_CHECK_LAUNCH();
  if (smem > kDefaultSharedBytes) {
    CUDA_CHECK(cudaFuncSetAttribute(prefix_partial_kernel,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
  }
  // Tiles per prefix: enough for a prefix that every token belongs to; the rest exit at once.
  const dim3 grid(static_cast<unsigned>(ceil_div(num_tokens, tokens_per_block)),
                  static_cast<unsigned>(p.num_kv_heads), static_cast<unsigned>(num_prefixes));
  prefix_partial_kernel<<<grid, kPrefixThreads, smem>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void paged_attention(const ops::PagedAttentionArgs& args, Tensor& out) {
  const int64_t num_tokens = args.query.dim(0);
  const int num_heads = static_cast<int>(args.query.dim(1));
  const int head_dim = static_cast<int>(args.query.dim(2));
  const int num_kv_heads = static_cast<int>(args.key_cache.dim(2));
  const int num_seqs = static_cast<int>(args.seq_lens.numel());
  if (num_tokens == 0 || num_heads == 0 || head_dim == 0) return;
  ES_CHECK(head_dim <= kMaxHeadDim)
      << "paged_attention: head_dim " << head_dim << " > " << kMaxHeadDim;
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
  p.seq_prefix = nullptr;
  p.prefix_lens = nullptr;
  p.num_prefixes = 0;
  p.tokens_per_block = 0;
  p.prefix_max = nullptr;
  p.prefix_sum = nullptr;
  p.prefix_offsets = nullptr;
  p.prefix_cursor = nullptr;
  p.prefix_tokens = nullptr;
  p.query_parents = args.query_parents.defined() ? args.query_parents.data<int32_t>() : nullptr;

  // Held until the launches are queued; later users of the scratch queue behind them.
  std::optional<ScratchLease> scratch;
  if (args.seq_prefix.defined() && args.prefix_lens.numel() > 0) {
    scratch.emplace(prefix_scratch_bytes(num_tokens, num_heads, args.prefix_lens.numel()));
    launch_prefix_partials(args, scratch->data(), p);
  }

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
