// Vector primitives the CPU kernels are built from: conversions, dot products, reductions and
// the exp-based activations, each with an AVX2+FMA body and a portable body, picked per call by
// cpu_features (one relaxed atomic load). Pointers are plain contiguous arrays of n elements.
// Stateless and thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace earnserve::cpu {

// dst[i] = float(src[i]) for src of dtype f32, bf16 or f16.
void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n);

// dst[i] = scale * float(src[i]): one int8 weight row (or tile of rows sharing a scale) to f32.
void dequantize_i8(const int8_t* src, float scale, float* dst, int64_t n);

// out[r * num_x + j] = sum_i float(w_r[i]) * x[j * x_stride + i] for r < num_rows, j < num_x,
// where row r starts row_stride elements after row r - 1 and its elements have `dtype` (f32,
// bf16 or f16; int8 rows go through dot_rows_i8). The inner loop of linear for a few tokens: on
// the AVX2 path, blocks of four rows meet three vectors at a time in registers, so each weight
// is loaded and widened once per three vectors and the FMA units, not the loads, set the pace.
void dot_rows(const void* w, DType dtype, int64_t row_stride, int64_t num_rows, const float* x,
              int64_t x_stride, int64_t num_x, int64_t n, float* out);

// Dynamic int8 activations for the int8 x int8 products below, in blocks of kI8Block elements
// (as llama.cpp's Q8_0 activations: an outlier costs precision in its own block only): block b
// gets scale s_b = max|x| / 127 over its elements, and q[i] = x[i] * (127 / max|x|) clamped to
// [-127, 127] and rounded to the nearest integer (ties to even), stored as int16, the width the
// products multiply in. A block of zeros gets s_b = 0 and q = 0. Writes ceil(n / kI8Block)
// scales. One body for every ISA, so every path multiplies the same q.
constexpr int64_t kI8Block = 32;
void quantize_activations_i8(const float* x, int64_t n, int16_t* q, float* scales);
// The same q as int8, and each block's sum of q (ceil(n / kI8Block) sums).
void quantize_activations_i8(const float* x, int64_t n, int8_t* q, float* scales, int32_t* sums);

// Vectors quantised for dot_rows_i8, once per product (any number of dot_rows_i8 calls over
// different rows read them): num_x vectors of n values, each in blocks of kI8Block with the
// values and scales of quantize_activations_i8. When the avx512 path is active at quantisation,
// also the layout VNNI multiplies (signed bytes zero-padded to whole blocks, per four bytes the
// correction -128 * their sum), built here rather than in every call.
class I8Vectors {
 public:
  // Quantises vector j = x + j * x_stride, j < num_x.
  void quantize(const float* x, int64_t x_stride, int64_t num_x, int64_t n);
  // Takes vectors already quantised: vector j's values at q + j * q_stride (each in [-128,
  // 127]), its block scales at scales + j * scale_stride.
  void assign(const int16_t* q, int64_t q_stride, const float* scales, int64_t scale_stride,
              int64_t num_x, int64_t n);

  int64_t num_x() const { return num_x_; }
  int64_t n() const { return n_; }
  int64_t num_blocks() const { return (n_ + kI8Block - 1) / kI8Block; }
  const int16_t* q(int64_t j) const { return q_.data() + j * n_; }
  const float* scales(int64_t j) const { return scales_.data() + j * num_blocks(); }
  // The VNNI layout (padded() == 0 unless built): vector j's bytes at bytes() + j * padded(),
  // the corrections of its groups of four at corrections() + j * padded() / 4.
  int64_t padded() const { return padded_; }
  const int8_t* bytes() const { return bytes_.data(); }
  const int32_t* corrections() const { return corrections_.data(); }

 private:
  void build_vnni_layout();

  int64_t num_x_ = 0;
  int64_t n_ = 0;
  std::vector<int16_t> q_;
  std::vector<float> scales_;
  int64_t padded_ = 0;
  std::vector<int8_t> bytes_;
  std::vector<int32_t> corrections_;
};

// out[r * x.num_x() + j] = sum_b x.scales(j)[b] * sum_{i in block b} w_r[i] x.q(j)[i] for
// r < num_rows, j < x.num_x(): int8 rows of x.n() values (row r starts row_stride bytes after
// row r - 1). Each block's sum is exact in int32; the blocks are added in f32. The int8 GEMV's
// inner loop: on the AVX2 path blocks of four rows are widened to int16 once per three vectors
// and multiplied pairwise into int32 lanes (vpmaddwd); on the avx512 path (with the VNNI layout)
// four rows meet three vectors 64 columns at a time in vpdpbusd (unsigned x signed bytes: the
// rows flipped to w + 128, the correction taking the 128 x back out).
void dot_rows_i8(const int8_t* w, int64_t row_stride, int64_t num_rows, const I8Vectors& x,
                 float* out);

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
