// The CUDA backend of the ops in kernels/ops.h, one .cu file per op. Each function here has
// exactly the signature of its ops:: counterpart and is called by the dispatcher in
// kernels/ops.cpp after it has checked shapes, dtypes and devices, so these functions only
// ES_CHECK the limits of their own launch configuration (e.g. top_k's k).
//
// All work is queued on the default (legacy) stream of the current device and is asynchronous
// with respect to the host; reading a result back through device_copy synchronises. No op
// allocates device memory per call; linear keeps one grow-only scratch buffer per device.
// Thread-safety: as ops.h (concurrent calls on disjoint outputs are safe).
//
// This header is plain C++ (no CUDA types) so the g++-compiled dispatcher can include it.
#pragma once

#include "core/tensor.h"
#include "kernels/ops.h"

namespace earnserve::cuda {

//   table: [vocab_size, hidden] f32|bf16|f16, ids: [num_tokens] i32, out: [num_tokens, hidden]
// An id outside [0, vocab_size) yields a zero row (a device kernel cannot report an error).
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);

//   x, out: [num_tokens, hidden] f32 (may alias), weight: [hidden] f32|bf16|f16
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);

//   residual, x, out: [num_tokens, hidden] f32 (out may alias x), weight: [hidden]
void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out);

//   x: [num_rows, cols] f32, indices: [num_out] i32, out: [num_out, cols] f32
// An index outside [0, num_rows) yields a zero row.
void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out);

//   y, x: same shape, f32
void add_inplace(Tensor& y, const Tensor& x);

//   q: [num_tokens, num_heads, head_dim], k: [num_tokens, num_kv_heads, head_dim],
//   positions: [num_tokens] i32, inv_freq: [head_dim / 2] f32
void rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq);

//   gate_up: [num_tokens, 2 * inter] f32, out: [num_tokens, inter] f32
void silu_and_mul(const Tensor& gate_up, Tensor& out);

//   x: [num_tokens, in] f32, weight: [out_features, in] f32|bf16|f16,
//   bias: [out_features] f32|bf16|f16 or undefined, out: [num_tokens, out_features] f32
// Precision: f32 weights use cublasSgemm in plain FP32 (no TF32). bf16 weights multiply x split
// into two bf16 terms (x = hi + lo) on the tensor cores with FP32 accumulation, which keeps
// about 16 mantissa bits of x and the bf16 weights exactly (relative error ~1e-5). f16 weights
// are widened to f32 on the device in row chunks and go through cublasSgemm.
void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out);

//   key, value: [num_tokens, num_kv_heads, head_dim] f32,
//   key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim] f32,
//   slot_mapping: [num_tokens] i32 (negative or past the cache: skipped)
void reshape_and_cache(const Tensor& key, const Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, const Tensor& slot_mapping);

// See ops::PagedAttentionArgs for the shapes. out: [num_tokens, num_heads, head_dim] f32.
void paged_attention(const ops::PagedAttentionArgs& args, Tensor& out);

//   x, out: [rows, cols] f32 (may alias)
void softmax(const Tensor& x, Tensor& out);
void log_softmax(const Tensor& x, Tensor& out);

//   x: [rows, cols] f32, out: [rows] i32
void argmax(const Tensor& x, Tensor& out);

//   x: [rows, cols] f32, values: [rows, k] f32, indices: [rows, k] i32.
// REQUIRES: k <= kMaxTopK (ES_CHECK).
inline constexpr int kMaxTopK = 1024;
void top_k(const Tensor& x, int k, Tensor& values, Tensor& indices);

}  // namespace earnserve::cuda
