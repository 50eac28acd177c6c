// Symmetric per-row int8 quantisation of weight matrices, done once when a model loads
// (model/weights.cpp) for ops::linear's i8 LinearWeight: row n becomes q[n, :] in [-127, 127] and
// scale[n] = max|w[n, :]| / 127, with q = round(w / scale). A row of zeros gets scale 0 and
// q = 0. The helpers work on one row (or one column range of a row) so that a caller can take
// the scale from a whole row and quantise only a slice of it (tensor-parallel column shards).
// Stateless and thread-safe.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "kernels/ops.h"

namespace earnserve {

// max_i |float(src[i])| for src of dtype f32, bf16 or f16; NaN when any element is NaN.
float row_absmax(const void* src, DType dtype, int64_t n);

// The scale of a row whose largest magnitude is `absmax`: absmax / 127.
inline float int8_row_scale(float absmax) { return absmax / 127.0f; }

// dst[i] = clamp(round(float(src[i]) / scale), -127, 127), or 0 when scale is 0.
void quantize_row_int8(const void* src, DType dtype, int64_t n, float scale, int8_t* dst);

// Quantises every row of `src` ([rows, cols] f32|bf16|f16, CPU) with its scale taken from the
// whole row, writing columns [col_begin, col_end) to q ([rows, col_end - col_begin]) and the
// scales to scale ([rows]). Returns -1, or a row holding a non-finite value (that row is left
// unwritten).
int64_t quantize_rows_int8(const Tensor& src, int64_t col_begin, int64_t col_end, int8_t* q,
                           float* scale);

// A whole CPU matrix [rows, cols] f32|bf16|f16 as an i8 LinearWeight. REQUIRES: every element
// finite.
ops::LinearWeight quantize_int8(const Tensor& weight);

}  // namespace earnserve
