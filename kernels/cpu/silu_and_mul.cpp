#include <algorithm>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {

void silu_and_mul(const Tensor& gate_up, Tensor& out) {
  const int64_t num_tokens = out.dim(0);
  const int64_t inter = out.dim(1);
  const float* src = gate_up.data<float>();
  float* dst = out.data<float>();
  // Parallel over tokens, and over column chunks when a few tokens (decode) carry the work.
  const int64_t col_chunk = 1024;
  const int64_t chunks_per_row = (inter + col_chunk - 1) / col_chunk;
  parallel_for(num_tokens * chunks_per_row, grain_for_work(8 * std::min(inter, col_chunk)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t i = begin; i < end; ++i) {
                   int64_t t = i / chunks_per_row;
                   int64_t c0 = (i % chunks_per_row) * col_chunk;
                   int64_t n = std::min(col_chunk, inter - c0);
                   const float* gate = src + t * 2 * inter + c0;
                   silu_mul(gate, gate + inter, dst + t * inter + c0, n);
                 }
               });
}

}  // namespace earnserve::cpu
