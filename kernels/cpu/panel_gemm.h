// Linear layers on weights packed once, at load, into column panels: the CPU's own GEMM for every
// row count, from one-token decode to 512-token prefill.
//
// Layout. A weight W [N, K] (N output features, K inputs; f32 or bf16) is cut into panels of
// kPanelWidth = 32 output features. Panel p holds features [32p, 32p + w) with w = min(32, N - 32p)
// and is stored as K rows of w values: in f32, element (n, k) sits at 32p * K + k * w + j
// (j = n - 32p); in bf16 rows go in pairs (k even, k + 1), interleaved per feature, at
// 32p * K + (k / 2) * 2w + 2j + k % 2 (an odd K's last row plain), the operand order of
// AVX512_BF16's pair dot product; int8 (K a multiple of 4) in groups of four rows the same way,
// at 32p * K + (k / 4) * 4w + 4j + k % 4, each weight q stored as the unsigned byte q + 128 (the
// operands of AVX512-VNNI's vpdpbusd). The panels follow each other, so the packed matrix has
// exactly N * K elements and keeps W's shape and dtype (a LinearWeight with `panels` set;
// kernels/ops.h). One panel row (f32), pair of rows (bf16) or group of four (int8) is two cache
// lines.
//
// Why. A product y = x W^T over a few rows x (decode: 1, a beam step: 10-50) reads every weight
// once and does little with it; row-major weights make it read many short rows at once (one
// stream per row, which the prefetchers follow badly: 21-28 GB/s on a Zen 4 where llama.cpp reads
// 37-39), and OpenBLAS packs the weights again on every call (21% of a 50-row step). Panels are one
// sequential stream per thread, already in the order the kernel's registers want them. For many
// rows the same kernel is a GEMM with its B operand packed ahead of time.
//
// Kernel. Each worker takes whole panels. Per panel, K in blocks of kPanelKBlock (a block of a
// panel, 256 KiB in f32, stays in L2 while every row chunk passes over it; 2048 rather than 512
// measured 3-8% faster prefill and up to 10% faster 10-row steps on a Zen 4, f32, bf16 and int8:
// fewer passes over the sums); per block, chunks of up to MR rows of x
// run a register-blocked kernel: MR rows x 32 features of f32 sums in registers, one panel row
// loaded (bf16 widened to f32 in registers) and multiplied with MR broadcast inputs per k. AVX-512:
// MR 12 (24 zmm sums); AVX2: MR 2 on the whole panel row, or MR 6 on each half (12 ymm sums);
// portable: MR 4, plain C++. Every output is sum_k x[m, k] W[n, k] added in k order within a
// block, blocks in order: the same for any row count and any row chunking, so a row's result
// does not depend on what it is batched with (per path; paths differ in FMA contraction). One
// exception, bf16 on AVX-512: a one-row product (decode) sums the even and the odd inputs of
// each pair apart and adds the two at the end (two FMA chains instead of one: measured 10-15%
// faster decode), so it differs from the same row in a batch by rounding.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace earnserve::cpu {

inline constexpr int64_t kPanelWidth = 32;
inline constexpr int64_t kPanelKBlock = 2048;

// True for the weight dtypes panels hold (f32, bf16; int8 with per-feature scales, for k a
// multiple of 4: rows in groups of four per feature, each weight stored as q + 128, unsigned).
bool panel_dtype_supported(DType dtype);

// From this many rows on, bf16 panels are multiplied as bf16 x bf16 with f32 sums (AVX512_BF16's
// vdpbf16ps, 2 k per instruction: what torch and llama.cpp do with bf16 weights) on the avx512
// path of a CPU with AVX512_BF16: each row of x is rounded to bf16 once per product. Fewer rows
// (decode, beam steps: bound by reading the weights) keep f32 rows against widened weights.
// EARNSERVE_BF16_DOT=0 keeps f32 rows everywhere.
inline constexpr int64_t kBf16DotMinRows = 64;
// True when a bf16 product over m rows takes the bf16 x bf16 kernel now.
bool bf16_dot_products(int64_t m);
// Whether bf16 x bf16 products may be used at all (EARNSERVE_BF16_DOT; tests switch it).
bool bf16_dot_enabled();
void set_bf16_dot_enabled(bool enabled);

// Writes W [n, k] (row-major, `dtype` f32 or bf16) in panel order to dst (n * k elements of
// `dtype`). dst must not alias src.
void pack_panels(const void* src, DType dtype, int64_t n, int64_t k, void* dst);
// The inverse: panels back to row-major (tests, and a gather of rows).
void unpack_panels(const void* src, DType dtype, int64_t n, int64_t k, void* dst);

// Row `row` of W (an output feature's k weights; a token's embedding when W is a tied table),
// widened to f32 into dst[0, k): k reads, one per panel row.
void panel_row(const void* panels, DType dtype, int64_t n, int64_t k, int64_t row, float* dst);

// The int8 row `row` (its scale is the weight's scale[row]).
void panel_row_i8(const int8_t* panels, int64_t n, int64_t k, int64_t row, int8_t* dst);

// int8 weights in panels with one scale per output feature: y[m, n] = beta * y[m, n] +
// scale[n] * sum_b s_x[m, b] * sum_{k in b} q_x[m, k] q_w[n, k], the rows quantised per call in
// blocks of kI8Block (kernels/cpu/vec_math.h quantize_activations_i8, as the row-major int8 GEMV
// does). AVX512-VNNI vpdpbusd on the avx512 path, portable C++ otherwise. REQUIRES: k a multiple
// of 4.
void panel_gemm_i8(const float* x, int64_t m, int64_t k, const int8_t* panels, const float* scale,
                   int64_t n, float beta, float* y);

// y[m, n] = beta * y[m, n] + sum_k x[m, k] W[n, k], W in panels (dtype f32 or bf16); x is
// row-major [m, k] with row stride k, y row-major [m, n] with row stride n. beta is 0 or 1.
// Multi-threaded over panels (core/threading.h); the kernel body follows cpu_isa().
void panel_gemm(const float* x, int64_t m, int64_t k, const void* panels, DType dtype, int64_t n,
                float beta, float* y);

}  // namespace earnserve::cpu
