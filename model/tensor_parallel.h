// Megatron-style tensor parallelism for the decoder: which slice of every weight one rank holds.
// TensorParallel (part of LoadOptions) says who this rank is; plan_tensor_parallel() checks it
// against a ModelConfig and returns the rank's TensorParallelShard, from which LlamaModel slices
// its weights at load time.
//
// The split, per layer:
//   q_proj, k_proj, v_proj (+ biases), gate_proj, up_proj: column-parallel, i.e. rows of the HF
//     [out_features, in_features] matrix: rank r owns query heads [r * H / tp, (r + 1) * H / tp),
//     their KV heads, and intermediate features [r * I / tp, (r + 1) * I / tp).
//   o_proj, down_proj: row-parallel (the matching columns); each rank's partial output is summed
//     with an all-reduce. o_proj's bias is held by rank 0 only, so it is added exactly once.
// KV heads: with KV >= tp every rank owns KV / tp of them, [r * KV / tp, (r + 1) * KV / tp). With
//   KV < tp (tp a multiple of KV) each rank keeps the one KV head its query heads read, KV head
//   r * KV / tp, so tp / KV consecutive ranks hold a replica of the same head. Either way query
//   head h still reads KV head h / (H / KV), and the local grouping (H / KV query heads per KV
//   head) is unchanged.
// Embeddings and lm_head: replicated by default. With vocab_parallel_embeddings rank r owns vocab
//   rows [r * V / tp, (r + 1) * V / tp) of both: the embedding looks up its own slice (zeros for
//   other ids) and all-reduces; lm_head computes its slice of the logits and all-gathers them, so
//   every rank ends with the full logits.
//
// Plain value types; thread-compatible. The communicator is borrowed.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "model/config.h"

namespace earnserve {

class Communicator;

struct TensorParallel {
  int rank = 0;
  int size = 1;
  // Borrowed; required when size > 1 (its rank() and world_size() must equal rank and size), and
  // must outlive the model. Every rank runs the same forward() calls in the same order.
  Communicator* comm = nullptr;
  // Split embed_tokens and lm_head by vocabulary rows instead of replicating them.
  bool vocab_parallel_embeddings = false;
};

// The part of the model that one rank holds: [begin, begin + num) ranges in units of heads,
// intermediate features and vocabulary rows.
struct TensorParallelShard {
  int64_t head_begin = 0;
  int64_t num_local_heads = 0;
  int64_t kv_head_begin = 0;
  int64_t num_local_kv_heads = 0;
  int64_t intermediate_begin = 0;
  int64_t local_intermediate_size = 0;
  // The whole vocabulary unless vocab_parallel_embeddings.
  int64_t vocab_begin = 0;
  int64_t local_vocab_size = 0;
};

// Checks `tp` against `config` and returns rank tp.rank's shard. Errors are one line naming the
// field, e.g. "field 'num_attention_heads' (4) is not divisible by the tensor-parallel size 3",
// "field 'vocab_size' (2915) is not divisible by the tensor-parallel size 2
// (vocab_parallel_embeddings)", or a communicator that is missing or disagrees with rank/size.
StatusOr<TensorParallelShard> plan_tensor_parallel(const ModelConfig& config,
                                                   const TensorParallel& tp);

}  // namespace earnserve
