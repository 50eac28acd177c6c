#include <algorithm>
#include <cmath>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

// Calls row_fn(in, out, cols) for every row of x: [rows, cols] and out, in parallel, with
// enough columns per task that threading pays off.
template <typename RowFn>
void for_each_row(const Tensor& x, Tensor& out, RowFn&& row_fn) {
  const int64_t rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  if (cols == 0) return;
  const int64_t grain = std::max<int64_t>(1, 16384 / cols);
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) row_fn(src + r * cols, dst + r * cols, cols);
  });
}

}  // namespace

void softmax(const Tensor& x, Tensor& out) {
  for_each_row(x, out, [](const float* in, float* o, int64_t cols) {
    float m = max_value(in, cols);
    float sum = exp_shifted(in, m, o, cols);
    scale(o, 1.0f / sum, cols);
  });
}

void log_softmax(const Tensor& x, Tensor& out) {
  for_each_row(x, out, [](const float* in, float* o, int64_t cols) {
    float m = max_value(in, cols);
    // Sum only: out may alias x, which is still needed below. Subtracting m first keeps the
    // result exact to f32 rounding of small numbers even when the logits are large.
    float log_sum = std::log(exp_shifted(in, m, nullptr, cols));
    for (int64_t c = 0; c < cols; ++c) o[c] = (in[c] - m) - log_sum;
  });
}

}  // namespace earnserve::cpu
