// Tree attention (ops::PagedAttentionArgs::query_parents): each drafted token attends to its
// sequence's context and its own ancestor chain only. Checked against the dense-mask reference
// of paged_batch_util.h on every backend, alone and under shared prefixes, plus the two edge
// cases that pin the semantics: a chain is the causal rule, siblings are hidden from each other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/paged_batch_util.h"

namespace earnserve::testing {
namespace {

constexpr double kTolerance = 1e-5;  // f32 against a double reference

// The parents of a tree with widths[l] nodes at depth l, each below a random node of the level
// above (depth-0 nodes are roots, parent -1), listed in a random topological order so that
// siblings and subtrees interleave: every parent still precedes its children.
std::vector<int32_t> random_tree(const std::vector<int>& widths, std::mt19937& gen) {
  std::vector<int32_t> level_parent;  // level-order ids
  std::vector<std::vector<int32_t>> children;
  int32_t level_begin = 0;
  for (size_t l = 0; l < widths.size(); ++l) {
    const int32_t begin = static_cast<int32_t>(level_parent.size());
    for (int i = 0; i < widths[l]; ++i) {
      int32_t parent = -1;
      if (l > 0) {
        std::uniform_int_distribution<int32_t> pick(level_begin, begin - 1);
        parent = pick(gen);
      }
      level_parent.push_back(parent);
    }
    level_begin = begin;
  }
  const size_t n = level_parent.size();
  children.resize(n);
  std::vector<int32_t> ready;
  for (size_t v = 0; v < n; ++v) {
    if (level_parent[v] < 0) {
      ready.push_back(static_cast<int32_t>(v));
    } else {
      children[level_parent[v]].push_back(static_cast<int32_t>(v));
    }
  }
  std::vector<int32_t> position(n, -1);
  std::vector<int32_t> parents;
  while (!ready.empty()) {
    std::uniform_int_distribution<size_t> pick(0, ready.size() - 1);
    const size_t i = pick(gen);
    const int32_t v = ready[i];
    ready[i] = ready.back();
    ready.pop_back();
    position[v] = static_cast<int32_t>(parents.size());
    parents.push_back(level_parent[v] < 0 ? -1 : position[level_parent[v]]);
    ready.insert(ready.end(), children[v].begin(), children[v].end());
  }
  return parents;
}

// A random tree of depth 1..4 with 1..40 nodes per level.
std::vector<int32_t> random_tree(std::mt19937& gen) {
  std::uniform_int_distribution<int> depth(1, 4), width(1, 40);
  std::vector<int> widths(static_cast<size_t>(depth(gen)));
  for (int& w : widths) w = width(gen);
  return random_tree(widths, gen);
}

std::vector<int32_t> chain(int64_t n) {
  std::vector<int32_t> parents;
  for (int64_t j = 0; j < n; ++j) parents.push_back(static_cast<int32_t>(j - 1));
  return parents;
}

// The call's query_parents: the trees' parents, one sequence after another.
std::vector<int32_t> concat(const std::vector<std::vector<int32_t>>& trees) {
  std::vector<int32_t> parents;
  for (const std::vector<int32_t>& tree : trees) {
    parents.insert(parents.end(), tree.begin(), tree.end());
  }
  return parents;
}

class TreeAttentionTest : public BackendTest<AttentionParam> {
 protected:
  Backend backend() const override { return std::get<0>(GetParam()); }
  int64_t block_size() const { return std::get<1>(GetParam()); }
  int64_t gqa_ratio() const { return std::get<2>(GetParam()); }

  // One sequence per tree (its queries are the tree's nodes) after `contexts[s]` cached entries,
  // the first prefix_blocks[seq_prefixes[s]] blocks of which are a shared prefix (-1 = none).
  PagedBatch batch(const std::vector<std::vector<int32_t>>& trees,
                   const std::vector<int64_t>& contexts, uint32_t seed,
                   const std::vector<int32_t>& prefix_blocks = {},
                   const std::vector<int32_t>& seq_prefixes = {}) const {
    std::vector<SeqSpec> seqs;
    for (size_t s = 0; s < trees.size(); ++s) {
      const int32_t prefix = seq_prefixes.empty() ? -1 : seq_prefixes[s];
      seqs.push_back({static_cast<int64_t>(trees[s].size()), contexts[s], prefix});
    }
    std::vector<int32_t> prefix_lens;
    for (int32_t n : prefix_blocks) prefix_lens.push_back(static_cast<int32_t>(n * block_size()));
    return make_batch(seqs, kNumKvHeads * gqa_ratio(), kNumKvHeads, kHeadDim, block_size(), seed,
                      prefix_lens);
  }

  // The op's output for `b` on this test's device; causal when `parents` is empty.
  std::vector<float> attend(const PagedBatch& b, const std::vector<int32_t>& parents) const {
    ops::PagedAttentionArgs args = attention_args(b, [&](const Tensor& t) { return on_device(t); });
    if (!parents.empty()) args.query_parents = on_device(Tensor::from_vector(parents));
    args.scale = kScale;
    Tensor out = device_zeros(b.query.shape());
    ops::paged_attention(args, out);
    return host_floats(out);
  }

  void expect_matches_reference(const std::vector<std::vector<int32_t>>& trees,
                                const std::vector<int64_t>& contexts, uint32_t seed,
                                const std::vector<int32_t>& prefix_blocks = {},
                                const std::vector<int32_t>& seq_prefixes = {}) const {
    const PagedBatch b = batch(trees, contexts, seed, prefix_blocks, seq_prefixes);
    const std::vector<int32_t> parents = concat(trees);
    expect_near_all(attend(b, parents), reference_attention(b, kScale, parents), kTolerance,
                    kTolerance, "tree attention");
  }

  static constexpr int64_t kNumKvHeads = 2;
  static constexpr int64_t kHeadDim = 40;
  static inline const float kScale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
};

TEST_P(TreeAttentionTest, RandomTreesMatchDenseMaskReference) {
  std::mt19937 gen(1234);
  std::uniform_int_distribution<int64_t> context(0, 200);
  for (uint32_t trial = 0; trial < 4; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    // Contexts at both ends of 0..200 and random ones; a lone root (a plain decode) among them;
    // 129 nodes leave one position after whole query chunks (the CPU's decode path).
    std::vector<std::vector<int32_t>> trees = {random_tree(gen),
                                               random_tree(gen),
                                               {-1},
                                               random_tree({10, 40, 40, 39}, gen),
                                               random_tree(gen)};
    std::vector<int64_t> contexts = {0, 200, context(gen), context(gen), context(gen)};
    expect_matches_reference(trees, contexts, 300 + trial);
  }
}

TEST_P(TreeAttentionTest, RandomTreesUnderSharedPrefixes) {
  std::mt19937 gen(5678);
  // Beams of two prefixes with private entries past them (none, one, more than a block), each
  // verifying its own drafted tree, and a sequence without a prefix.
  const int64_t p0 = 3 * block_size(), p1 = 1 * block_size();
  std::vector<std::vector<int32_t>> trees;
  for (int i = 0; i < 6; ++i) trees.push_back(random_tree(gen));
  trees.push_back(random_tree({10, 40, 40, 39}, gen));
  expect_matches_reference(trees, {p0, p0 + 1, p0 + 17, p1, p1 + 17, 23, p1 + 1}, 400, {3, 1},
                           {0, 0, 0, 1, 1, -1, 1});
}

TEST_P(TreeAttentionTest, ChainEqualsCausal) {
  // Long chains span several of the GPU kernel's key tiles.
  const std::vector<std::vector<int32_t>> trees = {chain(150), chain(5), chain(1), chain(33)};
  for (bool with_prefix : {false, true}) {
    SCOPED_TRACE(with_prefix ? "with a shared prefix" : "without a shared prefix");
    const std::vector<int32_t> prefix_blocks =
        with_prefix ? std::vector<int32_t>{2} : std::vector<int32_t>{};
    const std::vector<int32_t> seq_prefixes =
        with_prefix ? std::vector<int32_t>{0, -1, 0, 0} : std::vector<int32_t>{};
    const int64_t p = 2 * block_size();
    const PagedBatch b = batch(trees, {p + 100, 0, p + 37, p}, 500, prefix_blocks, seq_prefixes);
    const std::vector<int32_t> parents = concat(trees);
    const std::vector<float> tree_out = attend(b, parents);
    const std::vector<float> causal_out = attend(b, {});
    if (backend() == Backend::kCuda) {
      // The GPU walks a chain leaf first, so float sums run in another order.
      expect_near_all(tree_out, std::vector<double>(causal_out.begin(), causal_out.end()),
                      kTolerance, kTolerance, "chain vs causal");
    } else {
      EXPECT_EQ(tree_out, causal_out);
    }
    expect_near_all(tree_out, reference_attention(b, kScale), kTolerance, kTolerance,
                    "chain vs causal reference");
  }
}

TEST_P(TreeAttentionTest, SiblingsUnderOneRootDoNotSeeEachOther) {
  // A root with six children after 20 cached entries.
  const std::vector<int32_t> parents = {-1, 0, 0, 0, 0, 0, 0};
  const PagedBatch b = batch({parents}, {20}, 600);
  const std::vector<float> tree_out = attend(b, parents);
  const std::vector<float> causal_out = attend(b, {});
  expect_near_all(tree_out, reference_attention(b, kScale, parents), kTolerance, kTolerance,
                  "tree attention");
  // The root and the first child see the same entries either way; each later child differs from
  // causal, which would let it see its elder siblings.
  const size_t row = static_cast<size_t>(b.query.dim(1) * b.query.dim(2));
  for (size_t j = 0; j < parents.size(); ++j) {
    double max_diff = 0.0;
    for (size_t i = j * row; i < (j + 1) * row; ++i) {
      max_diff = std::max(max_diff, std::fabs(double(tree_out[i]) - double(causal_out[i])));
    }
    if (j < 2) {
      EXPECT_LE(max_diff, kTolerance) << "query " << j;
    } else {
      EXPECT_GT(max_diff, 1e-3) << "query " << j << " matches causal attention";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(TreeAttention, TreeAttentionTest,
                         ::testing::Combine(::testing::ValuesIn(all_backends()),
                                            ::testing::Values(4, 16), ::testing::Values(1, 2, 4)),
                         attention_param_name);

// Malformed parents stop the call with a message naming the problem (values checked on the CPU).
class TreeAttentionCheckTest : public ::testing::Test {
 protected:
  // Sequence 0: three tree queries after 5 cached entries; sequence 1: two after 2.
  void SetUp() override {
    b_ = make_batch({{3, 5}, {2, 2}}, 2, 1, 8, 4, 9);
    out_ = Tensor::zeros(b_.query.shape(), DType::kF32).value();
  }
  ops::PagedAttentionArgs args(const std::vector<int32_t>& parents) const {
    ops::PagedAttentionArgs a = attention_args(b_);
    a.query_parents = Tensor::from_vector(parents);
    return a;
  }
  PagedBatch b_;
  Tensor out_;
};

TEST_F(TreeAttentionCheckTest, AcceptsWellFormedTrees) {
  const std::vector<int32_t> parents = {-1, -1, 1, -1, 0};
  ops::paged_attention(args(parents), out_);
  expect_near_all(out_.to_float_vector(), reference_attention(b_, 1.0f, parents), kTolerance,
                  kTolerance, "tree attention");
}

TEST_F(TreeAttentionCheckTest, RejectsMalformedParents) {
  EXPECT_DEATH(ops::paged_attention(args({-1, 0, 2, -1, 0}), out_),
               "query_parents\\[2\\] = 2, but query 2 of sequence 0 needs a parent in \\[-1, 2\\)");
  EXPECT_DEATH(ops::paged_attention(args({-1, -2, 0, -1, 0}), out_),
               "query_parents\\[1\\] = -2, but query 1 of sequence 0");
  // Sequence 1's first query may not hang below sequence 0's queries.
  EXPECT_DEATH(ops::paged_attention(args({-1, 0, 1, 2, 0}), out_),
               "query_parents\\[3\\] = 2, but query 0 of sequence 1 needs a parent in \\[-1, 0\\)");

  ops::PagedAttentionArgs a = args({-1, 0, 1, -1, 0});
  a.query_parents = Tensor::from_vector(std::vector<float>{-1, 0, 1, -1, 0});
  EXPECT_DEATH(ops::paged_attention(a, out_), "paged_attention: query_parents must be i32");
  EXPECT_DEATH(ops::paged_attention(args({-1, 0, 1, -1}), out_),
               "paged_attention: query_parents size is 4, expected 5");
}

}  // namespace
}  // namespace earnserve::testing
