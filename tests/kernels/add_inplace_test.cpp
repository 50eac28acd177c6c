#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class AddInplaceTest : public BackendParamTest {};

TEST_P(AddInplaceTest, AddsElementwiseForOddShapes) {
  for (const Shape& shape : {Shape{1}, Shape{3, 5, 7}, Shape{2, 40001}}) {
    Tensor y = random_tensor(shape, 12);
    Tensor x = random_tensor(shape, 13);
    std::vector<double> want(static_cast<size_t>(y.numel()));
    for (int64_t i = 0; i < y.numel(); ++i) want[i] = y.data<float>()[i] + x.data<float>()[i];
    Tensor yd = on_device(y);
    ops::add_inplace(yd, on_device(x));
    expect_near_all(host_floats(yd), want, 0.0, 0.0, "add_inplace " + shape_to_string(shape));
  }
}

ES_INSTANTIATE_BACKENDS(AddInplaceTest);

}  // namespace
}  // namespace earnserve::testing
