#include <cstring>
#include <vector>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/panel_gemm.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {

namespace {

void check_ids(const char* op, const int32_t* id, int64_t num_tokens, int64_t vocab_size) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    ES_CHECK(0 <= id[t] && id[t] < vocab_size)
        << op << ": token id " << id[t] << " outside [0, " << vocab_size << ")";
  }
}

}  // namespace

void gather_linear_rows_i8(const ops::LinearWeight& w, const Tensor& ids, ops::LinearWeight& out) {
  const int64_t vocab_size = w.weight.dim(0);
  const int64_t hidden = w.weight.dim(1);
  const int64_t num_rows = ids.dim(0);
  const int32_t* id = ids.data<int32_t>();
  check_ids("gather_linear_rows", id, num_rows, vocab_size);
  const auto* src = static_cast<const int8_t*>(w.weight.raw_data());
  auto* dst = static_cast<int8_t*>(out.weight.raw_data());
  for (int64_t i = 0; i < num_rows; ++i) {
    if (w.panels) {
      panel_row_i8(src, vocab_size, hidden, id[i], dst + i * hidden);
    } else {
      std::memcpy(dst + i * hidden, src + id[i] * hidden, static_cast<size_t>(hidden));
    }
    out.scale.data<float>()[i] = w.scale.data<float>()[id[i]];
  }
}

void embedding(const ops::LinearWeight& table, const Tensor& ids, Tensor& out) {
  const Tensor& w = table.weight;
  const int64_t vocab_size = w.dim(0);
  const int64_t hidden = w.dim(1);
  const int64_t num_tokens = ids.dim(0);
  const int32_t* id = ids.data<int32_t>();
  check_ids("embedding", id, num_tokens, vocab_size);
  const auto* rows = static_cast<const char*>(w.raw_data());
  const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(w.dtype());
  const float* scale = w.dtype() == DType::kI8 ? table.scale.data<float>() : nullptr;
  float* dst = out.data<float>();
  parallel_for(num_tokens, 16, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const char* row = rows + static_cast<size_t>(id[t]) * row_bytes;
      if (table.panels && scale != nullptr) {
        thread_local std::vector<int8_t> row_i8;
        row_i8.resize(static_cast<size_t>(hidden));
        panel_row_i8(reinterpret_cast<const int8_t*>(rows), vocab_size, hidden, id[t],
                     row_i8.data());
        dequantize_i8(row_i8.data(), scale[id[t]], dst + t * hidden, hidden);
      } else if (table.panels) {
        panel_row(rows, w.dtype(), vocab_size, hidden, id[t], dst + t * hidden);
      } else if (scale != nullptr) {
        dequantize_i8(reinterpret_cast<const int8_t*>(row), scale[id[t]], dst + t * hidden, hidden);
      } else {
        widen_to_f32(row, w.dtype(), dst + t * hidden, hidden);
      }
    }
  });
}

}  // namespace earnserve::cpu
