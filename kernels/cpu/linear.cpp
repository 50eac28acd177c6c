#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

// Up to this many tokens, 16-bit weights take the GEMV path: each weight row is widened once
// into L1 and dotted with every token, so the weights stream through memory exactly once.
constexpr int64_t kGemvMaxTokens = 8;
// Size of one widened weight tile on the GEMM path (floats): a few MiB, so it stays in L2/L3
// while sgemm runs over it.
constexpr int64_t kTileFloats = int64_t{1} << 20;

// Fills out's rows with the bias (beta = 1 for the GEMM that follows) or reports beta = 0.
float init_output(const Tensor& bias, float* y, int64_t num_tokens, int64_t out_features) {
  if (!bias.defined()) return 0.0f;
  widen_to_f32(bias.raw_data(), bias.dtype(), y, out_features);
  for (int64_t t = 1; t < num_tokens; ++t) {
    std::memcpy(y + t * out_features, y, static_cast<size_t>(out_features) * sizeof(float));
  }
  return 1.0f;
}

// y[t, n] = beta * y[t, n] + dot(x[t, :], widen(w[n, :])).
void gemv_16bit(const float* x, const Tensor& weight, float beta, float* y, int64_t num_tokens) {
  const int64_t out_features = weight.dim(0);
  const int64_t in_features = weight.dim(1);
  const uint16_t* w = weight.data_u16();
  parallel_for(out_features, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(in_features));
    for (int64_t n = begin; n < end; ++n) {
      widen_to_f32(w + n * in_features, weight.dtype(), row.data(), in_features);
      for (int64_t t = 0; t < num_tokens; ++t) {
        float acc = dot(row.data(), x + t * in_features, in_features);
        float* dst = y + t * out_features + n;
        *dst = beta == 0.0f ? acc : *dst + acc;
      }
    }
  });
}

// Widens tiles of weight rows into f32 (in parallel) and runs sgemm (OpenBLAS-threaded) on each.
void gemm_16bit(const float* x, const Tensor& weight, float beta, float* y, int64_t num_tokens) {
  const int64_t out_features = weight.dim(0);
  const int64_t in_features = weight.dim(1);
  const uint16_t* w = weight.data_u16();
  int64_t tile_rows = std::max<int64_t>(64, kTileFloats / std::max<int64_t>(1, in_features));
  tile_rows = std::min(tile_rows, out_features);
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(tile_rows * in_features));
  for (int64_t n0 = 0; n0 < out_features; n0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, out_features - n0);
    float* tile_data = tile.data();
    parallel_for(rows, 8, [&](int64_t begin, int64_t end) {
      widen_to_f32(w + (n0 + begin) * in_features, weight.dtype(), tile_data + begin * in_features,
                   (end - begin) * in_features);
    });
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(num_tokens),
                static_cast<int>(rows), static_cast<int>(in_features), 1.0f, x,
                static_cast<int>(in_features), tile_data, static_cast<int>(in_features), beta,
                y + n0, static_cast<int>(out_features));
  }
}

}  // namespace

void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out) {
  const int64_t num_tokens = x.dim(0);
  const int64_t in_features = x.dim(1);
  const int64_t out_features = weight.dim(0);
  if (num_tokens == 0 || out_features == 0) return;
  float* y = out.data<float>();
  const float beta = init_output(bias, y, num_tokens, out_features);
  if (in_features == 0) {
    if (beta == 0.0f) std::memset(y, 0, static_cast<size_t>(num_tokens * out_features) * 4);
    return;
  }
  const float* x_data = x.data<float>();
  if (weight.dtype() == DType::kF32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(num_tokens),
                static_cast<int>(out_features), static_cast<int>(in_features), 1.0f, x_data,
                static_cast<int>(in_features), weight.data<float>(),
                static_cast<int>(in_features), beta, y, static_cast<int>(out_features));
  } else if (num_tokens <= kGemvMaxTokens) {
    gemv_16bit(x_data, weight, beta, y, num_tokens);
  } else {
    gemm_16bit(x_data, weight, beta, y, num_tokens);
  }
}

}  // namespace earnserve::cpu
