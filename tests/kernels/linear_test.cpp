#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"
#include "core/threading.h"
#include "kernels/cpu/panel_gemm.h"
#include "kernels/ops.h"
#include "kernels/quantize.h"
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
    ops::LinearWeight lw{on_device(w), Tensor()};
    if (panels_) {
      ASSERT_TRUE(ops::can_pack_linear(lw)) << w.debug_string();
      ops::pack_linear(lw);
    }
    ops::linear(on_device(x), lw, c.bias ? on_device(b) : Tensor(), y);

    std::vector<float> xv = x.to_float_vector();
    std::vector<float> wv = w.to_float_vector();
    std::vector<float> bv = c.bias ? b.to_float_vector() : std::vector<float>(c.out, 0.0f);
    std::vector<float> got = host_floats(y);
    // Error bound relative to the sum of |terms|: the weights are rounded identically on both
    // sides, so the difference is f32 accumulation (and any activation splitting on CUDA). bf16
    // panels over many rows on an AVX512_BF16 CPU round the rows to bf16 too (2^-9 relative).
    if (round_rows_) {
      for (float& v : xv) v = bf16_to_float(float_to_bf16(v));
    }
    const bool rounded_rows = panels_ && weight_dtype() == DType::kBF16 &&
                              cpu::bf16_dot_products(c.tokens) && !round_rows_;
    const double tol = rounded_rows ? 5e-3 : tolerance_for(weight_dtype());
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

  bool panels_ = false;      // the weight packed into panels first (kernels/cpu/panel_gemm.h)
  bool round_rows_ = false;  // the reference rounds x to bf16 first
};

// The CPU's GEMV covers up to 24 tokens (f32) or 32 (16-bit weights) in blocks of four rows
// against three tokens; these sizes cross both, with odd row and token remainders.
TEST_P(LinearTest, MatchesReferenceForDecodeSizedBatches) {
  check({1, 37, 29, true}, 20);
  check({3, 64, 50, false}, 23);
  check({8, 19, 33, true}, 26);
  check({10, 45, 38, false}, 27);  // a beam-10 step: tokens 3 + 3 + 3 + 1
  check({24, 33, 17, true}, 28);
  check({25, 33, 17, false}, 29);
  check({32, 9, 22, true}, 31);
}

TEST_P(LinearTest, MatchesReferenceForPrefillSizedBatches) {
  check({33, 37, 71, true}, 30);
  check({40, 130, 301, false}, 33);
}

TEST_P(LinearTest, MatchesReferenceWhenWeightsSpanSeveralTiles) {
  // Enough tokens for the tiled GEMM; output features split over several tiles (one per worker,
  // and for 16-bit weights at most 4M widened floats each: 1,023 rows of 4,099), the last short.
  check({40, 3001, 131, true}, 36);
  check({33, 77, 1000, false}, 39);
  check({33, 4099, 1100, true}, 40);
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

// Weights in panels (CPU f32 and bf16): the panel GEMM at every row count. Rows cross the
// kernels' row chunks (AVX-512 12, AVX2 2 whole or 6 per half, portable 4), features cross the
// 32-wide panels (a short last panel, a matrix narrower than one panel), inputs cross the blocks
// of k (cpu::kPanelKBlock).
class LinearPanelsTest : public LinearTest {
 protected:
  void SetUp() override {
    LinearTest::SetUp();
    if (backend() == Backend::kCuda) GTEST_SKIP() << "panels are a CPU layout";
    if (weight_dtype() == DType::kF16) GTEST_SKIP() << "f16 weights stay row-major";
    panels_ = true;
  }
};

TEST_P(LinearPanelsTest, MatchesReferenceAtEveryRowCount) {
  uint32_t seed = 100;
  for (int64_t tokens : {1, 2, 3, 6, 7, 12, 13, 25, 50, 77}) {
    check({tokens, 37, 29, true}, seed++);   // one short panel
    check({tokens, 64, 96, false}, seed++);  // three whole panels
    check({tokens, 19, 33, true}, seed++);   // a whole panel and a one-feature panel
  }
}

TEST_P(LinearPanelsTest, MatchesReferenceAcrossBlocksOfInputs) {
  constexpr int64_t kBlock = cpu::kPanelKBlock;
  check({1, kBlock + 1, 40, true}, 140);
  check({10, 2 * kBlock + 76, 64, false}, 141);
  check({33, 3 * kBlock + 1, 70, true}, 142);
  check({2, kBlock, 33, false}, 143);
}

// bf16 x bf16 products (64 rows and more on an AVX512_BF16 CPU): exactly the product of the rows
// rounded to bf16, up to f32 summation order.
TEST_P(LinearPanelsTest, Bf16DotProductsMultiplyRowsRoundedToBf16) {
  if (weight_dtype() != DType::kBF16 || !cpu::bf16_dot_products(64)) {
    GTEST_SKIP() << "no bf16 x bf16 products on this path";
  }
  round_rows_ = true;
  check({64, 37, 29, true}, 170);
  check({64, 64, 96, false}, 171);
  check({100, 1100, 70, true}, 172);                    // an even k
  check({77, cpu::kPanelKBlock + 13, 64, false}, 173);  // an odd block of k: its last row widened
}

// A row's result does not depend on the rows batched with it: row t alone equals row t of a
// batch, bit for bit in f32 (same k order in every chunking), to rounding in bf16.
TEST_P(LinearPanelsTest, RowResultsDoNotDependOnTheBatch) {
  const int64_t in = cpu::kPanelKBlock + 88, out = 70, tokens = 29;
  Tensor x = random_tensor({tokens, in}, 150);
  ops::LinearWeight lw{random_tensor({out, in}, 151).to_dtype(weight_dtype()), Tensor()};
  ops::pack_linear(lw);
  Tensor all = device_zeros({tokens, out});
  ops::linear(x, lw, Tensor(), all);
  const std::vector<float> batch = host_floats(all);
  for (int64_t t : {int64_t{0}, int64_t{11}, tokens - 1}) {
    Tensor one = device_zeros({1, out});
    ops::linear(x.slice_rows(t, t + 1), lw, Tensor(), one);
    const std::vector<float> alone = host_floats(one);
    for (int64_t n = 0; n < out; ++n) {
      if (weight_dtype() == DType::kF32) {
        ASSERT_EQ(alone[n], batch[t * out + n]) << "row " << t << " feature " << n;
      } else {  // bf16: a one-row product sums even and odd inputs apart (panel_gemm.h)
        ASSERT_NEAR(alone[n], batch[t * out + n], 1e-4 * std::max(1.0f, std::fabs(alone[n])))
            << "row " << t << " feature " << n;
      }
    }
  }
}

TEST_P(LinearPanelsTest, PackingKeepsShapeDtypeAndElements) {
  ops::LinearWeight lw{random_tensor({45, 21}, 160).to_dtype(weight_dtype()), Tensor()};
  const Tensor original = lw.weight.to_dtype(weight_dtype());
  ops::pack_linear(lw);
  EXPECT_TRUE(lw.panels);
  EXPECT_FALSE(ops::can_pack_linear(lw));  // once
  EXPECT_EQ(lw.weight.shape(), original.shape());
  EXPECT_EQ(lw.weight.dtype(), original.dtype());
  Tensor back = Tensor::cpu(original.shape(), original.dtype());
  cpu::unpack_panels(lw.weight.raw_data(), lw.weight.dtype(), 45, 21, back.raw_data());
  EXPECT_EQ(back.to_float_vector(), original.to_float_vector());
  EXPECT_NE(lw.weight.to_float_vector(), original.to_float_vector());  // really reordered
}

ES_INSTANTIATE_BACKENDS_AND_DTYPES(LinearPanelsTest);

TEST(LinearPanels, OnlyCpuFloatMatricesPack) {
  EXPECT_TRUE(ops::can_pack_linear({random_tensor({4, 4}, 1), Tensor()}));
  EXPECT_TRUE(ops::can_pack_linear({random_tensor({4, 4}, 1).to_dtype(DType::kBF16), Tensor()}));
  EXPECT_FALSE(ops::can_pack_linear({random_tensor({4, 4}, 1).to_dtype(DType::kF16), Tensor()}));
  EXPECT_EQ(ops::can_pack_linear(quantize_int8(random_tensor({4, 4}, 1))),
            cpu::best_cpu_isa() == cpu::CpuIsa::kAvx512);
  EXPECT_FALSE(ops::can_pack_linear(quantize_int8(random_tensor({4, 5}, 1))));  // odd k
  EXPECT_FALSE(ops::can_pack_linear(quantize_int8(random_tensor({4, 6}, 1))));  // not 4 k
  EXPECT_FALSE(ops::can_pack_linear({}));
}

TEST(LinearPanels, EmbeddingReadsRowsOfAPackedTable) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Tensor table = random_tensor({70, 9}, 2).to_dtype(dtype);
    ops::LinearWeight lw{table.to_dtype(dtype), Tensor()};
    ops::pack_linear(lw);
    Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 31, 32, 69, 64, 5});
    Tensor want = Tensor::cpu({6, 9}, DType::kF32), got = Tensor::cpu({6, 9}, DType::kF32);
    ops::embedding(table, ids, want);
    ops::embedding(lw, ids, got);
    EXPECT_EQ(got.to_float_vector(), want.to_float_vector()) << dtype_name(dtype);
  }
}

// int8 weights (CPU only), per-row scales, with dynamic int8 activations: against a
// double-precision product of the dequantised weights and the dequantised tokens (each block of
// 32 elements quantised as documented: s = max|x| / 127, q = x * (127 / max|x|) rounded to
// nearest even; only f32 accumulation differs), and against the f32 weights and tokens they came
// from, where each term errs by at most |w^| |x^ - x| + |x| s_w / 2.
class LinearInt8Test : public BackendParamTest {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kCuda) GTEST_SKIP() << "int8 weights are CPU-only";
    BackendParamTest::SetUp();
  }

  void check(const LinearCase& c, uint32_t seed) {
    const std::string what = "int8 linear " + std::to_string(c.tokens) + "x" +
                             std::to_string(c.in) + "x" + std::to_string(c.out);
    Tensor x = random_tensor({c.tokens, c.in}, seed);
    std::vector<float> wv = random_floats(c.out * c.in, seed + 1);
    // Rows of very different magnitudes: each needs its own scale.
    for (int64_t n = 0; n < c.out; ++n) {
      for (int64_t k = 0; k < c.in; ++k) wv[n * c.in + k] *= std::pow(10.0f, float(n % 5) - 2);
    }
    ops::LinearWeight w = quantize_int8(Tensor::from_vector(wv, {c.out, c.in}));
    const Tensor row_major = w.weight;
    if (panels_) {
      ASSERT_TRUE(ops::can_pack_linear(w));
      ops::pack_linear(w);
    }
    Tensor b = c.bias ? random_tensor({c.out}, seed + 2) : Tensor();
    Tensor y = Tensor::cpu({c.tokens, c.out}, DType::kF32);
    ops::linear(x, w, b, y);

    const std::vector<float> xv = x.to_float_vector();
    std::vector<double> xq(xv.size());  // the dequantised tokens
    for (int64_t t = 0; t < c.tokens; ++t) {
      for (int64_t k0 = 0; k0 < c.in; k0 += 32) {
        const int64_t k1 = std::min<int64_t>(c.in, k0 + 32);
        float amax = 0.0f;
        for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(xv[t * c.in + k]));
        const float inv = 127.0f / amax, s = amax / 127.0f;
        for (int64_t k = k0; k < k1; ++k) {
          xq[t * c.in + k] = double(std::nearbyint(xv[t * c.in + k] * inv)) * s;
        }
      }
    }
    const std::vector<float> qv = row_major.to_float_vector();
    const float* scale = w.scale.data<float>();
    const float* got = y.data<float>();
    int failures = 0;
    for (int64_t t = 0; t < c.tokens && failures < 5; ++t) {
      for (int64_t n = 0; n < c.out && failures < 5; ++n) {
        double bias = c.bias ? b.data<float>()[n] : 0.0;
        double acc_q = bias, acc_f = bias, mag = std::fabs(bias), bound = 0;
        for (int64_t k = 0; k < c.in; ++k) {
          const double xk = xv[t * c.in + k];
          const double wk = double(qv[n * c.in + k]) * scale[n];
          const double term = xq[t * c.in + k] * wk;
          acc_q += term;
          acc_f += xk * wv[n * c.in + k];
          mag += std::fabs(term);
          bound +=
              std::fabs(wk) * std::fabs(xq[t * c.in + k] - xk) + std::fabs(xk) * 0.5 * scale[n];
        }
        const double y_tn = got[t * c.out + n];
        const double tight = tolerance_for(DType::kF32) * mag + 1e-7;
        const double quantisation = bound * (1 + 1e-6) + tight;
        if (!(std::fabs(y_tn - acc_q) <= tight) || !(std::fabs(y_tn - acc_f) <= quantisation)) {
          ADD_FAILURE() << what << ": [" << t << ", " << n << "] is " << y_tn << ", expected "
                        << acc_q << " (dequantised) and " << acc_f << " within " << quantisation
                        << " (f32)";
          ++failures;
        }
      }
    }
  }

  bool panels_ = false;  // int8 panels (kernels/cpu/panel_gemm.h panel_gemm_i8)
};

TEST_P(LinearInt8Test, MatchesDequantisedReferenceForDecodeSizedBatches) {
  check({1, 37, 29, true}, 50);
  check({3, 64, 50, false}, 53);
  check({16, 19, 33, true}, 56);
  check({10, 45, 38, false}, 57);
  check({32, 21, 13, true}, 58);
}

// Shapes whose rows parallel_for splits over two workers: every worker multiplies the tokens the
// caller quantised (a worker once read its own, empty, thread-local copy instead).
TEST_P(LinearInt8Test, MatchesDequantisedReferenceWithRowsSplitOverThreads) {
  const int saved = num_threads();
  set_num_threads(2);
  check({1, 1024, 300, true}, 90);
  check({3, 896, 200, false}, 91);
  check({10, 1000, 130, true}, 92);
  set_num_threads(saved);
}

TEST_P(LinearInt8Test, MatchesDequantisedReferenceWhenTiled) {
  check({33, 37, 71, true}, 60);
  check({40, 130, 301, false}, 63);
  check({40, 3001, 131, true}, 66);
  check({33, 4099, 1100, false}, 67);  // two dequantised tiles of at most 4M floats
}

// One token's dot products through the GEMV and the same token inside a tiled product agree.
TEST_P(LinearInt8Test, GemvAndTiledPathsAgreeOnTheSameToken) {
  const int64_t in = 300, out = 70, tokens = 40;
  Tensor x = random_tensor({tokens, in}, 80);
  ops::LinearWeight w = quantize_int8(random_tensor({out, in}, 81));
  Tensor all = Tensor::cpu({tokens, out}, DType::kF32);
  ops::linear(x, w, Tensor(), all);  // tiled
  for (int64_t t : {0, 17, 39}) {
    Tensor one = Tensor::cpu({1, out}, DType::kF32);
    ops::linear(x.slice_rows(t, t + 1), w, Tensor(), one);  // GEMV
    for (int64_t n = 0; n < out; ++n) {
      EXPECT_NEAR(one.data<float>()[n], all.data<float>()[t * out + n], 1e-4) << t << "," << n;
    }
  }
}

TEST_P(LinearInt8Test, DiesWithoutScales) {
  Tensor x = random_tensor({2, 8}, 70);
  ops::LinearWeight w = quantize_int8(random_tensor({3, 8}, 71));
  Tensor y = Tensor::cpu({2, 3}, DType::kF32);
  EXPECT_DEATH(ops::linear(x, w.weight, Tensor(), y), "linear: scale is undefined");
  w.scale = random_tensor({2}, 72);
  EXPECT_DEATH(ops::linear(x, w, Tensor(), y), "linear: scale .* vs weight");
}

ES_INSTANTIATE_BACKENDS(LinearInt8Test);

// int8 weights in panels (packed on machines whose best path is avx512): the same products as
// the row-major GEMV, at every row count (AVX-512 chunks of 6 rows, portable 4), across 32-input
// activation blocks and blocks of panel inputs (cpu::kPanelKBlock), with a short last panel.
class LinearInt8PanelsTest : public LinearInt8Test {
 protected:
  void SetUp() override {
    LinearInt8Test::SetUp();
    if (IsSkipped()) return;
    if (cpu::best_cpu_isa() != cpu::CpuIsa::kAvx512) {
      GTEST_SKIP() << "int8 panels are packed on AVX-512 machines only";
    }
    panels_ = true;
  }
};

TEST_P(LinearInt8PanelsTest, MatchesDequantisedReferenceAtEveryRowCount) {
  uint32_t seed = 300;
  for (int64_t tokens : {1, 2, 5, 6, 7, 12, 13, 40}) {
    check({tokens, 64, 29, true}, seed++);
    check({tokens, 36, 96, false}, seed++);
  }
  check({3, 1100, 33, true}, seed++);
  check({17, cpu::kPanelKBlock + 64, 64, false}, seed++);
  check({7, 2 * cpu::kPanelKBlock + 32, 40, true}, seed++);
}

TEST_P(LinearInt8PanelsTest, PackedRowsReadBackForACatalogueStep) {
  ops::LinearWeight w = quantize_int8(random_tensor({70, 40}, 320));
  const Tensor row_major = w.weight;
  ops::pack_linear(w);
  std::vector<int8_t> row(40);
  for (int64_t r : {0, 31, 32, 69}) {
    cpu::panel_row_i8(w.weight.data<int8_t>(), 70, 40, r, row.data());
    for (int64_t k = 0; k < 40; ++k) ASSERT_EQ(row[k], row_major.data<int8_t>()[r * 40 + k]);
  }
  // And as dequantised rows (an embedding lookup in the table).
  Tensor ids = Tensor::from_vector(std::vector<int32_t>{69, 0, 33});
  Tensor got = Tensor::cpu({3, 40}, DType::kF32);
  ops::embedding(w, ids, got);
  for (int64_t i = 0; i < 3; ++i) {
    const int32_t r = ids.data<int32_t>()[i];
    for (int64_t k = 0; k < 40; ++k) {
      ASSERT_EQ(
          got.data<float>()[i * 40 + k],
          w.scale.data<float>()[r] * static_cast<float>(row_major.data<int8_t>()[r * 40 + k]));
    }
  }
  // And as int8 rows with their scales for a product: the same logits as the whole matrix gives
  // in those columns.
  ops::LinearWeight rows{Tensor::cpu({3, 40}, DType::kI8), Tensor::cpu({3}, DType::kF32)};
  ops::gather_linear_rows(w, ids, rows);
  Tensor x = random_tensor({5, 40}, 321);
  Tensor some = Tensor::cpu({5, 3}, DType::kF32);
  Tensor all = Tensor::cpu({5, 70}, DType::kF32);
  ops::linear(x, rows, Tensor(), some);
  ops::linear(x, w, Tensor(), all);
  for (int64_t m = 0; m < 5; ++m) {
    for (int64_t i = 0; i < 3; ++i) {
      const int32_t r = ids.data<int32_t>()[i];
      EXPECT_EQ(rows.scale.data<float>()[i], w.scale.data<float>()[r]);
      EXPECT_NEAR(some.data<float>()[m * 3 + i], all.data<float>()[m * 70 + r], 1e-5f);
    }
  }
}

ES_INSTANTIATE_BACKENDS(LinearInt8PanelsTest);

}  // namespace
}  // namespace earnserve::testing
