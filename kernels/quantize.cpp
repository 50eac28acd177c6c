#include "kernels/quantize.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "core/logging.h"
#include "core/threading.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve {
namespace {

// Rows are read through f32 chunks of this many elements (on the stack).
constexpr int64_t kChunk = 256;

// Calls fn(values, count, offset) for src's n elements widened to f32, a chunk at a time.
template <typename Fn>
void for_each_chunk(const void* src, DType dtype, int64_t n, Fn&& fn) {
  ES_CHECK(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16)
      << "cannot quantise " << dtype_name(dtype) << " to int8";
  float chunk[kChunk];
  const auto* bytes = static_cast<const char*>(src);
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t count = std::min(kChunk, n - i);
    cpu::widen_to_f32(bytes + static_cast<size_t>(i) * dtype_size(dtype), dtype, chunk, count);
    fn(chunk, count, i);
  }
}

}  // namespace

float row_absmax(const void* src, DType dtype, int64_t n) {
  float m = 0.0f;
  bool nan = false;
  for_each_chunk(src, dtype, n, [&](const float* v, int64_t count, int64_t) {
    for (int64_t i = 0; i < count; ++i) {
      nan |= std::isnan(v[i]);
      m = std::max(m, std::fabs(v[i]));
    }
  });
  return nan ? std::numeric_limits<float>::quiet_NaN() : m;
}

void quantize_row_int8(const void* src, DType dtype, int64_t n, float scale, int8_t* dst) {
  if (scale == 0.0f) {
    std::fill(dst, dst + n, int8_t{0});
    return;
  }
  for_each_chunk(src, dtype, n, [&](const float* v, int64_t count, int64_t offset) {
    for (int64_t i = 0; i < count; ++i) {
      const float q = std::round(v[i] / scale);
      dst[offset + i] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
    }
  });
}

int64_t quantize_rows_int8(const Tensor& src, int64_t col_begin, int64_t col_end, int8_t* q,
                           float* scale) {
  ES_CHECK(src.is_cpu() && src.ndim() == 2) << "quantize_rows_int8: " << src.debug_string();
  const int64_t cols = src.dim(1);
  ES_CHECK(0 <= col_begin && col_begin <= col_end && col_end <= cols);
  const int64_t width = col_end - col_begin;
  const DType dtype = src.dtype();
  const size_t row_bytes = static_cast<size_t>(cols) * dtype_size(dtype);
  const size_t offset = static_cast<size_t>(col_begin) * dtype_size(dtype);
  const auto* bytes = static_cast<const char*>(src.raw_data());
  std::atomic<int64_t> bad_row{-1};
  parallel_for(src.dim(0), grain_for_work(cols), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      const char* row = bytes + static_cast<size_t>(r) * row_bytes;
      const float absmax = row_absmax(row, dtype, cols);
      if (!std::isfinite(absmax)) {
        bad_row.store(r);
        continue;
      }
      scale[r] = int8_row_scale(absmax);
      quantize_row_int8(row + offset, dtype, width, scale[r], q + r * width);
    }
  });
  return bad_row.load();
}

ops::LinearWeight quantize_int8(const Tensor& weight) {
  ES_CHECK(weight.is_cpu() && weight.ndim() == 2) << "quantize_int8: " << weight.debug_string();
  const int64_t rows = weight.dim(0);
  const int64_t cols = weight.dim(1);
  ops::LinearWeight out{Tensor::cpu({rows, cols}, DType::kI8), Tensor::cpu({rows}, DType::kF32)};
  const int64_t bad_row =
      quantize_rows_int8(weight, 0, cols, out.weight.data<int8_t>(), out.scale.data<float>());
  ES_CHECK(bad_row < 0) << "quantize_int8: row " << bad_row << " is not finite";
  return out;
}

}  // namespace earnserve
