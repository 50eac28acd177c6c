#include <cstring>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"

namespace earnserve::cpu {

void reshape_and_cache(const Tensor& key, const Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, const Tensor& slot_mapping) {
  const int64_t num_tokens = key.dim(0);
  const int64_t row = key.dim(1) * key.dim(2);  // num_kv_heads * head_dim
  const int64_t num_slots = key_cache.dim(0) * key_cache.dim(1);
  const int32_t* slots = slot_mapping.data<int32_t>();
  for (int64_t t = 0; t < num_tokens; ++t) {
    ES_CHECK(slots[t] < num_slots)
        << "reshape_and_cache: slot " << slots[t] << " beyond the cache's " << num_slots;
  }
  const float* k_src = key.data<float>();
  const float* v_src = value.data<float>();
  float* k_dst = key_cache.data<float>();
  float* v_dst = value_cache.data<float>();
  const size_t row_bytes = static_cast<size_t>(row) * sizeof(float);
  parallel_for(num_tokens, 64, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      if (slots[t] < 0) continue;
      std::memcpy(k_dst + slots[t] * row, k_src + t * row, row_bytes);
      std::memcpy(v_dst + slots[t] * row, v_src + t * row, row_bytes);
    }
  });
}

}  // namespace earnserve::cpu
