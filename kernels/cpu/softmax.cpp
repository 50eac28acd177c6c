#include <algorithm>
#include <cmath>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

// Rows per task: enough columns per task that threading pays off.
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)); }

}  // namespace

void softmax(const Tensor& x, Tensor& out) {
  const int64_t rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  if (cols == 0) return;
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = src + r * cols;
      float* o = dst + r * cols;
      float m = max_value(in, cols);
      float sum = exp_shifted(in, m, o, cols);
      scale(o, 1.0f / sum, cols);
    }
  });
}

void log_softmax(const Tensor& x, Tensor& out) {
  const int64_t rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  if (cols == 0) return;
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = src + r * cols;
      float* o = dst + r * cols;
      float m = max_value(in, cols);
      // Sum only: out may alias x, which is still needed below. Subtracting m first keeps the
      // result exact to f32 rounding of small numbers even when the logits are large.
      float log_sum = std::log(exp_shifted(in, m, nullptr, cols));
      for (int64_t c = 0; c < cols; ++c) o[c] = (in[c] - m) - log_sum;
    }
  });
}

}  // namespace earnserve::cpu
