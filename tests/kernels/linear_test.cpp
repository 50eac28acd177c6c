#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

struct LinearCase {
  int64_t tokens;
  int64_t in;
  int64_t out;
  bool bias;
};

class LinearTest : public BackendDtypeParamTest {
 protected:
  void check(const LinearCase& c, uint32_t seed) {
    const std::string what = "linear " + std::to_string(c.tokens) + "x" + std::to_string(c.in) +
                             "x" + std::to_string(c.out) + (c.bias ? " +bias" : "");
    Tensor x = random_tensor({c.tokens, c.in}, seed);
    Tensor w = random_tensor({c.out, c.in}, seed + 1).to_dtype(weight_dtype());
    Tensor b = c.bias ? random_tensor({c.out}, seed + 2).to_dtype(weight_dtype()) : Tensor();
    Tensor y = device_zeros({c.tokens, c.out});
    ops::linear(on_device(x), on_device(w), c.bias ? on_device(b) : Tensor(), y);

    std::vector<float> xv = x.to_float_vector();
    std::vector<float> wv = w.to_float_vector();
    std::vector<float> bv = c.bias ? b.to_float_vector() : std::vector<float>(c.out, 0.0f);
    std::vector<float> got = host_floats(y);
    // Error bound relative to the sum of |terms|: the weights are rounded identically on both
    // sides, so the difference is f32 accumulation (and any activation splitting on CUDA).
    const double tol = tolerance_for(weight_dtype());
    int failures = 0;
    for (int64_t t = 0; t < c.tokens && failures < 5; ++t) {
      for (int64_t n = 0; n < c.out && failures < 5; ++n) {
        double acc = bv[n], mag = std::fabs(bv[n]);
        for (int64_t k = 0; k < c.in; ++k) {
          double term = double(xv[t * c.in + k]) * wv[n * c.in + k];
          acc += term;
          mag += std::fabs(term);
        }
        double err = std::fabs(got[t * c.out + n] - acc);
        if (!(err <= tol * mag + 1e-7)) {
          ADD_FAILURE() << what << ": [" << t << ", " << n << "] is " << got[t * c.out + n]
                        << ", expected " << acc;
          ++failures;
        }
      }
    }
  }
};

TEST_P(LinearTest, MatchesReferenceForDecodeSizedBatches) {
  check({1, 37, 29, true}, 20);
  check({3, 64, 50, false}, 23);
  check({8, 19, 33, true}, 26);
}

TEST_P(LinearTest, MatchesReferenceForPrefillSizedBatches) {
  check({9, 37, 71, true}, 30);
  check({40, 130, 301, false}, 33);
}

TEST_P(LinearTest, MatchesReferenceWhenWeightsSpanSeveralTiles) {
  // Enough tokens for the tiled GEMM; output features split over several tiles, the last short.
  check({20, 3001, 131, true}, 36);
  check({17, 77, 1000, false}, 39);
}

TEST_P(LinearTest, HandlesEmptyInputFeatures) {
  Tensor x = Tensor::cpu({2, 0}, DType::kF32);
  Tensor w = Tensor::cpu({3, 0}, DType::kF32).to_dtype(weight_dtype());
  Tensor b = Tensor::from_vector(std::vector<float>{1, 2, 3}).to_dtype(weight_dtype());
  Tensor y = device_zeros({2, 3});
  ops::linear(on_device(x), on_device(w), on_device(b), y);
  expect_near_all(host_floats(y), {1, 2, 3, 1, 2, 3}, 0, 0, "bias only");
}

ES_INSTANTIATE_BACKENDS_AND_DTYPES(LinearTest);

}  // namespace
}  // namespace earnserve::testing
