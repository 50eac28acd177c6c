#include "scheduler/sampling_params.h"

#include <cmath>

namespace earnserve {

Status SamplingParams::validate() const {
  if (n < 1 || n > kMaxN)
    return invalid_argument("n must be in [1, 512], got " + std::to_string(n));
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return invalid_argument("temperature must be >= 0");
  }
  if (!(top_p > 0.0f && top_p <= 1.0f)) return invalid_argument("top_p must be in (0, 1]");
  if (top_k < -1) return invalid_argument("top_k must be -1, 0 or positive");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) return invalid_argument("min_p must be in [0, 1]");
  if (max_tokens < 1) return invalid_argument("max_tokens must be at least 1");
  if (min_tokens < 0 || min_tokens > max_tokens) {
    return invalid_argument("min_tokens must be in [0, max_tokens]");
  }
  if (logprobs < -1 || logprobs > 20) return invalid_argument("logprobs must be in [0, 20]");
  if (!std::isfinite(presence_penalty) || presence_penalty < -2.0f || presence_penalty > 2.0f) {
    return invalid_argument("presence_penalty must be in [-2, 2]");
  }
  if (!std::isfinite(frequency_penalty) || frequency_penalty < -2.0f || frequency_penalty > 2.0f) {
    return invalid_argument("frequency_penalty must be in [-2, 2]");
  }
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f) {
    return invalid_argument("repetition_penalty must be > 0");
  }
  for (const std::string& s : stop) {
    if (s.empty()) return invalid_argument("stop strings must not be empty");
  }
  if (use_beam_search) {
    if (beam_width < 1 || beam_width > kMaxBeamWidth) {
      return invalid_argument("beam_width must be in [1, 512]");
    }
    if (n > beam_width) return invalid_argument("n must not exceed beam_width");
    if (!std::isfinite(length_penalty)) return invalid_argument("length_penalty must be finite");
  }
  if (speculative) {
    if (!use_beam_search) return invalid_argument("speculative decoding requires beam search");
    const SpeculativeParams& spec = *speculative;
    if (spec.num_draft_beams < beam_width || spec.num_draft_beams > kMaxBeamWidth) {
      return invalid_argument("num_draft_beams must be in [beam_width, 512], got " +
                              std::to_string(spec.num_draft_beams));
    }
    if (spec.num_speculative_steps < 1 || spec.num_speculative_steps > kMaxSpeculativeSteps) {
      return invalid_argument("num_speculative_steps must be in [1, 8], got " +
                              std::to_string(spec.num_speculative_steps));
    }
  }
  return Status::Ok();
}

}  // namespace earnserve
