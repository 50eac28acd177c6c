// linear on the CPU. Three regimes:
//  - few tokens (decode, beam steps): GEMV. Blocks of four weight rows meet the tokens three at a
//    time in registers (vec_math's dot_rows; 16-bit and int8 weights widened in registers), so
//    the weights stream through memory once and the FMA units, not the loads, set the pace;
//    OpenBLAS's sgemm is several times slower at such small M.
//  - more tokens: the output features are split into tiles that the worker threads pull; each
//    worker runs a single-threaded sgemm on its tile (16-bit weights widened first into the
//    worker's own scratch, which sgemm then reads from cache). All threading stays in our
//    OpenMP pool: OpenBLAS's pthreads never compete with it for the cores.
// int8 weights with dynamic int8 activations: each token's row of x is quantised at every call
// in blocks of 32 elements, each with its own scale max|x| / 127 (vec_math's
// quantize_activations_i8, the activation scheme of llama.cpp's Q8_0). The GEMV multiplies the
// int8 rows with the int8 blocks in int32 (dot_rows_i8), adds the blocks times their scales in
// f32 and applies the row's scale once per dot product; the tiled path runs sgemm on the same
// quantised tokens as floats (q * block scale) against a tile dequantised (int8 * scale) into the
// scratch the 16-bit weights are widened into. Both compute
// s_w * sum_b s_x[b] * sum_{i in b} q_w[i] q_x[i]; only the order of the f32 additions differs.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "core/logging.h"
#include "core/threading.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/blas_threads.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/panel_gemm.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

// Up to this many tokens the GEMV beats the tiled sgemm: measured as whole-model steps of 16-64
// rows on the Qwen2.5-0.5B shape, one thread (AMD EPYC, AVX2; bench/model_bench --step-rows):
// f32 0.32 / 0.41 / 0.63 s against 0.41 / 0.47 / 0.62 s at 16 / 20 / 32 rows.
constexpr int64_t kGemvMaxTokensF32 = 24;
// bf16, f16 and int8 weights: the tiled path widens or dequantises each tile first, so the GEMV
// stays ahead for longer (bf16 0.61 s against 0.69 s at 32 rows; int8 even). Also the largest
// token count gemv() handles.
constexpr int64_t kGemvMaxTokensNarrow = 32;
static_assert(kGemvMaxTokensF32 <= kGemvMaxTokensNarrow);
// Output rows per GEMV block (see gemv_blocks).
constexpr int64_t kGemvMaxBlockRows = 64;
// Widened 16-bit or dequantised int8 tile per worker (floats): 16 MiB. Each tile's sgemm packs
// the whole activation matrix again, so small tiles pay for that packing many times over: at the
// Llama-3.2-1B shape a 1 MiB tile is 32 rows of down_proj (8,192 wide), and 512-token bf16
// prefill ran at 77% of f32 sgemm's rate. At the Qwen2.5-0.5B shape 1 / 4 / 16 MiB tiles gave
// 83% / 88% / 95%: the extra packing costs more than a tile that no longer fits in L2.
constexpr int64_t kWidenTileFloats = int64_t{1} << 22;

// Fills out's rows with the bias and returns beta = 1 for the products that follow, or returns
// beta = 0 when there is no bias.
float init_output(const Tensor& bias, float* y, int64_t num_tokens, int64_t out_features) {
  if (!bias.defined()) return 0.0f;
  widen_to_f32(bias.raw_data(), bias.dtype(), y, out_features);
  for (int64_t t = 1; t < num_tokens; ++t) {
    std::memcpy(y + t * out_features, y, static_cast<size_t>(out_features) * sizeof(float));
  }
  return 1.0f;
}

// Rows [n0, n0 + rows) of `weight` as f32 in `scratch` (resized to hold them), or in place for
// f32 weights.
const float* rows_as_f32(const ops::LinearWeight& weight, int64_t n0, int64_t rows,
                         std::vector<float>& scratch) {
  const Tensor& w = weight.weight;
  const int64_t in_features = w.dim(1);
  const void* src = static_cast<const char*>(w.raw_data()) +
                    static_cast<size_t>(n0 * in_features) * dtype_size(w.dtype());
  if (w.dtype() == DType::kF32) return static_cast<const float*>(src);
  scratch.resize(static_cast<size_t>(std::max<int64_t>(rows * in_features, scratch.size())));
  if (w.dtype() != DType::kI8) {
    widen_to_f32(src, w.dtype(), scratch.data(), rows * in_features);
    return scratch.data();
  }
  const float* scale = weight.scale.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_i8(static_cast<const int8_t*>(src) + r * in_features, scale[n0 + r],
                  scratch.data() + r * in_features, in_features);
  }
  return scratch.data();
}

// The GEMV's traversal: y[t, n] = beta * y[t, n] + scale[n] * dot[t, n] (scale: int8 rows'
// scales, null for 1). Output rows go in blocks (64 rows for one or two tokens, so that the
// kernels' prefetch of the rows ahead covers most of a block; 16 for more tokens, measured faster
// for beam steps of 10 rows) split over the workers; dot_block(n0, rows, acc) writes block rows
// [n0, n0 + rows) against every token into acc[r * num_tokens + t], which is then scattered into
// y's token-major rows.
template <typename DotBlock>
void gemv_blocks(int64_t out_features, int64_t in_features, int64_t num_tokens, const float* scale,
                 float beta, float* y, const DotBlock& dot_block) {
  const int64_t block_rows = num_tokens <= 2 ? kGemvMaxBlockRows : 16;
  const int64_t num_blocks = (out_features + block_rows - 1) / block_rows;
  parallel_for(num_blocks, grain_for_work(2 * block_rows * in_features * num_tokens),
               [&](int64_t begin, int64_t end) {
                 float acc[kGemvMaxBlockRows * kGemvMaxTokensNarrow];
                 for (int64_t b = begin; b < end; ++b) {
                   const int64_t n0 = b * block_rows;
                   const int64_t rows = std::min(block_rows, out_features - n0);
                   dot_block(n0, rows, acc);
                   for (int64_t r = 0; r < rows; ++r) {
                     const float s = scale == nullptr ? 1.0f : scale[n0 + r];
                     for (int64_t t = 0; t < num_tokens; ++t) {
                       float* dst = y + t * out_features + n0 + r;
                       const float v = acc[r * num_tokens + t] * s;  // exact when s = 1
                       *dst = beta == 0.0f ? v : *dst + v;
                     }
                   }
                 }
               });
}

// The int8 GEMV: y[t, n] = beta * y[t, n] + s_w[n] * sum_b s_x[t, b] sum_{i in b} q_w[n, i]
// q_x[t, i], the tokens quantised once per call on the calling thread (n values per token,
// against n * out_features products) and read by every worker.
void gemv_i8(const float* x, const ops::LinearWeight& weight, float beta, float* y,
             int64_t num_tokens) {
  const Tensor& w = weight.weight;
  const int64_t out_features = w.dim(0);
  const int64_t in_features = w.dim(1);
  // (Workers reach the caller's vectors through this reference: inside a lambda the name of a
  // thread_local means each worker's own instance.)
  thread_local I8Vectors quantized;
  quantized.quantize(x, in_features, num_tokens, in_features);
  const I8Vectors& qx = quantized;
  const auto* wq = static_cast<const int8_t*>(w.raw_data());
  gemv_blocks(out_features, in_features, num_tokens, weight.scale.data<float>(), beta, y,
              [&](int64_t n0, int64_t rows, float* acc) {
                dot_rows_i8(wq + n0 * in_features, in_features, rows, qx, acc);
              });
}

void gemv(const float* x, const ops::LinearWeight& weight, float beta, float* y,
          int64_t num_tokens) {
  const Tensor& w = weight.weight;
  const int64_t out_features = w.dim(0);
  const int64_t in_features = w.dim(1);
  const DType dtype = w.dtype();
  const size_t row_bytes = static_cast<size_t>(in_features) * dtype_size(dtype);
  ES_CHECK(dtype != DType::kI8) << "int8 weights go through gemv_i8";
  const auto* wb = static_cast<const char*>(w.raw_data());
  gemv_blocks(out_features, in_features, num_tokens, nullptr, beta, y,
              [&](int64_t n0, int64_t rows, float* acc) {
                dot_rows(wb + static_cast<size_t>(n0) * row_bytes, dtype, in_features, rows, x,
                         in_features, num_tokens, in_features, acc);
              });
}

// y = beta * y + x @ w^T, tile by tile of output features, one single-threaded sgemm per tile.
void tiled_gemm(const float* x, const ops::LinearWeight& weight, float beta, float* y,
                int64_t num_tokens) {
  const int64_t out_features = weight.weight.dim(0);
  const int64_t in_features = weight.weight.dim(1);
  const bool is_f32 = weight.weight.dtype() == DType::kF32;
  // Small products run on one worker: waking the others costs more than they save.
  const int64_t workers =
      2 * num_tokens * in_features * out_features < 8 * kMinParallelWork ? 1 : num_threads();
  // f32 tiles need no scratch: one per worker, as each tile packs x again (one thread: a single
  // sgemm over the whole matrix). 16-bit and int8 tiles are bounded by the scratch above.
  int64_t tile_rows = (out_features + workers - 1) / workers;
  if (!is_f32) {
    tile_rows = std::min(
        tile_rows, std::max<int64_t>(16, kWidenTileFloats / std::max<int64_t>(1, in_features)));
  }
  tile_rows = std::max<int64_t>(1, tile_rows);
  const int64_t num_tiles = (out_features + tile_rows - 1) / tile_rows;

  // int8: the tokens quantised as the GEMV quantises them, multiplied as floats; tokens split
  // over the workers (a 512-token prefill quantises 512 x in_features values per product).
  if (weight.weight.dtype() == DType::kI8) {
    thread_local std::vector<float> xq;
    xq.resize(static_cast<size_t>(num_tokens * in_features));
    float* xq_data = xq.data();
    parallel_for(num_tokens, grain_for_work(8 * in_features), [&](int64_t begin, int64_t end) {
      thread_local std::vector<int16_t> q;
      thread_local std::vector<float> s;
      q.resize(static_cast<size_t>(in_features));
      s.resize(static_cast<size_t>((in_features + kI8Block - 1) / kI8Block));
      for (int64_t t = begin; t < end; ++t) {
        quantize_activations_i8(x + t * in_features, in_features, q.data(), s.data());
        float* dst = xq_data + t * in_features;
        for (int64_t i = 0; i < in_features; ++i) {
          dst[i] = static_cast<float>(q[i]) * s[static_cast<size_t>(i / kI8Block)];
        }
      }
    });
    x = xq_data;
  }

  ScopedSingleThreadBlas single_thread_blas;
  std::atomic<int64_t> next{0};
  parallel_for(std::min(workers, num_tiles), 1, [&](int64_t, int64_t) {
    thread_local std::vector<float> scratch;
    for (int64_t i = next.fetch_add(1); i < num_tiles; i = next.fetch_add(1)) {
      const int64_t n0 = i * tile_rows;
      const int64_t rows = std::min(tile_rows, out_features - n0);
      const float* tile = rows_as_f32(weight, n0, rows, scratch);
      sgemm(true, static_cast<int>(num_tokens), static_cast<int>(rows),
            static_cast<int>(in_features), 1.0f, x, static_cast<int>(in_features), tile,
            static_cast<int>(in_features), beta, y + n0, static_cast<int>(out_features));
    }
  });
}

}  // namespace

void linear(const Tensor& x, const ops::LinearWeight& weight, const Tensor& bias, Tensor& out) {
  const int64_t num_tokens = x.dim(0);
  const int64_t in_features = x.dim(1);
  const int64_t out_features = weight.weight.dim(0);
  if (num_tokens == 0 || out_features == 0) return;
  float* y = out.data<float>();
  const float beta = init_output(bias, y, num_tokens, out_features);
  if (in_features == 0) {
    if (beta == 0.0f) std::memset(y, 0, static_cast<size_t>(num_tokens * out_features) * 4);
    return;
  }
  if (weight.panels && weight.weight.dtype() == DType::kI8) {
    panel_gemm_i8(x.data<float>(), num_tokens, in_features, weight.weight.data<int8_t>(),
                  weight.scale.data<float>(), out_features, beta, y);
    return;
  }
  if (weight.panels) {
    panel_gemm(x.data<float>(), num_tokens, in_features, weight.weight.raw_data(),
               weight.weight.dtype(), out_features, beta, y);
    return;
  }
  const int64_t gemv_max =
      weight.weight.dtype() == DType::kF32 ? kGemvMaxTokensF32 : kGemvMaxTokensNarrow;
  const bool is_i8 = weight.weight.dtype() == DType::kI8;
  if (num_tokens <= gemv_max && is_i8) {
    gemv_i8(x.data<float>(), weight, beta, y, num_tokens);
  } else if (num_tokens <= gemv_max && !is_i8) {
    gemv(x.data<float>(), weight, beta, y, num_tokens);
  } else {
    tiled_gemm(x.data<float>(), weight, beta, y, num_tokens);
  }
}

}  // namespace earnserve::cpu
