// The compute ops of the engine. Each op is declared here once, checks its arguments' shapes and
// dtypes once (ES_CHECK: a mismatch is a programming error), and dispatches on the device of its
// tensors to kernels/cpu/<op>.cpp or kernels/cuda/<op>.cu. Outputs are allocated by the caller;
// no op allocates device memory on its hot path. All tensors of one call live on one device.
// Thread-safety: ops may run concurrently on disjoint outputs.
//
// Conventions: activations are f32. Weights (embedding tables, linear weights, norm weights) may
// be f32, bf16 or f16; linear weights may also be int8 with per-row scales (LinearWeight, CPU
// only: linear quantises its f32 input to int8 in blocks of 32 for the product and returns f32).
// Index tensors (ids, positions, slots, block tables) are i32.
#pragma once

#include "core/tensor.h"

namespace earnserve::ops {

// The matrix of a linear layer. f32/bf16/f16 matrices are used as they are; an i8 matrix is
// symmetric per output row: the row n it stands for is weight[n, :] * scale[n] (model/weights.h
// quantises at load: scale[n] = max|w[n, :]| / 127). i8 is CPU-only.
// `panels`: the elements are in panel order (kernels/cpu/panel_gemm.h: 32 output features at a
// time, each panel stored k-major), not row-major; same shape and dtype. CPU, f32 or bf16 only;
// made by pack_linear, read by linear and (a row at a time: a tied table) by embedding.
//   weight: [out_features, in] f32|bf16|f16|i8, scale: [out_features] f32 when weight is i8,
//   else undefined
struct LinearWeight {
  Tensor weight;
  Tensor scale;
  bool panels = false;
};

// True when pack_linear packs `w`: a CPU f32 or bf16 matrix not yet in panels.
bool can_pack_linear(const LinearWeight& w);
// Replaces w.weight by a panel-ordered copy and sets w.panels (one extra matrix at a time while
// it runs). REQUIRES: can_pack_linear(w).
void pack_linear(LinearWeight& w);
// EARNSERVE_WEIGHT_PANELS=0 turns packing at load off (model loaders ask this); default on.
bool weight_panels_enabled();

// out[i, :] = table[ids[i], :]
//   table: [vocab_size, hidden] f32|bf16|f16, ids: [num_tokens] i32, out: [num_tokens, hidden] f32
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
// The same for the rows of a linear weight in any layout (a tied table in panels), i8 rows
// dequantised: out[i, :] = table.weight[ids[i], :] (* table.scale[ids[i]] for i8).
void embedding(const LinearWeight& table, const Tensor& ids, Tensor& out);
// The rows `ids` of a linear weight in any layout, as a row-major LinearWeight for linear() (a
// catalogue step's rows of lm_head). An i8 weight gives i8 rows with their scales, so the product
// quantises its input as the whole matrix's does and gives the same values; f32/bf16/f16 weights
// give f32 rows.
//   ids: [k] i32; out.weight: [k, in] f32 (f32|bf16|f16 w) or i8 with out.scale [k] f32 (i8 w)
void gather_linear_rows(const LinearWeight& w, const Tensor& ids, LinearWeight& out);

// out = x / sqrt(mean(x^2) + eps) * weight, per row. out may alias x.
//   x: [num_tokens, hidden] f32, weight: [hidden], out: [num_tokens, hidden] f32
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);

// Fused residual step: residual += x; out = rms_norm(residual). out may alias x.
//   residual, x, out: [num_tokens, hidden] f32, weight: [hidden]
void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out);

// out[i, :] = x[indices[i], :]. Used to narrow a batch to the tokens a layer group computes.
//   x: [num_rows, cols] f32, indices: [num_out] i32 (each in [0, num_rows)), out: [num_out, cols]
//   f32
void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out);

// y += x elementwise. y, x: same shape, f32.
void add_inplace(Tensor& y, const Tensor& x);

// Rotary embedding in place, rotate-half layout (as transformers' Llama): for pair index
// i < head_dim/2, angle = positions[t] * inv_freq[i];
//   (x[i], x[i + d/2]) <- (x[i] cos - x[i + d/2] sin, x[i + d/2] cos + x[i] sin).
//   q: [num_tokens, num_heads, head_dim] f32, k: [num_tokens, num_kv_heads, head_dim] f32,
//   positions: [num_tokens] i32, inv_freq: [head_dim / 2] f32 (llama3 scaling folded in)
void rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq);

// out = silu(gate) * up, with gate = gate_up[:, :inter] and up = gate_up[:, inter:].
//   gate_up: [num_tokens, 2 * inter] f32, out: [num_tokens, inter] f32
void silu_and_mul(const Tensor& gate_up, Tensor& out);

// out = x @ weight^T (+ bias). On the CPU a weight in panels goes through the panel GEMM
// (kernels/cpu/panel_gemm.h) at every token count; a row-major f32 weight through the few-token
// GEMV or OpenBLAS sgemm; bf16/f16 weights are widened tile by tile; i8 weights (LinearWeight)
// are read as bytes by the few-token GEMV (each row's scale applied once to its dot products) and
// dequantised tile by tile to f32 for more tokens.
//   x: [num_tokens, in] f32, weight: [out_features, in] f32|bf16|f16 (or a LinearWeight, i8 with
//   its scales on the CPU), bias: [out_features] or undefined Tensor,
//   out: [num_tokens, out_features] f32
void linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out);
void linear(const Tensor& x, const LinearWeight& weight, const Tensor& bias, Tensor& out);

// Writes each token's key and value into its KV page slot. slot = block_id * block_size + offset;
// a negative slot means "this token keeps no KV here" and is skipped.
//   key, value: [num_tokens, num_kv_heads, head_dim] f32,
//   key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim] f32,
//   slot_mapping: [num_tokens] i32
void reshape_and_cache(const Tensor& key, const Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, const Tensor& slot_mapping);

// Causal (or tree-masked, below) attention over paged KV, for prefill chunks and decodes alike,
// with grouped-query heads (query head h reads KV head h / (num_heads / num_kv_heads)).
// Sequence s owns query rows [query_start_loc[s], query_start_loc[s+1]) and has seq_lens[s] KV
// entries (cached context plus this step's tokens, already written by reshape_and_cache), found
// through block_tables[s]. Its q_len queries are its last q_len KV entries: query j may attend to
// KV entries [0, seq_lens[s] - q_len + j].
//   query: [num_tokens, num_heads, head_dim] f32,
//   key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim] f32,
//   block_tables: [num_seqs, max_blocks_per_seq] i32, seq_lens: [num_seqs] i32,
//   query_start_loc: [num_seqs + 1] i32, out: [num_tokens, num_heads, head_dim] f32
//
// Shared prefixes (beam search, parallel sampling): when seq_prefix is defined, sequence s with
// seq_prefix[s] = p >= 0 has its first prefix_lens[p] KV entries in the same pages as every other
// sequence of prefix p (their block tables agree on the first prefix_lens[p] / block_size
// entries). The kernel then reads those shared pages once per step for all queries of all the
// prefix's sequences (one matrix product over the stacked queries per KV head) and merges that
// partial attention with each sequence's own remaining entries (online-softmax rescaling). The
// result equals the plain computation up to float rounding. Every query of such a sequence must
// see the whole prefix: seq_lens[s] - q_len >= prefix_lens[p].
//   seq_prefix: [num_seqs] i32 (-1 = no shared prefix), prefix_lens: [num_prefixes] i32, each a
//   multiple of block_size and > 0
//
// Tree attention (speculative decoding verifies a drafted tree of tokens in one pass): when
// query_parents is defined, a sequence's q_len queries are tree nodes rather than a causal run.
// With context c = seq_lens[s] - q_len, query j of the sequence attends KV entries [0, c) plus
// c + a for every a on its ancestor chain, j included; never its siblings or their subtrees.
// query_parents[row] is the parent's index j' < j among the same sequence's queries, or -1 for a
// root (a child of the last context entry). The chain -1, 0, 1, ... is exactly the causal rule.
// A shared prefix lies inside the context, so it combines unchanged. Values are checked for CPU
// tensors; on a GPU a parent outside [-1, j) ends the chain there (the node counts as a root).
//   query_parents: [num_tokens] i32, undefined = causal
struct PagedAttentionArgs {
  Tensor query;
  Tensor key_cache;
  Tensor value_cache;
  Tensor block_tables;
  Tensor seq_lens;
  Tensor query_start_loc;
  float scale = 1.0f;
  Tensor seq_prefix;     // optional
  Tensor prefix_lens;    // optional, defined together with seq_prefix
  Tensor query_parents;  // optional [num_tokens] i32: tree attention
};
void paged_attention(const PagedAttentionArgs& args, Tensor& out);

// Row-wise softmax and log-softmax. x, out: [rows, cols] f32; out may alias x.
void softmax(const Tensor& x, Tensor& out);
void log_softmax(const Tensor& x, Tensor& out);

// Index of the largest value per row (the first one on ties).
//   x: [rows, cols] f32, out: [rows] i32
void argmax(const Tensor& x, Tensor& out);

// The k largest values per row, sorted descending (ties: smaller index first), with indices.
//   x: [rows, cols] f32, values: [rows, k] f32, indices: [rows, k] i32. REQUIRES: k <= cols.
void top_k(const Tensor& x, int k, Tensor& values, Tensor& indices);

}  // namespace earnserve::ops
