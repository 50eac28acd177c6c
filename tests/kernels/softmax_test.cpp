#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

// Rows of varied difficulty: large offsets (naive exp overflows), -inf entries, a single column.
std::vector<float> hard_rows(int64_t rows, int64_t cols, uint32_t seed) {
  std::vector<float> x = random_floats(rows * cols, seed, -20.0f, 20.0f);
  for (int64_t c = 0; c < cols; ++c) x[c] += 1000.0f;
  if (rows > 1 && cols > 2) {
    x[cols + 1] = -std::numeric_limits<float>::infinity();
    x[cols + cols - 1] = -std::numeric_limits<float>::infinity();
  }
  return x;
}

std::vector<double> reference(const std::vector<float>& x, int64_t rows, int64_t cols, bool log) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x.data() + r * cols;
    double m = in[0];
    for (int64_t c = 1; c < cols; ++c) m = std::max(m, double(in[c]));
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(double(in[c]) - m);
    for (int64_t c = 0; c < cols; ++c) {
      out[r * cols + c] = log ? in[c] - m - std::log(sum) : std::exp(double(in[c]) - m) / sum;
    }
  }
  return out;
}

class SoftmaxTest : public BackendParamTest {};

TEST_P(SoftmaxTest, SoftmaxIsStableForLargeAndInfiniteLogits) {
  for (int64_t cols : {1, 7, 33, 1000}) {
    const int64_t rows = 3;
    std::vector<float> x = hard_rows(rows, cols, 50);
    Tensor out = device_zeros({rows, cols});
    ops::softmax(on_device(Tensor::from_vector(x, {rows, cols})), out);
    expect_near_all(host_floats(out), reference(x, rows, cols, false), 1e-7, 1e-5,
                    "softmax cols " + std::to_string(cols));
  }
}

TEST_P(SoftmaxTest, LogSoftmaxIsStableAndWorksInPlace) {
  for (int64_t cols : {1, 7, 33, 1000}) {
    const int64_t rows = 3;
    std::vector<float> x = hard_rows(rows, cols, 51);
    Tensor xd = on_device(Tensor::from_vector(x, {rows, cols}));
    ops::log_softmax(xd, xd);
    std::vector<double> want = reference(x, rows, cols, true);
    std::vector<float> got = host_floats(xd);
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::isinf(want[i])) {
        EXPECT_TRUE(std::isinf(got[i]) && got[i] < 0) << i;
        want[i] = got[i] = 0;
      }
    }
    expect_near_all(got, want, 2e-5, 1e-6, "log_softmax cols " + std::to_string(cols));
  }
}

ES_INSTANTIATE_BACKENDS(SoftmaxTest);

}  // namespace
}  // namespace earnserve::testing
