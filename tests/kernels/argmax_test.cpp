#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class ArgmaxTest : public BackendParamTest {};

TEST_P(ArgmaxTest, ReturnsTheFirstIndexOfTheMaximum) {
  const int64_t cols = 37;
  std::vector<float> x = random_floats(4 * cols, 60, -5.0f, -1.0f);  // all negative
  x[0 * cols + 36] = 2.0f;                                           // max at the last column
  x[1 * cols + 3] = 1.5f, x[1 * cols + 20] = 1.5f;                   // tie: first wins
  x[2 * cols + 0] = 0.5f;                                            // max at the first column
  for (int64_t c = 0; c < cols; ++c) x[3 * cols + c] = 1.0f;         // all equal
  Tensor out = device_zeros({4}, DType::kI32);
  ops::argmax(on_device(Tensor::from_vector(x, {4, cols})), out);
  EXPECT_EQ(host_ints(out), (std::vector<int32_t>{36, 3, 0, 0}));
}

TEST_P(ArgmaxTest, HandlesAVocabularySizedRow) {
  const int64_t cols = 151937;
  std::vector<float> x = random_floats(2 * cols, 61);
  x[123457] = 3.0f;
  x[cols + 99] = 3.0f;
  x[cols + 150000] = 3.0f;
  Tensor out = device_zeros({2}, DType::kI32);
  ops::argmax(on_device(Tensor::from_vector(x, {2, cols})), out);
  EXPECT_EQ(host_ints(out), (std::vector<int32_t>{123457, 99}));
}

ES_INSTANTIATE_BACKENDS(ArgmaxTest);

}  // namespace
}  // namespace earnserve::testing
