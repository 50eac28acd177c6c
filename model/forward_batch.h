// ForwardBatch: everything one model step needs besides the weights: the tokens of all sequences
// in the step flattened into one list, their positions, and for each KV layer group the paging
// metadata (where each token's KV goes, each sequence's block table and length). Built by the
// scheduler (or a simple runner), read by the model. Plain data; not thread-safe.
//
// Layer groups: a plain model has one group that every layer uses and every token takes part in.
// A model with EARN registers has a second group for layers k..L-1 in which only some of the
// batch's tokens take part (`token_indices`): those layers compute and cache nothing for the rest.
#pragma once

#include <vector>

#include "core/kv_cache_refs.h"
#include "core/tensor.h"

namespace earnserve {

struct AttentionMetadata {
  // Rows of the batch that take part in this group's layers, strictly ascending; undefined = all
  // rows. They index the ORIGINAL batch rows (token_ids, positions), whatever groups come before;
  // each group's rows must be a subset of the previous group's rows. When the group changes
  // between layers, the model gathers the hidden states (and positions) of these rows from the
  // rows it computed so far; slot_mapping and query_start_loc then refer to the gathered rows.
  Tensor token_indices;    // [num_group_tokens] i32
  Tensor slot_mapping;     // [num_group_tokens] i32: KV slot of each taking-part token, -1 = none
  Tensor block_tables;     // [num_seqs, max_blocks_per_seq] i32
  Tensor seq_lens;         // [num_seqs] i32: KV entries after this step, in this group
  Tensor query_start_loc;  // [num_seqs + 1] i32: each sequence's rows among the group's tokens
  // Optional shared prefixes (see ops::PagedAttentionArgs): sequences whose leading KV pages are
  // the same, so attention reads them once for all of them.
  Tensor seq_prefix;   // [num_seqs] i32, -1 = none
  Tensor prefix_lens;  // [num_prefixes] i32, multiples of block_size
  // Optional tree attention (see ops::PagedAttentionArgs): each of the group's tokens attends to
  // its sequence's context and its ancestors only. Rows index the group's tokens.
  Tensor query_parents;  // [num_group_tokens] i32: parent's index within the sequence, -1 = root
};

struct ForwardBatch {
  Tensor token_ids;  // [num_tokens] i32
  Tensor positions;  // [num_tokens] i32 (RoPE positions)
  std::vector<AttentionMetadata> groups;
  std::vector<int> layer_group;  // [num_layers]: the group of each layer; groups only increase
  // Rows whose logits are wanted, indexing the rows of the last group's tokens.
  Tensor logits_indices;  // [num_logits] i32
  // Optional: the only tokens whose logits are wanted, ascending (a catalogue step's allowed
  // tokens); the model multiplies by those rows of lm_head alone and logits column j is token
  // logits_token_ids[j]. Undefined = the whole vocabulary.
  Tensor logits_token_ids;  // [num_logit_tokens] i32
};

}  // namespace earnserve
