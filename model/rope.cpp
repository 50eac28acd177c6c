#include "model/rope.h"

#include <cmath>
#include <numbers>

namespace earnserve {

std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  // transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all in fp32.
  const float base = static_cast<float>(rope.theta);
  for (int64_t i = 0; i < half; ++i) {
    float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[static_cast<size_t>(i)] = 1.0f / std::pow(base, exponent);
  }
  if (rope.type == RopeType::kDefault) return inv_freq;

  // llama3: tensor-with-scalar arithmetic in fp32, comparisons against the python-double wavelen
  // bounds, as transformers' _compute_llama3_parameters.
  const float factor = static_cast<float>(rope.factor);
  const float low_freq_factor = static_cast<float>(rope.low_freq_factor);
  const float freq_factor_span = static_cast<float>(rope.high_freq_factor - rope.low_freq_factor);
  const double old_context_len = static_cast<double>(rope.original_max_position_embeddings);
  const double low_freq_wavelen = old_context_len / rope.low_freq_factor;
  const double high_freq_wavelen = old_context_len / rope.high_freq_factor;
  const float two_pi = static_cast<float>(2.0 * std::numbers::pi);
  for (float& f : inv_freq) {
    const float wavelen = two_pi / f;
    float scaled = wavelen > low_freq_wavelen ? f / factor : f;
    const bool is_medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (is_medium) {
      const float smooth =
          (static_cast<float>(old_context_len) / wavelen - low_freq_factor) / freq_factor_span;
      scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
    }
    f = scaled;
  }
  return inv_freq;
}

}  // namespace earnserve
