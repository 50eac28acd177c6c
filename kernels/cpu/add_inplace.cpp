#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {

void add_inplace(Tensor& y, const Tensor& x) {
  float* dst = y.data<float>();
  const float* src = x.data<float>();
  parallel_for(y.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
    add(dst + begin, src + begin, dst + begin, end - begin);
  });
}

}  // namespace earnserve::cpu
