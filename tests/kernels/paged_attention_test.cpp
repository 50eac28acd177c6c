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
  int64_t context;  // KV entries cached before this step (a shared prefix's included)
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
PagedBatch make_batch(const std::vector<SeqSpec>& seqs, int64_t num_heads, int64_t num_kv_heads,
                      int64_t head_dim, int64_t block_size, uint32_t seed,
                      const std::vector<int32_t>& prefix_lens = {}) {
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

// Plain loops, double accumulation, one query head at a time. Ignores shared prefixes: each
// sequence reads all its entries through its own block table.
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

  // prefix_blocks: length of each shared prefix in blocks.
  void check(const std::vector<SeqSpec>& seqs, int64_t num_kv_heads, int64_t head_dim,
             uint32_t seed, const std::vector<int32_t>& prefix_blocks = {}) {
    const int64_t num_heads = num_kv_heads * gqa_ratio();
    std::vector<int32_t> prefix_lens;
    for (int32_t n : prefix_blocks) prefix_lens.push_back(static_cast<int32_t>(n * block_size()));
    PagedBatch b =
        make_batch(seqs, num_heads, num_kv_heads, head_dim, block_size(), seed, prefix_lens);
    ops::PagedAttentionArgs args;
    args.query = on_device(b.query);
    args.key_cache = on_device(b.key_cache);
    args.value_cache = on_device(b.value_cache);
    args.block_tables = on_device(b.block_tables);
    args.seq_lens = on_device(b.seq_lens);
    args.query_start_loc = on_device(b.query_start_loc);
    if (!prefix_lens.empty()) {
      args.seq_prefix = on_device(b.seq_prefix);
      args.prefix_lens = on_device(b.prefix_lens);
    }
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

// Private entries cached beyond the prefix, cycled over the members: none, one, a block's worth.
constexpr int64_t kPrivateLens[] = {0, 1, 17};

TEST_P(PagedAttentionTest, SharedPrefixMatchesPlainAttentionForAnyNumberOfBeams) {
  const int64_t prefix_len = 4 * block_size();
  for (int64_t width : {1, 2, 7, 64}) {
    std::vector<SeqSpec> beams;
    for (int64_t i = 0; i < width; ++i) beams.push_back({1, prefix_len + kPrivateLens[i % 3], 0});
    SCOPED_TRACE("width " + std::to_string(width));
    check(beams, 2, 40, static_cast<uint32_t>(90 + width), {4});
  }
}

TEST_P(PagedAttentionTest, ThreePrefixesMixWithPlainSequencesInOneCall) {
  const int64_t p0 = 1 * block_size(), p1 = 3 * block_size(), p2 = 6 * block_size();
  check({{1, p1 + 17, 1},
         {1, 40},
         {1, p0 + 0, 0},
         {1, p2 + 1, 2},
         {7, 5},
         {1, p1 + 0, 1},
         {1, p0 + 17, 0},
         {1, 0},
         {1, p2 + 17, 2},
         {1, p1 + 1, 1},
         {1, p0 + 1, 0}},
        2, 72, 95, {1, 3, 6});
}

TEST_P(PagedAttentionTest, SharedPrefixMembersWithSeveralQueries) {
  const int64_t prefix_len = 2 * block_size();
  // Short prefill chunks, a member with no query this step, and a prefill past one query chunk.
  check({{3, prefix_len, 0},
         {9, prefix_len + 17, 0},
         {1, prefix_len + 1, 0},
         {0, prefix_len + 3, 0},
         {130, prefix_len + 2, 0},
         {4, 9}},
        2, 24, 96, {2});
}

TEST_P(PagedAttentionTest, PrefixLongerThanOneScoreChunk) {
  // ~2000 prefix entries over 140 beams: the stacked rows of the prefix come in several chunks.
  const int64_t prefix_len = (2000 / block_size()) * block_size();
  std::vector<SeqSpec> beams;
  for (int64_t i = 0; i < 140; ++i) beams.push_back({1, prefix_len + kPrivateLens[i % 3], 0});
  check(beams, 1, 32, 97, {static_cast<int32_t>(prefix_len / block_size())});
}

std::string attention_param_name(const ::testing::TestParamInfo<AttentionParam>& info) {
  return backend_name(std::get<0>(info.param)) + "Block" + std::to_string(std::get<1>(info.param)) +
         "Gqa" + std::to_string(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(BackendsBlocksGqa, PagedAttentionTest,
                         ::testing::Combine(::testing::ValuesIn(all_backends()),
                                            ::testing::Values(16, 5), ::testing::Values(1, 2, 4)),
                         attention_param_name);

// Malformed shared-prefix arguments stop the call with a message naming the problem. Values
// are checked on the CPU (reading them on a GPU would synchronise every call).
class PagedAttentionPrefixCheckTest : public ::testing::Test {
 protected:
  // Two beams over a two-block prefix of block size 4, plus one plain sequence.
  void SetUp() override {
    b_ = make_batch({{1, 9, 0}, {1, 8, 0}, {1, 3}}, 2, 1, 8, 4, 7, {8});
    out_ = Tensor::zeros(b_.query.shape(), DType::kF32).value();
  }
  ops::PagedAttentionArgs args() const {
    ops::PagedAttentionArgs a;
    a.query = b_.query;
    a.key_cache = b_.key_cache;
    a.value_cache = b_.value_cache;
    a.block_tables = b_.block_tables;
    a.seq_lens = b_.seq_lens;
    a.query_start_loc = b_.query_start_loc;
    a.seq_prefix = b_.seq_prefix;
    a.prefix_lens = b_.prefix_lens;
    return a;
  }
  PagedBatch b_;
  Tensor out_;
};

TEST_F(PagedAttentionPrefixCheckTest, AcceptsWellFormedPrefix) {
  ops::paged_attention(args(), out_);
  expect_near_all(out_.to_float_vector(), reference_attention(b_, 1.0f), 2e-5, 1e-4,
                  "paged_attention");
}

TEST_F(PagedAttentionPrefixCheckTest, RejectsMalformedPrefix) {
  ops::PagedAttentionArgs a = args();
  a.prefix_lens = Tensor();
  EXPECT_DEATH(ops::paged_attention(a, out_), "seq_prefix and prefix_lens must be given together");

  a = args();
  a.prefix_lens = Tensor::from_vector(std::vector<float>{8.0f});
  EXPECT_DEATH(ops::paged_attention(a, out_), "paged_attention: prefix_lens must be i32");

  a = args();
  a.seq_prefix = Tensor::from_vector(std::vector<int32_t>{0, 0});
  EXPECT_DEATH(ops::paged_attention(a, out_), "paged_attention: seq_prefix size is 2, expected 3");

  a = args();
  a.seq_prefix = Tensor::from_vector(std::vector<int32_t>{0, 1, -1});
  EXPECT_DEATH(ops::paged_attention(a, out_), "seq_prefix\\[1\\] = 1 outside \\[-1, 1\\)");

  a = args();
  a.prefix_lens = Tensor::from_vector(std::vector<int32_t>{6});
  EXPECT_DEATH(ops::paged_attention(a, out_),
               "prefix_lens\\[0\\] = 6 is not a positive multiple of block_size 4");

  a = args();
  a.seq_prefix = Tensor::from_vector(std::vector<int32_t>{0, 0, 0});
  EXPECT_DEATH(ops::paged_attention(a, out_),
               "sequence 2 has 3 KV entries before its queries, fewer than its prefix 0 of 8");

  // The second beam's second block is not the first beam's.
  std::vector<int32_t> tables = host_ints(b_.block_tables);
  const int64_t max_blocks = b_.block_tables.dim(1);
  std::swap(tables[max_blocks + 1], tables[2 * max_blocks]);
  a = args();
  a.block_tables = Tensor::from_vector(tables, b_.block_tables.shape());
  EXPECT_DEATH(ops::paged_attention(a, out_),
               "sequences 0 and 1 share prefix 0 but their block tables differ within its first "
               "2 blocks");
}

}  // namespace
}  // namespace earnserve::testing
