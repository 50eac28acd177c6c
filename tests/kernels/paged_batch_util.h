// Test inputs for paged attention: a batch of sequences laid out in a shuffled paged KV cache
// (optionally with shared-prefix pages), the op's arguments over it, the tests' parameter names,
// and a plain double-precision reference that reads it back through the block tables, causal or
// tree-masked. Test-only; not thread-safe.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/tensor.h"
#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {

struct SeqSpec {
  int64_t q_len;        // queries this step
  int64_t context;      // KV entries cached before this step (a shared prefix's included)
  int32_t prefix = -1;  // shared prefix whose pages hold the first entries, -1 = none
};

// A batch of sequences laid out in a shuffled paged cache; every slot no sequence owns holds NaN
// so that reading outside a sequence's entries poisons the result. Sequences of one shared
// prefix point at the very same pages for its entries.
struct PagedBatch {
  Tensor query;            // [num_tokens, num_heads, head_dim]
  Tensor key_cache;        // [num_blocks, block_size, num_kv_heads, head_dim]
  Tensor value_cache;      // same
  Tensor block_tables;     // [num_seqs, max_blocks]
  Tensor seq_lens;         // [num_seqs]
  Tensor query_start_loc;  // [num_seqs + 1]
  Tensor seq_prefix;       // [num_seqs], undefined without prefixes
  Tensor prefix_lens;      // [num_prefixes], undefined without prefixes
};

// prefix_lens: entries of each shared prefix, multiples of block_size.
inline PagedBatch make_batch(const std::vector<SeqSpec>& seqs, int64_t num_heads,
                             int64_t num_kv_heads, int64_t head_dim, int64_t block_size,
                             uint32_t seed, const std::vector<int32_t>& prefix_lens = {}) {
  const int64_t num_seqs = static_cast<int64_t>(seqs.size());
  std::vector<int32_t> seq_lens, qsl = {0}, seq_prefix;
  int64_t max_blocks = 1, total_blocks = 0;
  for (int32_t len : prefix_lens) total_blocks += len / block_size;
  auto shared_len = [&](const SeqSpec& s) -> int64_t {
    return s.prefix < 0 ? 0 : prefix_lens[s.prefix];
  };
  for (const SeqSpec& s : seqs) {
    int64_t len = s.q_len + s.context;
    seq_lens.push_back(static_cast<int32_t>(len));
    qsl.push_back(static_cast<int32_t>(qsl.back() + s.q_len));
    seq_prefix.push_back(s.prefix);
    int64_t blocks = (len + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks + 1);  // spare, unused columns
    total_blocks += blocks - shared_len(s) / block_size;
  }
  const int64_t num_blocks = total_blocks + 3;  // a few blocks nobody owns
  std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));

  const int64_t entry = num_kv_heads * head_dim;
  std::vector<float> kc(static_cast<size_t>(num_blocks * block_size * entry),
                        std::numeric_limits<float>::quiet_NaN());
  std::vector<float> vc = kc;
  std::vector<float> k_src = random_floats(static_cast<int64_t>(kc.size()), seed + 1);
  std::vector<float> v_src = random_floats(static_cast<int64_t>(kc.size()), seed + 2);
  std::vector<int32_t> tables(static_cast<size_t>(num_seqs * max_blocks), -1);
  size_t next = 0;
  auto fill_slot = [&](int64_t block, int64_t j) {
    int64_t slot = block * block_size + j % block_size;
    std::copy_n(k_src.begin() + slot * entry, entry, kc.begin() + slot * entry);
    std::copy_n(v_src.begin() + slot * entry, entry, vc.begin() + slot * entry);
  };
  std::vector<std::vector<int32_t>> prefix_blocks;
  for (int32_t len : prefix_lens) {
    std::vector<int32_t>& blocks = prefix_blocks.emplace_back();
    for (int64_t j = 0; j < len; ++j) {
      if (j % block_size == 0) blocks.push_back(perm[next++]);
      fill_slot(blocks.back(), j);
    }
  }
  for (int64_t s = 0; s < num_seqs; ++s) {
    const int64_t shared = shared_len(seqs[s]);
    for (int64_t j = 0; j < seq_lens[s]; ++j) {
      int32_t& block = tables[s * max_blocks + j / block_size];
      if (j < shared) {
        block = prefix_blocks[seqs[s].prefix][j / block_size];
        continue;
      }
      if (j % block_size == 0) block = perm[next++];
      fill_slot(block, j);
    }
  }
  PagedBatch b;
  b.query = random_tensor({qsl.back(), num_heads, head_dim}, seed + 3);
  b.key_cache = Tensor::from_vector(kc, {num_blocks, block_size, num_kv_heads, head_dim});
  b.value_cache = Tensor::from_vector(vc, {num_blocks, block_size, num_kv_heads, head_dim});
  b.block_tables = Tensor::from_vector(tables, {num_seqs, max_blocks});
  b.seq_lens = Tensor::from_vector(seq_lens);
  b.query_start_loc = Tensor::from_vector(qsl);
  if (!prefix_lens.empty()) {
    b.seq_prefix = Tensor::from_vector(seq_prefix);
    b.prefix_lens = Tensor::from_vector(prefix_lens);
  }
  return b;
}

// The ops::paged_attention arguments over `b`, its shared prefixes included when it has them, each
// tensor passed through `place` (a fixture's on_device, or nothing for host tensors). The caller
// sets scale and query_parents.
template <typename Place>
ops::PagedAttentionArgs attention_args(const PagedBatch& b, Place&& place) {
  ops::PagedAttentionArgs args;
  args.query = place(b.query);
  args.key_cache = place(b.key_cache);
  args.value_cache = place(b.value_cache);
  args.block_tables = place(b.block_tables);
  args.seq_lens = place(b.seq_lens);
  args.query_start_loc = place(b.query_start_loc);
  if (b.seq_prefix.defined()) {
    args.seq_prefix = place(b.seq_prefix);
    args.prefix_lens = place(b.prefix_lens);
  }
  return args;
}
inline ops::PagedAttentionArgs attention_args(const PagedBatch& b) {
  return attention_args(b, [](const Tensor& t) { return t; });
}

// Backend, block size and GQA ratio: the parameters of the attention tests.
using AttentionParam = std::tuple<Backend, int, int>;

inline std::string attention_param_name(const ::testing::TestParamInfo<AttentionParam>& info) {
  return backend_name(std::get<0>(info.param)) + "Block" + std::to_string(std::get<1>(info.param)) +
         "Gqa" + std::to_string(std::get<2>(info.param));
}

// Plain loops, double accumulation, one query head at a time. Ignores shared prefixes: each
// sequence reads all its entries through its own block table. Query j of a sequence with
// context c sees entries [0, c) and c + a where sees[j][a], a dense mask: a <= j (causal) or,
// given query_parents ([num_tokens], as ops::PagedAttentionArgs), a on j's ancestor chain.
inline std::vector<double> reference_attention(const PagedBatch& b, float scale,
                                               const std::vector<int32_t>& query_parents = {}) {
  const int64_t num_tokens = b.query.dim(0), num_heads = b.query.dim(1), d = b.query.dim(2);
  const int64_t block_size = b.key_cache.dim(1), num_kv_heads = b.key_cache.dim(2);
  const int64_t max_blocks = b.block_tables.dim(1);
  const float* q = b.query.data<float>();
  const float* kc = b.key_cache.data<float>();
  const float* vc = b.value_cache.data<float>();
  const int32_t* tables = b.block_tables.data<int32_t>();
  const int32_t* qsl = b.query_start_loc.data<int32_t>();
  std::vector<double> out(static_cast<size_t>(num_tokens * num_heads * d), 0.0);
  for (int64_t s = 0; s < b.seq_lens.dim(0); ++s) {
    const int64_t q_len = qsl[s + 1] - qsl[s];
    const int64_t seq_len = b.seq_lens.data<int32_t>()[s];
    const int64_t context = seq_len - q_len;
    std::vector<std::vector<char>> sees(static_cast<size_t>(q_len),
                                        std::vector<char>(static_cast<size_t>(q_len), 0));
    for (int64_t j = 0; j < q_len; ++j) {
      if (query_parents.empty()) {
        std::fill_n(sees[j].begin(), j + 1, 1);
      } else {
        for (int64_t a = j; a >= 0; a = query_parents[qsl[s] + a]) sees[j][a] = 1;
      }
    }
    for (int64_t j = 0; j < q_len; ++j) {
      const int64_t token = qsl[s] + j;
      std::vector<int64_t> visible;  // the KV entries query j attends to
      for (int64_t e = 0; e < seq_len; ++e) {
        if (e < context || sees[j][e - context]) visible.push_back(e);
      }
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t kvh = h / (num_heads / num_kv_heads);
        auto kv_offset = [&](int64_t e) {
          int64_t slot = tables[s * max_blocks + e / block_size] * block_size + e % block_size;
          return (slot * num_kv_heads + kvh) * d;
        };
        std::vector<double> logits(visible.size());
        double m = -1e300;
        for (size_t v = 0; v < visible.size(); ++v) {
          double dot = 0;
          const float* key = kc + kv_offset(visible[v]);
          const float* query = q + (token * num_heads + h) * d;
          for (int64_t i = 0; i < d; ++i) dot += double(query[i]) * key[i];
          logits[v] = dot * scale;
          m = std::max(m, logits[v]);
        }
        double sum = 0;
        for (double& l : logits) sum += (l = std::exp(l - m));
        for (size_t v = 0; v < visible.size(); ++v) {
          for (int64_t i = 0; i < d; ++i) {
            out[(token * num_heads + h) * d + i] += logits[v] / sum * vc[kv_offset(visible[v]) + i];
          }
        }
      }
    }
  }
  return out;
}

}  // namespace earnserve::testing
