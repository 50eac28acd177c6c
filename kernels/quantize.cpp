#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>

#include "core/half.h"
#include "core/logging.h"
#include "core/threading.h"

namespace earnserve {
namespace {

float element(const void* src, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(src)[i]);
    case DType::kF16:
      return fp16_to_float(static_cast<const uint16_t*>(src)[i]);
    case DType::kF32:
      return static_cast<const float*>(src)[i];
    default:
      ES_CHECK(false) << "cannot quantise " << dtype_name(dtype) << " to int8";
      return 0.0f;
  }
}

}  // namespace

float row_absmax(const void* src, DType dtype, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(element(src, dtype, i));
    if (std::isnan(a)) return a;
    m = std::max(m, a);
  }
  return m;
}

void quantize_row_int8(const void* src, DType dtype, int64_t n, float scale, int8_t* dst) {
  if (scale == 0.0f) {
    std::fill(dst, dst + n, int8_t{0});
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::round(element(src, dtype, i) / scale);
    dst[i] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
  }
}

ops::LinearWeight quantize_int8(const Tensor& weight) {
  ES_CHECK(weight.is_cpu() && weight.ndim() == 2) << "quantize_int8: " << weight.debug_string();
  const int64_t rows = weight.dim(0);
  const int64_t cols = weight.dim(1);
  ops::LinearWeight out{Tensor::cpu({rows, cols}, DType::kI8), Tensor::cpu({rows}, DType::kF32)};
  const auto* src = static_cast<const char*>(weight.raw_data());
  const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(weight.dtype());
  parallel_for(rows, grain_for_work(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const void* row = src + static_cast<size_t>(r) * row_bytes;
      const float absmax = row_absmax(row, weight.dtype(), cols);
      ES_CHECK(std::isfinite(absmax)) << "quantize_int8: row " << r << " is not finite";
      const float scale = int8_row_scale(absmax);
      out.scale.data<float>()[r] = scale;
      quantize_row_int8(row, weight.dtype(), cols, scale, out.weight.data<int8_t>() + r * cols);
    }
  });
  return out;
}

}  // namespace earnserve
