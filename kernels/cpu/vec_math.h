// Vector primitives the CPU kernels are built from: conversions, dot products, reductions and
// the exp-based activations, each with an AVX2+FMA body and a portable body, picked per call by
// cpu_features (one relaxed atomic load). Pointers are plain contiguous arrays of n elements.
// Stateless and thread-safe.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace earnserve::cpu {

// dst[i] = float(src[i]) for src of dtype f32, bf16 or f16.
void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n);

// dst[i] = scale * float(src[i]): one int8 weight row (or tile of rows sharing a scale) to f32.
void dequantize_i8(const int8_t* src, float scale, float* dst, int64_t n);

// out[r * num_x + j] = sum_i float(w_r[i]) * x[j * x_stride + i] for r < num_rows, j < num_x,
// where row r starts row_stride elements after row r - 1 and its elements have `dtype` (f32,
// bf16, f16, or int8 read as bytes: the caller applies an int8 row's scale). The inner loop of
// linear for a few tokens: on the AVX2 path, blocks of four rows meet three vectors at a time in
// registers, so each weight is loaded and widened once per three vectors and the FMA units, not
// the loads, set the pace.
void dot_rows(const void* w, DType dtype, int64_t row_stride, int64_t num_rows, const float* x,
              int64_t x_stride, int64_t num_x, int64_t n, float* out);

// sum_i a[i] * b[i]
float dot(const float* a, const float* b, int64_t n);

// out[j] = sum_i w[i] * x[j * x_stride + i] for j < num_x: one row against several vectors, with
// w loaded once per group of four (the inner loop of GEMV over a few tokens).
void dot_multi(const float* w, const float* x, int64_t x_stride, int64_t num_x, int64_t n,
               float* out);

// y[i] += sum_j weights[j] * rows[j * row_stride + i] for j < num_rows: several scaled rows
// added into one accumulator that stays in registers (attention's P V for one head).
void accumulate_rows(const float* weights, const float* rows, int64_t row_stride, int64_t num_rows,
                     int64_t n, float* y);

// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);

// sum_i x[i]^2
float sum_squares(const float* x, int64_t n);

// out[i] = a[i] + b[i]; out may alias a or b.
void add(const float* a, const float* b, float* out, int64_t n);

// out[i] = x[i] * s * w[i]; out may alias x.
void scale_mul(const float* x, float s, const float* w, float* out, int64_t n);

// x[i] *= s
void scale(float* x, float s, int64_t n);

// max_i x[i]. REQUIRES: n >= 1.
float max_value(const float* x, int64_t n);

// Returns sum_i exp(x[i] - shift); when out is not null also writes out[i] = exp(x[i] - shift).
// out may alias x. Results below 2^-126 may flush to 0 (the AVX2 path does).
float exp_shifted(const float* x, float shift, float* out, int64_t n);

// out[i] = gate[i] / (1 + exp(-gate[i])) * up[i]
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

}  // namespace earnserve::cpu
