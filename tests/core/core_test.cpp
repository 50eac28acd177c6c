#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/half.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/threading.h"

namespace earnserve {
namespace {

TEST(StatusTest, CarriesCodeAndMessage) {
  Status s = invalid_argument("bad field");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.to_string(), "INVALID_ARGUMENT: bad field");
  EXPECT_EQ(s.with_prefix("config.json").message(), "config.json: bad field");
  EXPECT_TRUE(Status::Ok().ok());
}

StatusOr<int> half_of(int x) {
  if (x % 2) return invalid_argument("odd");
  return x / 2;
}

Status use_macros(int x, int* out) {
  ES_ASSIGN_OR_RETURN(int h, half_of(x));
  *out = h;
  return Status::Ok();
}

TEST(StatusTest, MacrosPropagateErrors) {
  int out = 0;
  EXPECT_TRUE(use_macros(8, &out).ok());
  EXPECT_EQ(out, 4);
  EXPECT_EQ(use_macros(7, &out).code(), StatusCode::kInvalidArgument);
}

TEST(HalfTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(HalfTest, Fp16RoundTripsRepresentableValues) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f,
                  0.333251953125f}) {
    EXPECT_EQ(fp16_to_float(float_to_fp16(v)), v) << v;
  }
  EXPECT_TRUE(std::isinf(fp16_to_float(float_to_fp16(1e6f))));
  EXPECT_EQ(float_to_fp16(1.0f), 0x3c00);
  // Rounding error at most half an ulp.
  for (float v = -3.0f; v < 3.0f; v += 0.0123f) {
    float r = fp16_to_float(float_to_fp16(v));
    EXPECT_LE(std::fabs(r - v), std::fabs(v) * std::ldexp(1.0f, -11) + 3e-8f) << v;
  }
}

TEST(TensorTest, ViewAndSliceShareStorage) {
  Tensor t = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor v = t.view({2, -1});
  EXPECT_EQ(v.shape(), (Shape{2, 3}));
  Tensor rows = t.slice_rows(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 2}));
  EXPECT_EQ(rows.item_as_float(0), 2.0f);
  rows.data<float>()[0] = 42.0f;
  EXPECT_EQ(t.item_as_float(2), 42.0f);
}

TEST(TensorTest, HugePageTensorIsZeroedWritableAndOutlivesItsCopies) {
  for (const Shape& shape : {Shape{3, 5}, Shape{1024, 1025}}) {  // under and over 2 MiB
    StatusOr<Tensor> t = Tensor::cpu_huge_pages(shape, DType::kF32);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    EXPECT_EQ(t->shape(), shape);
    EXPECT_TRUE(t->is_cpu());
    Tensor copy = *t;
    t = Tensor();  // the mapping lives as long as a tensor refers to it
    const std::vector<float> values = copy.to_float_vector();
    EXPECT_TRUE(std::all_of(values.begin(), values.end(), [](float v) { return v == 0.0f; }));
    float* data = copy.data<float>();
    data[0] = 1.5f;
    data[copy.numel() - 1] = -2.0f;
    EXPECT_EQ(copy.to_float_vector().back(), -2.0f);
  }
}

TEST(TensorTest, ConvertsDtypes) {
  Tensor t = Tensor::from_vector<float>({1.5f, -2.0f, 0.25f});
  Tensor b = t.to_dtype(DType::kBF16);
  EXPECT_EQ(b.dtype(), DType::kBF16);
  EXPECT_EQ(b.to_float_vector(), (std::vector<float>{1.5f, -2.0f, 0.25f}));
  EXPECT_EQ(t.to_dtype(DType::kF16).to_float_vector(), (std::vector<float>{1.5f, -2.0f, 0.25f}));
}

TEST(TensorTest, CudaTensorWithoutGpuIsAnError) {
  if (Tensor::empty({4}, DType::kF32, Device::kCUDA).ok()) GTEST_SKIP() << "GPU present";
  EXPECT_FALSE(Tensor::empty({4}, DType::kF32, Device::kCUDA).ok());
}

TEST(ThreadingTest, ParallelForCoversRangeOnce) {
  std::vector<int> hits(1000, 0);
  parallel_for(1000, 7, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
}  // namespace earnserve
