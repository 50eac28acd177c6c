#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class GatherRowsTest : public BackendParamTest {};

TEST_P(GatherRowsTest, PicksRowsInIndexOrderWithRepeats) {
  const int64_t rows = 9, cols = 13;
  Tensor x = random_tensor({rows, cols}, 10);
  std::vector<int32_t> idx = {8, 0, 3, 3, 7};
  Tensor out = device_zeros({5, cols});
  ops::gather_rows(on_device(x), on_device(Tensor::from_vector(idx)), out);
  std::vector<double> want;
  for (int32_t i : idx) {
    for (int64_t c = 0; c < cols; ++c) want.push_back(x.data<float>()[i * cols + c]);
  }
  expect_near_all(host_floats(out), want, 0.0, 0.0, "gather_rows");
}

TEST_P(GatherRowsTest, AcceptsAnEmptyIndexList) {
  Tensor x = random_tensor({4, 3}, 11);
  Tensor out = device_zeros({0, 3});
  ops::gather_rows(on_device(x), on_device(Tensor::from_vector(std::vector<int32_t>{})), out);
  EXPECT_EQ(out.numel(), 0);
}

ES_INSTANTIATE_BACKENDS(GatherRowsTest);

}  // namespace
}  // namespace earnserve::testing
