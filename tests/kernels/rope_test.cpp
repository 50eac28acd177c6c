#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

// Rotate-half reference: the angle is the f32 product position * inv_freq (as transformers
// computes it), the rotation is done in double.
std::vector<double> reference_rope(const std::vector<float>& x, const std::vector<int32_t>& pos,
                                   const std::vector<float>& inv_freq, int64_t heads,
                                   int64_t head_dim) {
  std::vector<double> out(x.size());
  const int64_t half = head_dim / 2;
  for (size_t t = 0; t < pos.size(); ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* v = x.data() + (t * heads + h) * head_dim;
      double* o = out.data() + (t * heads + h) * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        double angle = static_cast<float>(pos[t]) * inv_freq[i];
        o[i] = v[i] * std::cos(angle) - v[i + half] * std::sin(angle);
        o[i + half] = v[i + half] * std::cos(angle) + v[i] * std::sin(angle);
      }
    }
  }
  return out;
}

class RopeTest : public BackendParamTest {};

TEST_P(RopeTest, RotatesQueryAndKeyHeadsByPosition) {
  const int64_t heads = 6, kv_heads = 2, head_dim = 22;  // half = 11: not a multiple of 8
  std::vector<int32_t> pos = {0, 1, 7, 300, 4095, 2};
  const int64_t tokens = static_cast<int64_t>(pos.size());
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    inv_freq[i] = static_cast<float>(1.0 / std::pow(10000.0, 2.0 * i / head_dim));
  }
  Tensor q = random_tensor({tokens, heads, head_dim}, 14);
  Tensor k = random_tensor({tokens, kv_heads, head_dim}, 15);
  Tensor qd = on_device(q);
  Tensor kd = on_device(k);
  ops::rope(qd, kd, on_device(Tensor::from_vector(pos)), on_device(Tensor::from_vector(inv_freq)));
  // cosf/sinf of angles up to ~4000 rad agree with double to a few 1e-7 absolute.
  expect_near_all(host_floats(qd),
                  reference_rope(q.to_float_vector(), pos, inv_freq, heads, head_dim), 2e-6, 0,
                  "q");
  expect_near_all(host_floats(kd),
                  reference_rope(k.to_float_vector(), pos, inv_freq, kv_heads, head_dim), 2e-6, 0,
                  "k");
}

ES_INSTANTIATE_BACKENDS(RopeTest);

}  // namespace
}  // namespace earnserve::testing
