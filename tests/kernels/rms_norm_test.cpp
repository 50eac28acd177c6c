#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

constexpr float kEps = 1e-5f;

std::vector<double> reference_rms_norm(const std::vector<float>& x, const std::vector<float>& w,
                                       int64_t rows, int64_t hidden) {
  std::vector<double> out(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t c = 0; c < hidden; ++c) sum += double(x[r * hidden + c]) * x[r * hidden + c];
    double inv = 1.0 / std::sqrt(sum / hidden + kEps);
    for (int64_t c = 0; c < hidden; ++c) out[r * hidden + c] = x[r * hidden + c] * inv * w[c];
  }
  return out;
}

class RmsNormTest : public BackendDtypeParamTest {};

TEST_P(RmsNormTest, NormalisesEachRowAndScalesByTheWeight) {
  for (int64_t hidden : {1, 7, 37, 64, 333}) {
    const int64_t rows = 5;
    Tensor x = random_tensor({rows, hidden}, 3, -3.0f, 3.0f);
    Tensor w = random_tensor({hidden}, 4, 0.5f, 1.5f).to_dtype(weight_dtype());
    Tensor out = device_zeros({rows, hidden});
    ops::rms_norm(on_device(x), on_device(w), kEps, out);
    expect_near_all(host_floats(out),
                    reference_rms_norm(x.to_float_vector(), w.to_float_vector(), rows, hidden),
                    1e-6, 1e-5, "rms_norm hidden " + std::to_string(hidden));
  }
}

TEST_P(RmsNormTest, WorksInPlace) {
  const int64_t rows = 3, hidden = 45;
  Tensor x = random_tensor({rows, hidden}, 5, -2.0f, 2.0f);
  Tensor w = random_tensor({hidden}, 6).to_dtype(weight_dtype());
  Tensor xd = on_device(x);
  ops::rms_norm(xd, on_device(w), kEps, xd);
  expect_near_all(host_floats(xd),
                  reference_rms_norm(x.to_float_vector(), w.to_float_vector(), rows, hidden), 1e-6,
                  1e-5, "in-place rms_norm");
}

TEST_P(RmsNormTest, AddRmsNormUpdatesTheResidualAndNormalisesIt) {
  const int64_t rows = 6, hidden = 53;
  Tensor residual = random_tensor({rows, hidden}, 7);
  Tensor x = random_tensor({rows, hidden}, 8);
  Tensor w = random_tensor({hidden}, 9).to_dtype(weight_dtype());
  std::vector<float> sum(static_cast<size_t>(rows * hidden));
  std::vector<double> want_residual(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) {
    sum[i] = residual.data<float>()[i] + x.data<float>()[i];
    want_residual[i] = sum[i];
  }
  std::vector<double> want_out = reference_rms_norm(sum, w.to_float_vector(), rows, hidden);

  Tensor res_d = on_device(residual);
  Tensor x_d = on_device(x);
  Tensor out = device_zeros({rows, hidden});
  ops::add_rms_norm(res_d, x_d, on_device(w), kEps, out);
  expect_near_all(host_floats(res_d), want_residual, 0.0, 0.0, "residual");
  expect_near_all(host_floats(out), want_out, 1e-6, 1e-5, "out");

  // out aliasing x, as the decoder layer calls it.
  Tensor res2 = on_device(residual);
  Tensor x2 = on_device(x);
  ops::add_rms_norm(res2, x2, on_device(w), kEps, x2);
  expect_near_all(host_floats(res2), want_residual, 0.0, 0.0, "aliased residual");
  expect_near_all(host_floats(x2), want_out, 1e-6, 1e-5, "aliased out");
}

ES_INSTANTIATE_BACKENDS_AND_DTYPES(RmsNormTest);

}  // namespace
}  // namespace earnserve::testing
