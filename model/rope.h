// RoPE inverse frequencies, computed exactly as transformers does (in fp32, in the same order of
// operations) so that positions rotate identically: the default rope and llama3 scaling.
// Pure functions; thread-safe.
#pragma once

#include <vector>

#include "model/config.h"

namespace earnserve {

// inv_freq[i] for i < head_dim / 2: 1 / theta^(2i / head_dim), then for llama3 scaling
// long wavelengths (> original_max / low_freq_factor) divided by `factor`, short ones
// (< original_max / high_freq_factor) kept, and those between interpolated smoothly.
std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);

}  // namespace earnserve
