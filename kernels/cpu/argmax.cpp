#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"

namespace earnserve::cpu {

void argmax(const Tensor& x, Tensor& out) {
  const int64_t rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const float* src = x.data<float>();
  int32_t* dst = out.data<int32_t>();
  parallel_for(rows, grain_for_work(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = src + r * cols;
      int64_t best = 0;
      // Strict '>' keeps the first index among equal maxima.
      for (int64_t c = 1; c < cols; ++c) {
        if (in[c] > in[best]) best = c;
      }
      dst[r] = static_cast<int32_t>(best);
    }
  });
}

}  // namespace earnserve::cpu
