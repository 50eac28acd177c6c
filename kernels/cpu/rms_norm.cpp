#include <cmath>
#include <vector>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

constexpr int64_t kRowGrain = 8;

std::vector<float> weight_as_f32(const Tensor& weight) {
  std::vector<float> w(static_cast<size_t>(weight.numel()));
  widen_to_f32(weight.raw_data(), weight.dtype(), w.data(), weight.numel());
  return w;
}

// out_row = x_row / sqrt(mean(x_row^2) + eps) * w; out_row may alias x_row.
inline void normalize_row(const float* x_row, const float* w, float eps, float* out_row,
                          int64_t hidden) {
  float mean_square = sum_squares(x_row, hidden) / static_cast<float>(hidden);
  float inv_rms = 1.0f / std::sqrt(mean_square + eps);
  scale_mul(x_row, inv_rms, w, out_row, hidden);
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t num_tokens = x.dim(0);
  const int64_t hidden = x.dim(1);
  std::vector<float> w = weight_as_f32(weight);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  parallel_for(num_tokens, std::max<int64_t>(kRowGrain, grain_for_work(4 * hidden)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t t = begin; t < end; ++t) {
                   normalize_row(src + t * hidden, w.data(), eps, dst + t * hidden, hidden);
                 }
               });
}

void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t num_tokens = x.dim(0);
  const int64_t hidden = x.dim(1);
  std::vector<float> w = weight_as_f32(weight);
  float* res = residual.data<float>();
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  parallel_for(num_tokens, std::max<int64_t>(kRowGrain, grain_for_work(4 * hidden)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t t = begin; t < end; ++t) {
                   float* res_row = res + t * hidden;
                   // The whole row of x is consumed before out (which may alias x) is written.
                   add(res_row, src + t * hidden, res_row, hidden);
                   normalize_row(res_row, w.data(), eps, dst + t * hidden, hidden);
                 }
               });
}

}  // namespace earnserve::cpu
