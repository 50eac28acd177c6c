#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/paged_batch_util.h"

namespace earnserve::testing {
namespace {

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
    ops::PagedAttentionArgs args = attention_args(b, [&](const Tensor& t) { return on_device(t); });
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
  ops::PagedAttentionArgs args() const { return attention_args(b_); }
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
