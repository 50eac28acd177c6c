#include <cmath>
#include <vector>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"

namespace earnserve::cpu {
namespace {

// Rotates each head of one token's [num_heads, head_dim] block by the precomputed angles.
void rotate_heads(float* x, int64_t num_heads, int64_t head_dim, const float* cos_v,
                  const float* sin_v) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < num_heads; ++h) {
    float* lo = x + h * head_dim;
    float* hi = lo + half;
    for (int64_t i = 0; i < half; ++i) {
      float a = lo[i];
      float b = hi[i];
      lo[i] = a * cos_v[i] - b * sin_v[i];
      hi[i] = b * cos_v[i] + a * sin_v[i];
    }
  }
}

}  // namespace

void rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq) {
  const int64_t num_tokens = q.dim(0);
  const int64_t num_heads = q.dim(1);
  const int64_t num_kv_heads = k.dim(1);
  const int64_t head_dim = q.dim(2);
  const int64_t half = head_dim / 2;
  const int32_t* pos = positions.data<int32_t>();
  const float* freq = inv_freq.data<float>();
  float* q_data = q.data<float>();
  float* k_data = k.data<float>();
  parallel_for(num_tokens, grain_for_work(4 * (num_heads + num_kv_heads) * head_dim),
               [&](int64_t begin, int64_t end) {
                 std::vector<float> cos_v(static_cast<size_t>(half));
                 std::vector<float> sin_v(static_cast<size_t>(half));
                 for (int64_t t = begin; t < end; ++t) {
                   for (int64_t i = 0; i < half; ++i) {
                     // The angle is rounded to f32 before cos/sin, as transformers computes it in
                     // float32.
                     float angle = static_cast<float>(pos[t]) * freq[i];
                     cos_v[i] = std::cos(angle);
                     sin_v[i] = std::sin(angle);
                   }
                   rotate_heads(q_data + t * num_heads * head_dim, num_heads, head_dim,
                                cos_v.data(), sin_v.data());
                   rotate_heads(k_data + t * num_kv_heads * head_dim, num_kv_heads, head_dim,
                                cos_v.data(), sin_v.data());
                 }
               });
}

}  // namespace earnserve::cpu
