// The CPU primitives under both instruction-set paths, and the dispatcher's refusal of CUDA
// tensors in a build without CUDA.
#include "kernels/cpu/vec_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/half.h"
#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class VecMathTest : public BackendTest<Backend> {
 protected:
  Backend backend() const override { return GetParam(); }
};

TEST_P(VecMathTest, ExpIsAccurateOverTheFloatRange) {
  std::vector<float> x;
  for (float v = -87.0f; v < 88.0f; v += 0.0137f) x.push_back(v);
  std::vector<float> e(x.size());
  // shift 0: each value checked on its own (the sum of these overflows f32).
  cpu::exp_shifted(x.data(), 0.0f, e.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    double want = std::exp(double(x[i]));
    ASSERT_NEAR(e[i], want, want * 5e-7) << "exp(" << x[i] << ")";
  }
  // With a shift, as softmax calls it: the sum too (over values from about -73 up).
  const float shift = 5.0f;
  const int64_t first = 1000, n = 1001;
  float sum = cpu::exp_shifted(x.data() + first, shift, e.data(), n);
  double want_sum = 0;
  for (int64_t i = first; i < first + n; ++i) want_sum += std::exp(double(x[i]) - shift);
  EXPECT_NEAR(sum, want_sum, want_sum * 1e-5);
}

TEST_P(VecMathTest, ExpOfMinusInfinityIsZero) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {-inf, -1000.0f, 0.0f, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf};
  std::vector<float> e(x.size());
  float sum = cpu::exp_shifted(x.data(), 0.0f, e.data(), static_cast<int64_t>(x.size()));
  EXPECT_EQ(sum, 1.0f);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(e[i], i == 2 ? 1.0f : 0.0f) << i;
}

TEST_P(VecMathTest, ReductionsHandleOddLengths) {
  for (int64_t n : {1, 7, 8, 9, 31, 33, 100}) {
    std::vector<float> a = random_floats(n, 90), b = random_floats(n, 91);
    double dot = 0, sq = 0;
    float mx = a[0];
    for (int64_t i = 0; i < n; ++i) {
      dot += double(a[i]) * b[i];
      sq += double(a[i]) * a[i];
      mx = std::max(mx, a[i]);
    }
    EXPECT_NEAR(cpu::dot(a.data(), b.data(), n), dot, 1e-5 * n) << n;
    EXPECT_NEAR(cpu::sum_squares(a.data(), n), sq, 1e-5 * n) << n;
    EXPECT_EQ(cpu::max_value(a.data(), n), mx) << n;
  }
}

TEST_P(VecMathTest, MultiRowPrimitivesHandleOddSizes) {
  for (int64_t n : {1, 7, 8, 9, 31, 32, 33, 100}) {
    for (int64_t rows : {1, 3, 4, 5, 9}) {
      const int64_t stride = n + 3;
      std::vector<float> w = random_floats(n, 93), x = random_floats(rows * stride, 94);
      std::vector<float> dots(static_cast<size_t>(rows));
      cpu::dot_multi(w.data(), x.data(), stride, rows, n, dots.data());
      std::vector<float> y = random_floats(n, 95);
      std::vector<double> want_y(y.begin(), y.end());
      std::vector<float> weights = random_floats(rows, 96);
      cpu::accumulate_rows(weights.data(), x.data(), stride, rows, n, y.data());
      for (int64_t j = 0; j < rows; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < n; ++i) {
          dot += double(w[i]) * x[j * stride + i];
          want_y[i] += double(weights[j]) * x[j * stride + i];
        }
        EXPECT_NEAR(dots[j], dot, 1e-5 * n) << "n " << n << " rows " << rows;
      }
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_NEAR(y[i], want_y[i], 1e-5 * rows) << "n " << n << " rows " << rows;
      }
    }
  }
}

TEST_P(VecMathTest, WidensBf16AndF16Exactly) {
  std::vector<float> v = random_floats(29, 92, -100.0f, 100.0f);
  std::vector<uint16_t> bf(v.size()), hf(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    bf[i] = float_to_bf16(v[i]);
    hf[i] = float_to_fp16(v[i]);
  }
  std::vector<float> out(v.size());
  cpu::widen_to_f32(bf.data(), DType::kBF16, out.data(), static_cast<int64_t>(v.size()));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(out[i], bf16_to_float(bf[i])) << i;
  cpu::widen_to_f32(hf.data(), DType::kF16, out.data(), static_cast<int64_t>(v.size()));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(out[i], fp16_to_float(hf[i])) << i;
}

// Random int8 values in [-127, 127].
std::vector<int8_t> random_i8(int64_t n, uint32_t seed) {
  std::vector<int8_t> q(static_cast<size_t>(n));
  std::vector<float> f = random_floats(n, seed, -127.49f, 127.49f);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<int8_t>(std::lround(f[i]));
  return q;
}

// dot_rows against a double reference for every weight dtype, at row counts around the kernel's
// block of four and vector counts around its groups of three, with padded row and vector strides.
TEST_P(VecMathTest, DotRowsMatchesReferenceForEveryDtype) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kI8}) {
    for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 33, 100}) {
      for (int64_t rows : {1, 3, 4, 5, 8, 9}) {
        for (int64_t num_x : {1, 2, 3, 4, 5, 7, 10, 16}) {
          const int64_t row_stride = n + 2, x_stride = n + 3;
          std::vector<float> wf = random_floats(rows * row_stride, 93, -2.0f, 2.0f);
          std::vector<int8_t> wq = random_i8(rows * row_stride, 97);
          std::vector<uint16_t> wh(wf.size());
          // The values the kernel must see, as doubles.
          std::vector<double> wv(wf.size());
          for (size_t i = 0; i < wf.size(); ++i) {
            if (dtype == DType::kBF16) wh[i] = float_to_bf16(wf[i]);
            if (dtype == DType::kF16) wh[i] = float_to_fp16(wf[i]);
            wv[i] = dtype == DType::kF32    ? wf[i]
                    : dtype == DType::kBF16 ? bf16_to_float(wh[i])
                    : dtype == DType::kF16  ? fp16_to_float(wh[i])
                                            : static_cast<double>(wq[i]);
          }
          const void* w = dtype == DType::kF32  ? static_cast<const void*>(wf.data())
                          : dtype == DType::kI8 ? static_cast<const void*>(wq.data())
                                                : static_cast<const void*>(wh.data());
          std::vector<float> x = random_floats(num_x * x_stride, 94);
          std::vector<float> out(static_cast<size_t>(rows * num_x) + 4, -7.0f);
          cpu::dot_rows(w, dtype, row_stride, rows, x.data(), x_stride, num_x, n, out.data());
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < num_x; ++j) {
              double dot = 0, mag = 0;
              for (int64_t i = 0; i < n; ++i) {
                const double p = wv[r * row_stride + i] * x[j * x_stride + i];
                dot += p;
                mag += std::fabs(p);
              }
              EXPECT_NEAR(out[r * num_x + j], dot, 1e-5 * mag + 1e-6)
                  << dtype_name(dtype) << " n " << n << " rows " << rows << " x " << num_x << " at "
                  << r << "," << j;
            }
          }
          // Nothing written past the rows x vectors block.
          for (size_t i = static_cast<size_t>(rows * num_x); i < out.size(); ++i) {
            EXPECT_EQ(out[i], -7.0f) << dtype_name(dtype);
          }
        }
      }
    }
  }
}

TEST_P(VecMathTest, DequantisesInt8ExactlyAtOddSizes) {
  for (int64_t n : {1, 7, 8, 9, 31, 32, 33, 100}) {
    // Exact: one f32 multiply per element on either path; the tail must not write past n.
    std::vector<int8_t> q = random_i8(n, 99);
    std::vector<float> out(static_cast<size_t>(n) + 8, -1.0f);
    cpu::dequantize_i8(q.data(), 0.0173f, out.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], 0.0173f * static_cast<float>(q[i])) << i;
    for (size_t i = static_cast<size_t>(n); i < out.size(); ++i) EXPECT_EQ(out[i], -1.0f) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, VecMathTest,
                         ::testing::Values(Backend::kCpuPortable, Backend::kCpuAvx2),
                         backend_param_name);

TEST(OpsDispatchTest, CudaTensorFailsClearlyInABuildWithoutCuda) {
  StatusOr<Tensor> probe = Tensor::empty({1}, DType::kF32, Device::kCUDA);
  if (probe.ok() || probe.status().message().find("built without CUDA") == std::string::npos) {
    GTEST_SKIP() << "this build has the CUDA backend";
  }
  float storage[4] = {0, 0, 0, 0};
  // Labelled CUDA but never dereferenced: the dispatcher must stop before any kernel runs.
  Tensor y = Tensor::from_blob(storage, {4}, DType::kF32, Device::kCUDA);
  Tensor x = Tensor::from_blob(storage, {4}, DType::kF32, Device::kCUDA);
  EXPECT_DEATH(ops::add_inplace(y, x), "built without CUDA");
}

TEST(OpsDispatchTest, MismatchedShapesAbortWithTheOpName) {
  Tensor x = Tensor::cpu({2, 3}, DType::kF32);
  Tensor w = Tensor::cpu({4, 5}, DType::kF32);
  Tensor out = Tensor::cpu({2, 4}, DType::kF32);
  EXPECT_DEATH(ops::linear(x, w, Tensor(), out), "linear: weight in_features is 5, expected 3");
}

}  // namespace
}  // namespace earnserve::testing
