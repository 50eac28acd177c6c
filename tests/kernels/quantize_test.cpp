// Per-row symmetric int8 quantisation (kernels/quantize.h): the scale is the row's largest
// magnitude over 127, every value lands on the nearest step, zero rows stay zero, and 16-bit
// sources quantise like their f32 values.
#include "kernels/quantize.h"

#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

TEST(QuantizeInt8Test, ScalesEachRowByItsLargestMagnitude) {
  const int64_t rows = 5, cols = 67;
  std::vector<float> w = random_floats(rows * cols, 1, -3.0f, 3.0f);
  for (int64_t k = 0; k < cols; ++k) w[2 * cols + k] = 0.0f;  // an all-zero row
  w[3 * cols + 10] = -40.0f;                                  // an outlier sets its row's scale
  ops::LinearWeight q = quantize_int8(Tensor::from_vector(w, {rows, cols}));
  ASSERT_EQ(q.weight.dtype(), DType::kI8);
  ASSERT_EQ(q.weight.shape(), (Shape{rows, cols}));
  ASSERT_EQ(q.scale.shape(), (Shape{rows}));
  for (int64_t r = 0; r < rows; ++r) {
    float absmax = 0;
    for (int64_t k = 0; k < cols; ++k) absmax = std::max(absmax, std::fabs(w[r * cols + k]));
    const float scale = q.scale.data<float>()[r];
    EXPECT_EQ(scale, absmax / 127.0f) << "row " << r;
    for (int64_t k = 0; k < cols; ++k) {
      const int8_t v = q.weight.data<int8_t>()[r * cols + k];
      EXPECT_GE(v, -127);
      if (scale == 0.0f) {
        EXPECT_EQ(v, 0);
        continue;
      }
      EXPECT_EQ(v, static_cast<int8_t>(std::round(w[r * cols + k] / scale))) << r << ", " << k;
      EXPECT_LE(std::fabs(v * scale - w[r * cols + k]), 0.5f * scale * (1 + 1e-5f));
    }
  }
  EXPECT_EQ(q.weight.data<int8_t>()[3 * cols + 10], -127);
}

TEST(QuantizeInt8Test, Bf16RowsQuantiseLikeTheirFloatValues) {
  const int64_t rows = 3, cols = 40;
  Tensor bf16 = random_tensor({rows, cols}, 2).to_dtype(DType::kBF16);
  ops::LinearWeight from_bf16 = quantize_int8(bf16);
  ops::LinearWeight from_f32 = quantize_int8(bf16.to_dtype(DType::kF32));
  EXPECT_EQ(from_bf16.scale.to_float_vector(), from_f32.scale.to_float_vector());
  EXPECT_EQ(from_bf16.weight.to_float_vector(), from_f32.weight.to_float_vector());
}

// A column slice quantised with its whole row's scale equals that slice of the whole row's
// quantisation (what tensor-parallel row-parallel layers rely on).
TEST(QuantizeInt8Test, AColumnSliceWithTheWholeRowsScaleIsASliceOfTheWhole) {
  const int64_t cols = 50, begin = 20, end = 45;
  std::vector<float> w = random_floats(cols, 3);
  ops::LinearWeight whole = quantize_int8(Tensor::from_vector(w, {1, cols}));
  const float scale = int8_row_scale(row_absmax(w.data(), DType::kF32, cols));
  std::vector<int8_t> part(static_cast<size_t>(end - begin));
  quantize_row_int8(w.data() + begin, DType::kF32, end - begin, scale, part.data());
  for (int64_t k = begin; k < end; ++k) {
    EXPECT_EQ(part[static_cast<size_t>(k - begin)], whole.weight.data<int8_t>()[k]) << k;
  }
}

}  // namespace
}  // namespace earnserve::testing
