#include <cstring>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"

namespace earnserve::cpu {

void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) {
  const int64_t num_rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const int64_t num_out = indices.dim(0);
  const int32_t* index = indices.data<int32_t>();
  for (int64_t i = 0; i < num_out; ++i) {
    ES_CHECK(0 <= index[i] && index[i] < num_rows)
        << "gather_rows: index " << index[i] << " outside [0, " << num_rows << ")";
  }
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  parallel_for(num_out, 32, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::memcpy(dst + i * cols, src + index[i] * cols, static_cast<size_t>(cols) * sizeof(float));
    }
  });
}

}  // namespace earnserve::cpu
