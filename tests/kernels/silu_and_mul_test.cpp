#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class SiluAndMulTest : public BackendParamTest {};

TEST_P(SiluAndMulTest, MultipliesSiluOfGateByUp) {
  for (int64_t inter : {1, 9, 37, 1500}) {
    const int64_t tokens = 3;
    std::vector<float> gu = random_floats(tokens * 2 * inter, 16, -12.0f, 12.0f);
    gu[0] = -100.0f;  // exp(100) overflows f32 in a naive 1 + exp(-g)
    if (inter > 1) gu[1] = 100.0f;
    Tensor gate_up = Tensor::from_vector(gu, {tokens, 2 * inter});
    std::vector<double> want(static_cast<size_t>(tokens * inter));
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t i = 0; i < inter; ++i) {
        double g = gu[t * 2 * inter + i];
        double u = gu[t * 2 * inter + inter + i];
        want[t * inter + i] = g / (1.0 + std::exp(-g)) * u;
      }
    }
    Tensor out = device_zeros({tokens, inter});
    ops::silu_and_mul(on_device(gate_up), out);
    expect_near_all(host_floats(out), want, 1e-6, 2e-6, "inter " + std::to_string(inter));
  }
}

ES_INSTANTIATE_BACKENDS(SiluAndMulTest);

}  // namespace
}  // namespace earnserve::testing
