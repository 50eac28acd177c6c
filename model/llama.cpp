#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include "core/device.h"
#include "kernels/ops.h"
#include "model/parallel/communicator.h"
#include "model/rope.h"

namespace earnserve {
namespace {

// A host copy of a 1-D i32 tensor on any device (index metadata is small).
StatusOr<std::vector<int32_t>> to_host_i32(const Tensor& t) {
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  if (!out.empty()) {
    ES_RETURN_IF_ERROR(device_copy(out.data(), Device::kCPU, t.raw_data(), t.device(),
                                   out.size() * sizeof(int32_t)));
  }
  return out;
}

StatusOr<Tensor> from_host_i32(const std::vector<int32_t>& values, Device device) {
  Tensor host = Tensor::from_vector(values);
  if (device == Device::kCPU) return host;
  return host.to(device);
}

bool is_vector_i32(const Tensor& t) {
  return t.defined() && t.ndim() == 1 && t.dtype() == DType::kI32;
}

// Carves one f32 allocation into the per-call scratch buffers.
class Arena {
 public:
  explicit Arena(Tensor storage) : storage_(std::move(storage)) {}
  // The next `shape`-sized buffer. REQUIRES: the arena was sized for all requests.
  Tensor take(const Shape& shape) {
    int64_t n = shape_numel(shape);
    Tensor t = storage_.slice_rows(offset_, offset_ + n).view(shape);
    offset_ += n;
    return t;
  }

 private:
  Tensor storage_;  // [total] f32
  int64_t offset_ = 0;
};

}  // namespace

StatusOr<std::unique_ptr<CausalLM>> LlamaModel::create(const ModelConfig& config,
                                                       const Weights& weights) {
  const TensorParallel& tp = weights.options().tensor_parallel;
  StatusOr<TensorParallelShard> planned = plan_tensor_parallel(config, tp);
  if (!planned.ok()) {
    return planned.status().with_prefix(
        (std::filesystem::path(weights.source()) / "config.json").string());
  }
  const TensorParallelShard& shard = *planned;
  const int64_t hidden = config.hidden_size;
  const int64_t head_dim = config.head_dim;
  const int64_t q_dim = config.num_attention_heads * head_dim;
  const int64_t kv_dim = config.num_key_value_heads * head_dim;
  const int64_t inter = config.intermediate_size;
  // This rank's rows of q (and columns of o_proj), of k and v, and of gate and up.
  const int64_t q_begin = shard.head_begin * head_dim;
  const int64_t q_end = q_begin + shard.num_local_heads * head_dim;
  const int64_t kv_begin = shard.kv_head_begin * head_dim;
  const int64_t kv_end = kv_begin + shard.num_local_kv_heads * head_dim;
  const int64_t inter_begin = shard.intermediate_begin;
  const int64_t inter_end = inter_begin + shard.local_intermediate_size;
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, weights.options().device, tp, shard));

  ES_RETURN_IF_ERROR(model->load_embeddings(weights));
  ES_ASSIGN_OR_RETURN(model->final_norm_, weights.get_f32("model.norm.weight", {hidden}));
  std::vector<float> inv_freq = rope_inv_freq(config.rope, config.head_dim);
  ES_ASSIGN_OR_RETURN(model->inv_freq_, Tensor::from_vector(inv_freq).to(weights.options().device));

  const bool pack = pack_weights(weights);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Layer layer;
    ES_ASSIGN_OR_RETURN(layer.input_norm, weights.get_f32(p + "input_layernorm.weight", {hidden}));
    ES_ASSIGN_OR_RETURN(layer.post_norm,
                        weights.get_f32(p + "post_attention_layernorm.weight", {hidden}));
    ES_ASSIGN_OR_RETURN(layer.q_proj, weights.get_linear_rows(p + "self_attn.q_proj.weight",
                                                              {q_dim, hidden}, q_begin, q_end));
    ES_ASSIGN_OR_RETURN(layer.k_proj, weights.get_linear_rows(p + "self_attn.k_proj.weight",
                                                              {kv_dim, hidden}, kv_begin, kv_end));
    ES_ASSIGN_OR_RETURN(layer.v_proj, weights.get_linear_rows(p + "self_attn.v_proj.weight",
                                                              {kv_dim, hidden}, kv_begin, kv_end));
    ES_ASSIGN_OR_RETURN(layer.o_proj, weights.get_linear_columns(p + "self_attn.o_proj.weight",
                                                                 {hidden, q_dim}, q_begin, q_end));
    if (config.qkv_bias) {
      ES_ASSIGN_OR_RETURN(layer.q_bias, weights.get_rows(p + "self_attn.q_proj.bias", {q_dim},
                                                         q_begin, q_end, DType::kF32));
      ES_ASSIGN_OR_RETURN(layer.k_bias, weights.get_rows(p + "self_attn.k_proj.bias", {kv_dim},
                                                         kv_begin, kv_end, DType::kF32));
      ES_ASSIGN_OR_RETURN(layer.v_bias, weights.get_rows(p + "self_attn.v_proj.bias", {kv_dim},
                                                         kv_begin, kv_end, DType::kF32));
    }
    if (config.o_proj_bias) {
      // Checked on every rank; added by rank 0 only, before the all-reduce, so exactly once.
      ES_ASSIGN_OR_RETURN(Tensor o_bias, weights.get_f32(p + "self_attn.o_proj.bias", {hidden}));
      if (tp.rank == 0) layer.o_bias = std::move(o_bias);
    }
    ES_ASSIGN_OR_RETURN(
        layer.gate_up_proj,
        weights.get_linear_stacked({p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"},
                                   {{inter, hidden}, {inter, hidden}}, inter_begin, inter_end));
    ES_ASSIGN_OR_RETURN(layer.down_proj,
                        weights.get_linear_columns(p + "mlp.down_proj.weight", {hidden, inter},
                                                   inter_begin, inter_end));
    if (pack) {
      for (ops::LinearWeight* w : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj,
                                   &layer.gate_up_proj, &layer.down_proj}) {
        if (ops::can_pack_linear(*w)) ops::pack_linear(*w);
      }
    }
    model->layers_.push_back(std::move(layer));
  }
  return std::unique_ptr<CausalLM>(std::move(model));
}

bool LlamaModel::pack_weights(const Weights& weights) {
  return weights.options().device == Device::kCPU && weights.options().weight_panels &&
         ops::weight_panels_enabled();
}

Status LlamaModel::load_embeddings(const Weights& weights) {
  const ModelConfig& c = config_;
  const Shape full = {c.vocab_size, c.hidden_size};
  // With tied embeddings a checkpoint stores the shared matrix once, under either name.
  const bool embed_under_lm_head = c.tie_word_embeddings &&
                                   !weights.contains("model.embed_tokens.weight") &&
                                   weights.contains("lm_head.weight");
  const std::string embed_name =
      embed_under_lm_head ? "lm_head.weight" : "model.embed_tokens.weight";
  const std::string lm_head_name = c.tie_word_embeddings ? embed_name : "lm_head.weight";
  // Tied embeddings share one matrix, except that an int8 lm_head is a quantised copy (the table
  // stays in a float dtype).
  const bool share = c.tie_word_embeddings && weights.options().weight_dtype != DType::kI8;
  if (!vocab_parallel()) {
    ES_ASSIGN_OR_RETURN(embed_tokens_, weights.get_matrix(embed_name, full));
    if (share) {
      lm_head_ = ops::LinearWeight{embed_tokens_, Tensor()};
    } else {
      ES_ASSIGN_OR_RETURN(lm_head_, weights.get_linear(lm_head_name, full));
    }
    // The lm_head in panels too: a tied table is then looked up in them (one copy).
    if (pack_weights(weights) && ops::can_pack_linear(lm_head_)) {
      ops::pack_linear(lm_head_);
      if (share) {
        embed_tokens_ = lm_head_.weight;
        embed_in_panels_ = true;
      }
    }
    return Status::Ok();
  }
  const int64_t begin = shard_.vocab_begin;
  const int64_t local = shard_.local_vocab_size;
  const DType table_dtype = weights.table_dtype(embed_name);
  ES_ASSIGN_OR_RETURN(Tensor rows,
                      weights.get_rows(embed_name, full, begin, begin + local, table_dtype));
  ES_ASSIGN_OR_RETURN(embed_tokens_,
                      Tensor::zeros({local + 1, c.hidden_size}, table_dtype, device_));
  Tensor own_rows = embed_tokens_.slice_rows(0, local);
  ES_RETURN_IF_ERROR(own_rows.copy_from(rows));
  if (share) {
    lm_head_ = ops::LinearWeight{own_rows, Tensor()};
  } else {
    ES_ASSIGN_OR_RETURN(lm_head_,
                        weights.get_linear_rows(lm_head_name, full, begin, begin + local));
  }
  return Status::Ok();
}

Status LlamaModel::embed(const Tensor& token_ids, Tensor& residual) {
  if (!vocab_parallel()) {
    if (embed_in_panels_) {
      ops::embedding(lm_head_, token_ids, residual);
    } else {
      ops::embedding(embed_tokens_, token_ids, residual);
    }
    return Status::Ok();
  }
  // Ids of other ranks' slices read the zero row, so the sum over ranks is the embedding.
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids, to_host_i32(token_ids));
  for (int32_t& id : ids) {
    const int64_t local = id - shard_.vocab_begin;
    id = static_cast<int32_t>(
        local >= 0 && local < shard_.local_vocab_size ? local : shard_.local_vocab_size);
  }
  ES_ASSIGN_OR_RETURN(Tensor local_ids, from_host_i32(ids, device_));
  ops::embedding(embed_tokens_, local_ids, residual);
  return all_reduce(residual);
}

Status LlamaModel::all_reduce(Tensor& t) {
  if (tp_.size == 1) return Status::Ok();
  Status status = tp_.comm->all_reduce_sum(t);
  if (!status.ok()) return status.with_prefix("forward: tensor-parallel all-reduce");
  return status;
}

int64_t LlamaModel::logits_scratch_size(int64_t num_logits) const {
  return vocab_parallel() ? num_logits * shard_.local_vocab_size * (1 + tp_.size) : 0;
}

Status LlamaModel::compute_logits(const Tensor& selected, const Tensor& token_ids, Tensor& scratch,
                                  Tensor& logits) {
  if (token_ids.defined()) {
    // A catalogue step: only the allowed tokens' rows of lm_head, gathered (widened to f32 from
    // a bf16 checkpoint), then one small GEMM.
    if (vocab_parallel()) {
      return invalid_argument("forward: logits for chosen tokens need a single rank");
    }
    const int64_t k = token_ids.numel();
    const int64_t hidden = config_.hidden_size;
    ops::LinearWeight rows;
    if (lm_head_.weight.dtype() == DType::kI8) {
      // int8 (CPU only): the chosen rows stay int8 with their scales, so the product quantises
      // the activations as the whole-vocabulary product does and gives the same logits.
      rows = {Tensor::cpu({k, hidden}, DType::kI8), Tensor::cpu({k}, DType::kF32)};
    } else {
      ES_ASSIGN_OR_RETURN(rows.weight, Tensor::empty({k, hidden}, DType::kF32, device_));
    }
    ops::gather_linear_rows(lm_head_, token_ids, rows);
    ops::linear(selected, rows, Tensor(), logits);
    return Status::Ok();
  }
  if (!vocab_parallel()) {
    ops::linear(selected, lm_head_, Tensor(), logits);
    return Status::Ok();
  }
  const int64_t n = selected.dim(0);
  const int64_t local = shard_.local_vocab_size;
  const int64_t vocab = config_.vocab_size;
  const int64_t size = tp_.size;
  Tensor part = scratch.slice_rows(0, n * local).view({n, local});
  Tensor gathered = scratch.slice_rows(n * local, n * local * (1 + size)).view({size * n, local});
  ops::linear(selected, lm_head_, Tensor(), part);
  Status status = tp_.comm->all_gather(part, gathered);
  if (!status.ok()) return status.with_prefix("forward: tensor-parallel logits all-gather");
  // gathered row r * n + i is rank r's slice of row i: vocab [r * local, (r + 1) * local).
  const size_t bytes = static_cast<size_t>(local) * sizeof(float);
  for (int64_t r = 0; r < size; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      ES_RETURN_IF_ERROR(device_copy(logits.data<float>() + i * vocab + r * local, device_,
                                     gathered.data<float>() + (r * n + i) * local, device_, bytes));
    }
  }
  return Status::Ok();
}

Status LlamaModel::check_batch(const ForwardBatch& batch, const KvCacheRefs& kv,
                               const Tensor& logits) const {
  const size_t num_layers = layers_.size();
  if (!is_vector_i32(batch.token_ids) || !is_vector_i32(batch.positions) ||
      batch.positions.numel() != batch.token_ids.numel()) {
    return invalid_argument("forward: token_ids and positions must be [num_tokens] i32");
  }
  if (batch.token_ids.device() != device_ || batch.positions.device() != device_) {
    return invalid_argument(std::string("forward: batch tensors must be on ") +
                            device_name(device_));
  }
  if (batch.layer_group.size() != num_layers || batch.groups.empty()) {
    return invalid_argument("forward: layer_group has " + std::to_string(batch.layer_group.size()) +
                            " entries for " + std::to_string(num_layers) + " layers");
  }
  for (size_t l = 0; l < num_layers; ++l) {
    int g = batch.layer_group[l];
    if (g < 0 || g >= static_cast<int>(batch.groups.size()) ||
        (l > 0 && g < batch.layer_group[l - 1])) {
      return invalid_argument("forward: layer_group[" + std::to_string(l) +
                              "] = " + std::to_string(g) + " is not a valid, non-decreasing group");
    }
  }
  if (kv.key.size() != num_layers || kv.value.size() != num_layers) {
    return invalid_argument("forward: KV cache has " + std::to_string(kv.key.size()) +
                            " layers, the model " + std::to_string(num_layers));
  }
  const Shape kv_tail = {shard_.num_local_kv_heads, config_.head_dim};
  for (size_t l = 0; l < num_layers; ++l) {
    for (const Tensor* t : {&kv.key[l], &kv.value[l]}) {
      if (t->ndim() != 4 || t->dtype() != DType::kF32 || t->device() != device_ ||
          Shape(t->shape().begin() + 2, t->shape().end()) != kv_tail) {
        return invalid_argument("forward: KV pages of layer " + std::to_string(l) + " are " +
                                t->debug_string() + ", expected [blocks, block_size, " +
                                std::to_string(kv_tail[0]) + ", " + std::to_string(kv_tail[1]) +
                                "] f32");
      }
    }
  }
  const bool subset = batch.logits_token_ids.defined();
  if (subset && !is_vector_i32(batch.logits_token_ids)) {
    return invalid_argument("forward: logits_token_ids must be [num_logit_tokens] i32");
  }
  const int64_t width = subset ? batch.logits_token_ids.numel() : config_.vocab_size;
  if (!is_vector_i32(batch.logits_indices) || logits.ndim() != 2 || logits.dtype() != DType::kF32 ||
      logits.device() != device_ || logits.dim(0) != batch.logits_indices.numel() ||
      logits.dim(1) != width) {
    return invalid_argument("forward: logits must be [num_logits, " + std::to_string(width) +
                            "] f32, got " + logits.debug_string());
  }
  if (subset) {
    ES_ASSIGN_OR_RETURN(std::vector<int32_t> tokens, to_host_i32(batch.logits_token_ids));
    for (int32_t t : tokens) {
      if (t < 0 || t >= config_.vocab_size) {
        return invalid_argument("forward: logit token " + std::to_string(t) +
                                " outside the vocabulary");
      }
    }
  }
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> ids, to_host_i32(batch.token_ids));
  for (int32_t id : ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return invalid_argument("forward: token id " + std::to_string(id) +
                              " outside the vocabulary [0, " + std::to_string(config_.vocab_size) +
                              ")");
    }
  }
  return Status::Ok();
}

Status LlamaModel::forward(const ForwardBatch& batch, const KvCacheRefs& kv, Tensor& logits) {
  ES_RETURN_IF_ERROR(check_batch(batch, kv, logits));
  const ModelConfig& c = config_;
  const int64_t num_tokens = batch.token_ids.numel();
  const int64_t hidden = c.hidden_size;
  // This rank's share (everything without tensor parallelism).
  const int64_t num_heads = shard_.num_local_heads;
  const int64_t num_kv_heads = shard_.num_local_kv_heads;
  const int64_t head_dim = c.head_dim;
  const int64_t inter = shard_.local_intermediate_size;
  const int64_t num_logits = batch.logits_indices.numel();
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  // Every buffer sized for all tokens; a group with fewer tokens uses the leading rows.
  const int64_t total = num_tokens * (4 * hidden + 2 * num_heads * head_dim +
                                      2 * num_kv_heads * head_dim + 3 * inter) +
                        num_logits * hidden + logits_scratch_size(num_logits);
  ES_ASSIGN_OR_RETURN(Tensor arena_storage,
                      Tensor::empty({std::max<int64_t>(total, 1)}, DType::kF32, device_));
  Arena arena(std::move(arena_storage));
  Tensor residual_buf = arena.take({num_tokens, hidden});
  Tensor spare_buf = arena.take({num_tokens, hidden});  // gather target when the group changes
  Tensor normed_buf = arena.take({num_tokens, hidden});
  Tensor delta_buf = arena.take({num_tokens, hidden});  // attention or MLP output
  Tensor q_buf = arena.take({num_tokens, num_heads * head_dim});
  Tensor attn_buf = arena.take({num_tokens, num_heads * head_dim});
  Tensor k_buf = arena.take({num_tokens, num_kv_heads * head_dim});
  Tensor v_buf = arena.take({num_tokens, num_kv_heads * head_dim});
  Tensor gate_up_buf = arena.take({num_tokens, 2 * inter});
  Tensor act_buf = arena.take({num_tokens, inter});
  Tensor selected = arena.take({num_logits, hidden});
  Tensor logits_scratch = arena.take({logits_scratch_size(num_logits)});

  ES_RETURN_IF_ERROR(embed(batch.token_ids, residual_buf));

  // The rows computed now, as original batch rows (empty = all of them, in order), and their
  // positions.
  std::vector<int32_t> current_rows;
  bool all_rows = true;
  int64_t n = num_tokens;
  Tensor positions = batch.positions;
  int current_group = -1;
  bool pending_add = false;  // residual still lacks delta (the last MLP output)

  for (size_t l = 0; l < layers_.size(); ++l) {
    const int g = batch.layer_group[l];
    const AttentionMetadata& group = batch.groups[static_cast<size_t>(g)];
    if (g != current_group && group.token_indices.defined()) {
      // Narrow to the group's rows: token_indices name original batch rows, which must all be
      // rows the previous group computed.
      if (!is_vector_i32(group.token_indices)) {
        return invalid_argument("forward: group " + std::to_string(g) +
                                " token_indices must be [num_group_tokens] i32");
      }
      ES_ASSIGN_OR_RETURN(std::vector<int32_t> rows, to_host_i32(group.token_indices));
      std::vector<int32_t> local(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) {
        if (i > 0 && rows[i] <= rows[i - 1]) {
          return invalid_argument("forward: group " + std::to_string(g) +
                                  " token_indices are not strictly ascending");
        }
        if (all_rows) {
          if (rows[i] < 0 || rows[i] >= num_tokens) {
            return invalid_argument("forward: group " + std::to_string(g) + " token index " +
                                    std::to_string(rows[i]) + " outside the batch");
          }
          local[i] = rows[i];
        } else {
          auto it = std::lower_bound(current_rows.begin(), current_rows.end(), rows[i]);
          if (it == current_rows.end() || *it != rows[i]) {
            return invalid_argument("forward: group " + std::to_string(g) + " token index " +
                                    std::to_string(rows[i]) +
                                    " is not computed by the group before");
          }
          local[i] = static_cast<int32_t>(it - current_rows.begin());
        }
      }
      if (pending_add) {
        Tensor residual = residual_buf.slice_rows(0, n);
        ops::add_inplace(residual, delta_buf.slice_rows(0, n));
        pending_add = false;
      }
      const int64_t new_n = static_cast<int64_t>(rows.size());
      ES_ASSIGN_OR_RETURN(Tensor local_dev, from_host_i32(local, device_));
      Tensor gathered = spare_buf.slice_rows(0, new_n);
      ops::gather_rows(residual_buf.slice_rows(0, n), local_dev, gathered);
      std::swap(residual_buf, spare_buf);
      ES_ASSIGN_OR_RETURN(std::vector<int32_t> all_positions, to_host_i32(batch.positions));
      std::vector<int32_t> new_positions(rows.size());
      for (size_t i = 0; i < rows.size(); ++i) new_positions[i] = all_positions[rows[i]];
      ES_ASSIGN_OR_RETURN(positions, from_host_i32(new_positions, device_));
      current_rows = std::move(rows);
      all_rows = false;
      n = new_n;
    } else if (g != current_group && !all_rows) {
      return invalid_argument("forward: group " + std::to_string(g) +
                              " takes all rows but an earlier group narrowed the batch");
    }
    current_group = g;
    if (!is_vector_i32(group.slot_mapping) || group.slot_mapping.numel() != n) {
      return invalid_argument("forward: group " + std::to_string(g) + " slot_mapping must be [" +
                              std::to_string(n) + "] i32");
    }

    const Layer& layer = layers_[l];
    Tensor residual = residual_buf.slice_rows(0, n);
    Tensor normed = normed_buf.slice_rows(0, n);
    Tensor delta = delta_buf.slice_rows(0, n);
    if (pending_add) {
      ops::add_rms_norm(residual, delta, layer.input_norm, eps, normed);
    } else {
      ops::rms_norm(residual, layer.input_norm, eps, normed);
    }

    Tensor q = q_buf.slice_rows(0, n);
    Tensor k = k_buf.slice_rows(0, n);
    Tensor v = v_buf.slice_rows(0, n);
    ops::linear(normed, layer.q_proj, layer.q_bias, q);
    ops::linear(normed, layer.k_proj, layer.k_bias, k);
    ops::linear(normed, layer.v_proj, layer.v_bias, v);
    Tensor q3 = q.view({n, num_heads, head_dim});
    Tensor k3 = k.view({n, num_kv_heads, head_dim});
    Tensor v3 = v.view({n, num_kv_heads, head_dim});
    ops::rope(q3, k3, positions, inv_freq_);
    Tensor key_cache = kv.key[l];
    Tensor value_cache = kv.value[l];
    ops::reshape_and_cache(k3, v3, key_cache, value_cache, group.slot_mapping);

    ops::PagedAttentionArgs args;
    args.query = q3;
    args.key_cache = key_cache;
    args.value_cache = value_cache;
    args.block_tables = group.block_tables;
    args.seq_lens = group.seq_lens;
    args.query_start_loc = group.query_start_loc;
    args.seq_prefix = group.seq_prefix;
    args.prefix_lens = group.prefix_lens;
    args.query_parents = group.query_parents;
    args.scale = scale;
    Tensor attn = attn_buf.slice_rows(0, n).view({n, num_heads, head_dim});
    ops::paged_attention(args, attn);
    ops::linear(attn.view({n, num_heads * head_dim}), layer.o_proj, layer.o_bias, delta);
    ES_RETURN_IF_ERROR(all_reduce(delta));

    ops::add_rms_norm(residual, delta, layer.post_norm, eps, normed);
    Tensor gate_up = gate_up_buf.slice_rows(0, n);
    Tensor act = act_buf.slice_rows(0, n);
    ops::linear(normed, layer.gate_up_proj, Tensor(), gate_up);
    ops::silu_and_mul(gate_up, act);
    ops::linear(act, layer.down_proj, Tensor(), delta);
    ES_RETURN_IF_ERROR(all_reduce(delta));
    pending_add = true;
  }

  Tensor residual = residual_buf.slice_rows(0, n);
  Tensor normed = normed_buf.slice_rows(0, n);
  if (pending_add) {
    ops::add_rms_norm(residual, delta_buf.slice_rows(0, n), final_norm_, eps, normed);
  } else {
    ops::rms_norm(residual, final_norm_, eps, normed);
  }
  ES_ASSIGN_OR_RETURN(std::vector<int32_t> wanted, to_host_i32(batch.logits_indices));
  for (int32_t row : wanted) {
    if (row < 0 || row >= n) {
      return invalid_argument("forward: logits index " + std::to_string(row) + " outside the " +
                              std::to_string(n) + " rows of the last group");
    }
  }
  if (num_logits == 0) return Status::Ok();
  ops::gather_rows(normed, batch.logits_indices, selected);
  return compute_logits(selected, batch.logits_token_ids, logits_scratch, logits);
}

}  // namespace earnserve
