#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class ReshapeAndCacheTest : public BackendParamTest {};

TEST_P(ReshapeAndCacheTest, WritesEachTokenToItsSlotAndSkipsNegativeSlots) {
  const int64_t tokens = 6, kv_heads = 3, head_dim = 10, blocks = 5, block_size = 4;
  const int64_t row = kv_heads * head_dim;
  Tensor key = random_tensor({tokens, kv_heads, head_dim}, 40);
  Tensor value = random_tensor({tokens, kv_heads, head_dim}, 41);
  std::vector<int32_t> slots = {0, 5, -1, 19, 7, -1};
  const float kUntouched = -7.0f;
  std::vector<float> init(static_cast<size_t>(blocks * block_size * row), kUntouched);
  Tensor kc = on_device(Tensor::from_vector(init, {blocks, block_size, kv_heads, head_dim}));
  Tensor vc = on_device(Tensor::from_vector(init, {blocks, block_size, kv_heads, head_dim}));
  ops::reshape_and_cache(on_device(key), on_device(value), kc, vc,
                         on_device(Tensor::from_vector(slots)));

  std::vector<double> want_k(init.begin(), init.end());
  std::vector<double> want_v(init.begin(), init.end());
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0) continue;
    for (int64_t i = 0; i < row; ++i) {
      want_k[slots[t] * row + i] = key.data<float>()[t * row + i];
      want_v[slots[t] * row + i] = value.data<float>()[t * row + i];
    }
  }
  expect_near_all(host_floats(kc), want_k, 0, 0, "key_cache");
  expect_near_all(host_floats(vc), want_v, 0, 0, "value_cache");
}

ES_INSTANTIATE_BACKENDS(ReshapeAndCacheTest);

}  // namespace
}  // namespace earnserve::testing
