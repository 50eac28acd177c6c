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

// dot_rows against a double reference for every float weight dtype, at row counts around the
// kernel's block of four and vector counts around its groups of three, with padded row and vector
// strides.
TEST_P(VecMathTest, DotRowsMatchesReferenceForEveryDtype) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 33, 100}) {
      for (int64_t rows : {1, 3, 4, 5, 8, 9}) {
        for (int64_t num_x : {1, 2, 3, 4, 5, 7, 10, 16}) {
          const int64_t row_stride = n + 2, x_stride = n + 3;
          std::vector<float> wf = random_floats(rows * row_stride, 93, -2.0f, 2.0f);
          std::vector<uint16_t> wh(wf.size());
          // The values the kernel must see, as doubles.
          std::vector<double> wv(wf.size());
          for (size_t i = 0; i < wf.size(); ++i) {
            if (dtype == DType::kBF16) wh[i] = float_to_bf16(wf[i]);
            if (dtype == DType::kF16) wh[i] = float_to_fp16(wf[i]);
            wv[i] = dtype == DType::kF32    ? wf[i]
                    : dtype == DType::kBF16 ? bf16_to_float(wh[i])
                                            : fp16_to_float(wh[i]);
          }
          const void* w = dtype == DType::kF32 ? static_cast<const void*>(wf.data())
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

// dot_rows_i8 against a double reference of its definition (per block: exact integer sum times
// the block's scale), at row counts around the block of four (the last rows padded), vector
// counts around the groups of three, lengths around the 32-column block, padded strides, and with
// every product at its largest (127 * 127 and -127 * 127: no lane may saturate).
TEST_P(VecMathTest, Int8DotRowsMatchTheBlockwiseReference) {
  for (int extreme = 0; extreme < 2; ++extreme) {
    for (int64_t n : {1, 7, 16, 31, 32, 33, 65, 100, 4864}) {
      for (int64_t rows : {1, 3, 4, 5, 8, 9, 13}) {
        for (int64_t num_x : {1, 2, 3, 4, 5, 7, 10, 32}) {
          const int64_t row_stride = n + 5, q_stride = n + 3;
          const int64_t blocks = (n + cpu::kI8Block - 1) / cpu::kI8Block, scale_stride = blocks + 1;
          std::vector<int8_t> w = random_i8(rows * row_stride, 101 + static_cast<uint32_t>(n));
          std::vector<int8_t> q8 = random_i8(num_x * q_stride, 103);
          std::vector<int16_t> q(q8.begin(), q8.end());
          std::vector<float> scales = random_floats(num_x * scale_stride, 105, 0.001f, 0.1f);
          if (extreme) {
            for (size_t i = 0; i < w.size(); ++i) w[i] = (i / 3) % 2 ? 127 : -127;
            for (size_t i = 0; i < q.size(); ++i) q[i] = (i / 7) % 2 ? 127 : -127;
          }
          std::vector<float> out(static_cast<size_t>(rows * num_x) + 4, -7.0f);
          cpu::I8Vectors vectors;
          vectors.assign(q.data(), q_stride, scales.data(), scale_stride, num_x, n);
          cpu::dot_rows_i8(w.data(), row_stride, rows, vectors, out.data());
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < num_x; ++j) {
              double want = 0, mag = 0;
              for (int64_t b = 0; b < blocks; ++b) {
                int64_t sum = 0, sum_abs = 0;
                for (int64_t i = b * cpu::kI8Block; i < std::min(n, (b + 1) * cpu::kI8Block); ++i) {
                  const int64_t p = int64_t{w[r * row_stride + i]} * q[j * q_stride + i];
                  sum += p;
                  sum_abs += p < 0 ? -p : p;
                }
                want += double(scales[j * scale_stride + b]) * double(sum);
                // f32 lanes add partial sums of either sign: their rounding scales with this.
                mag += double(scales[j * scale_stride + b]) * double(sum_abs);
              }
              ASSERT_NEAR(out[r * num_x + j], want, 1e-5 * mag + 1e-6)
                  << "n " << n << " rows " << rows << " x " << num_x << " at " << r << "," << j;
            }
          }
          for (size_t i = static_cast<size_t>(rows * num_x); i < out.size(); ++i) {
            ASSERT_EQ(out[i], -7.0f) << "written past the block";
          }
        }
      }
    }
  }
}

// Activations in blocks of 32: each block's largest |x| maps to +-127 and its scale is that
// value / 127, every value goes to the nearest step (error at most s / 2), zero blocks get s = 0,
// and non-finite input stays in range.
TEST_P(VecMathTest, QuantisesActivationsSymmetricallyPerBlock) {
  for (int64_t n : {1, 5, 32, 33, 100, 896}) {
    std::vector<float> x = random_floats(n, 107, -3.0f, 3.0f);
    x[0] = -4.5f;  // the first block's largest magnitude, negative
    const int64_t blocks = (n + 31) / 32;
    if (n > 40) {
      for (int64_t i = 32; i < 64 && i < n; ++i) x[i] = 0.0f;  // a zero block
    }
    std::vector<int16_t> q(static_cast<size_t>(n), 99);
    std::vector<float> s(static_cast<size_t>(blocks), -1.0f);
    cpu::quantize_activations_i8(x.data(), n, q.data(), s.data());
    EXPECT_FLOAT_EQ(s[0], 4.5f / 127.0f);
    EXPECT_EQ(q[0], -127);
    for (int64_t b = 0; b < blocks; ++b) {
      float amax = 0.0f;
      for (int64_t i = b * 32; i < std::min<int64_t>(n, b * 32 + 32); ++i) {
        amax = std::max(amax, std::fabs(x[i]));
      }
      EXPECT_EQ(s[b], amax / 127.0f) << b;
      for (int64_t i = b * 32; i < std::min<int64_t>(n, b * 32 + 32); ++i) {
        ASSERT_LE(std::abs(q[i]), 127);
        ASSERT_NEAR(q[i] * s[b], x[i], s[b] * 0.5f + 1e-6f) << i;
        if (amax > 0) {
          EXPECT_EQ(q[i], static_cast<int16_t>(std::nearbyint(x[i] * (127.0f / amax)))) << i;
        }
      }
    }
  }
  std::vector<float> bad = {1.0f, std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(), -2.0f};
  std::vector<int16_t> q(4, 5);
  float s = 0;
  cpu::quantize_activations_i8(bad.data(), 4, q.data(), &s);
  for (int i = 0; i < 4; ++i) EXPECT_LE(std::abs(q[i]), 127) << i;
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
                         ::testing::Values(Backend::kCpuPortable, Backend::kCpuAvx2,
                                           Backend::kCpuAvx512),
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
