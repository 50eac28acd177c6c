#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

struct SeqSpec {
  int64_t q_len;    // queries this step
  int64_t context;  // KV entries cached before this step
};

// A batch of sequences laid out in a shuffled paged cache; every slot no sequence owns holds NaN
// so that reading outside a sequence's entries poisons the result.
struct PagedBatch {
  Tensor query;            // [num_tokens, num_heads, head_dim]
  Tensor key_cache;        // [num_blocks, block_size, num_kv_heads, head_dim]
  Tensor value_cache;      // same
  Tensor block_tables;     // [num_seqs, max_blocks]
  Tensor seq_lens;         // [num_seqs]
  Tensor query_start_loc;  // [num_seqs + 1]
};

PagedBatch make_batch(const std::vector<SeqSpec>& seqs, int64_t num_heads, int64_t num_kv_heads,
                      int64_t head_dim, int64_t block_size, uint32_t seed) {
  const int64_t num_seqs = static_cast<int64_t>(seqs.size());
  std::vector<int32_t> seq_lens, qsl = {0};
  int64_t max_blocks = 1, total_blocks = 0;
  for (const SeqSpec& s : seqs) {
    int64_t len = s.q_len + s.context;
    seq_lens.push_back(static_cast<int32_t>(len));
    qsl.push_back(static_cast<int32_t>(qsl.back() + s.q_len));
    int64_t blocks = (len + block_size - 1) / block_size;
    max_blocks = std::max(max_blocks, blocks + 1);  // spare, unused columns
    total_blocks += blocks;
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
  for (int64_t s = 0; s < num_seqs; ++s) {
    for (int64_t j = 0; j < seq_lens[s]; ++j) {
      if (j % block_size == 0) tables[s * max_blocks + j / block_size] = perm[next++];
      int64_t slot = tables[s * max_blocks + j / block_size] * block_size + j % block_size;
      std::copy_n(k_src.begin() + slot * entry, entry, kc.begin() + slot * entry);
      std::copy_n(v_src.begin() + slot * entry, entry, vc.begin() + slot * entry);
    }
  }
  PagedBatch b;
  b.query = random_tensor({qsl.back(), num_heads, head_dim}, seed + 3);
  b.key_cache = Tensor::from_vector(kc, {num_blocks, block_size, num_kv_heads, head_dim});
  b.value_cache = Tensor::from_vector(vc, {num_blocks, block_size, num_kv_heads, head_dim});
  b.block_tables = Tensor::from_vector(tables, {num_seqs, max_blocks});
  b.seq_lens = Tensor::from_vector(seq_lens);
  b.query_start_loc = Tensor::from_vector(qsl);
  return b;
}

// Plain loops, double accumulation, one query head at a time.
std::vector<double> reference_attention(const PagedBatch& b, float scale) {
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
    for (int64_t j = 0; j < q_len; ++j) {
      const int64_t token = qsl[s] + j;
      const int64_t visible = seq_len - q_len + j + 1;
      for (int64_t h = 0; h < num_heads; ++h) {
        const int64_t kvh = h / (num_heads / num_kv_heads);
        auto kv_offset = [&](int64_t e) {
          int64_t slot = tables[s * max_blocks + e / block_size] * block_size + e % block_size;
          return (slot * num_kv_heads + kvh) * d;
        };
        std::vector<double> logits(static_cast<size_t>(visible));
        double m = -1e300;
        for (int64_t e = 0; e < visible; ++e) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += double(q[(token * num_heads + h) * d + i]) * kc[kv_offset(e) + i];
          logits[e] = dot * scale;
          m = std::max(m, logits[e]);
        }
        double sum = 0;
        for (double& l : logits) sum += (l = std::exp(l - m));
        for (int64_t e = 0; e < visible; ++e) {
          for (int64_t i = 0; i < d; ++i) {
            out[(token * num_heads + h) * d + i] += logits[e] / sum * vc[kv_offset(e) + i];
          }
        }
      }
    }
  }
  return out;
}

using AttentionParam = std::tuple<Backend, int, int>;  // backend, block_size, gqa ratio

class PagedAttentionTest : public BackendTest<AttentionParam> {
 protected:
  Backend backend() const override { return std::get<0>(GetParam()); }
  int64_t block_size() const { return std::get<1>(GetParam()); }
  int64_t gqa_ratio() const { return std::get<2>(GetParam()); }

  void check(const std::vector<SeqSpec>& seqs, int64_t num_kv_heads, int64_t head_dim,
             uint32_t seed) {
    const int64_t num_heads = num_kv_heads * gqa_ratio();
    PagedBatch b = make_batch(seqs, num_heads, num_kv_heads, head_dim, block_size(), seed);
    ops::PagedAttentionArgs args;
    args.query = on_device(b.query);
    args.key_cache = on_device(b.key_cache);
    args.value_cache = on_device(b.value_cache);
    args.block_tables = on_device(b.block_tables);
    args.seq_lens = on_device(b.seq_lens);
    args.query_start_loc = on_device(b.query_start_loc);
    args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    Tensor out = device_zeros(b.query.shape());
    ops::paged_attention(args, out);
    expect_near_all(host_floats(out), reference_attention(b, args.scale), 2e-5, 1e-4,
                    "paged_attention");
  }
};

TEST_P(PagedAttentionTest, DecodesSequencesOfDifferentLengths) {
  check({{1, 0}, {1, 36}, {1, 4}, {1, 17}}, 2, 40, 80);
}

TEST_P(PagedAttentionTest, PrefillsFreshSequencesCausally) {
  check({{5, 0}, {13, 0}, {1, 0}}, 2, 24, 81);
}

TEST_P(PagedAttentionTest, MixesChunkedPrefillWithCachedContextAndDecodes) {
  check({{1, 37}, {7, 20}, {5, 0}, {1, 1}, {16, 16}}, 2, 72, 82);
}

TEST_P(PagedAttentionTest, SplitsLongPrefillsIntoQueryChunks) {
  check({{300, 40}, {1, 250}}, 1, 16, 83);
  // 129 positions: the last chunk holds one position whatever the group size.
  check({{129, 3}}, 2, 20, 84);
}

std::string attention_param_name(const ::testing::TestParamInfo<AttentionParam>& info) {
  return backend_name(std::get<0>(info.param)) + "Block" + std::to_string(std::get<1>(info.param)) +
         "Gqa" + std::to_string(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(BackendsBlocksGqa, PagedAttentionTest,
                         ::testing::Combine(::testing::ValuesIn(all_backends()),
                                            ::testing::Values(16, 5), ::testing::Values(1, 2, 4)),
                         attention_param_name);

}  // namespace
}  // namespace earnserve::testing
