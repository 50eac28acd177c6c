#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

// Full stable sort by value, descending: the order top_k promises.
void reference_top_k(const std::vector<float>& x, int64_t rows, int64_t cols, int k,
                     std::vector<float>* values, std::vector<int32_t>* indices) {
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int32_t> order(static_cast<size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    const float* in = x.data() + r * cols;
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return in[a] > in[b]; });
    for (int j = 0; j < k; ++j) {
      indices->push_back(order[j]);
      values->push_back(in[order[j]]);
    }
  }
}

class TopKTest : public BackendParamTest {
 protected:
  void check(const std::vector<float>& x, int64_t rows, int64_t cols, int k) {
    std::vector<float> want_values;
    std::vector<int32_t> want_indices;
    reference_top_k(x, rows, cols, k, &want_values, &want_indices);
    Tensor values = device_zeros({rows, k});
    Tensor indices = device_zeros({rows, k}, DType::kI32);
    ops::top_k(on_device(Tensor::from_vector(x, {rows, cols})), k, values, indices);
    EXPECT_EQ(host_ints(indices), want_indices) << "cols " << cols << " k " << k;
    EXPECT_EQ(host_floats(values), want_values) << "cols " << cols << " k " << k;
  }
};

TEST_P(TopKTest, SortsDescendingWithTiesBySmallerIndex) {
  // Values from a small set, so most of the vocabulary is tied.
  const int64_t rows = 3, cols = 101;
  std::vector<float> x = random_floats(rows * cols, 70);
  for (float& v : x) v = std::round(v * 3.0f);
  for (int k : {1, 5, 40, 101}) check(x, rows, cols, k);
}

TEST_P(TopKTest, FindsTheTopOfAVocabularySizedRow) {
  const int64_t rows = 2, cols = 50257;
  std::vector<float> x = random_floats(rows * cols, 71, -10.0f, 10.0f);
  x[50000] = x[17] = x[cols + 5] = 30.0f;
  check(x, rows, cols, 50);
}

ES_INSTANTIATE_BACKENDS(TopKTest);

}  // namespace
}  // namespace earnserve::testing
