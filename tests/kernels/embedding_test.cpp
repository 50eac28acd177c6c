#include <gtest/gtest.h>

#include "kernels/ops.h"
#include "kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"

namespace earnserve::testing {
namespace {

class EmbeddingTest : public BackendDtypeParamTest {};

TEST_P(EmbeddingTest, CopiesTheRowOfEachIdWidenedToF32) {
  const int64_t vocab = 37, hidden = 19;
  Tensor table = random_tensor({vocab, hidden}, 1).to_dtype(weight_dtype());
  std::vector<int32_t> ids = {0, 36, 5, 5, 17, 0, 29};
  Tensor out = device_zeros({static_cast<int64_t>(ids.size()), hidden});
  ops::embedding(on_device(table), on_device(Tensor::from_vector(ids)), out);

  std::vector<float> rows = table.to_float_vector();
  std::vector<double> want;
  for (int32_t id : ids) {
    for (int64_t c = 0; c < hidden; ++c) want.push_back(rows[id * hidden + c]);
  }
  // Widening bf16/f16 to f32 is exact.
  expect_near_all(host_floats(out), want, 0.0, 0.0, "embedding");
}

TEST_P(EmbeddingTest, RejectsAnIdOutsideTheVocabularyOnTheCpu) {
  if (backend() == Backend::kCuda) GTEST_SKIP() << "CUDA yields a zero row instead";
  Tensor table = random_tensor({4, 3}, 2).to_dtype(weight_dtype());
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{1, 4});
  Tensor out = Tensor::cpu({2, 3}, DType::kF32);
  EXPECT_DEATH(ops::embedding(table, ids, out), "token id 4 outside \\[0, 4\\)");
}

ES_INSTANTIATE_BACKENDS_AND_DTYPES(EmbeddingTest);

// The rows of an int8 linear weight (a catalogue step's lm_head rows), dequantised.
class EmbeddingInt8Test : public BackendParamTest {};

TEST_P(EmbeddingInt8Test, GathersInt8RowsTimesTheirScales) {
  if (backend() == Backend::kCuda) GTEST_SKIP() << "int8 weights are CPU-only";
  const int64_t vocab = 37, hidden = 19;
  ops::LinearWeight table = quantize_int8(random_tensor({vocab, hidden}, 3));
  std::vector<int32_t> ids = {0, 36, 5, 5, 17};
  Tensor out = Tensor::cpu({static_cast<int64_t>(ids.size()), hidden}, DType::kF32);
  ops::embedding(table, Tensor::from_vector(ids), out);
  std::vector<double> want;
  for (int32_t id : ids) {
    const float scale = table.scale.data<float>()[id];
    for (int64_t c = 0; c < hidden; ++c) {
      want.push_back(scale * static_cast<float>(table.weight.data<int8_t>()[id * hidden + c]));
    }
  }
  expect_near_all(out.to_float_vector(), want, 0.0, 0.0, "int8 rows");
}

ES_INSTANTIATE_BACKENDS(EmbeddingInt8Test);

}  // namespace
}  // namespace earnserve::testing
