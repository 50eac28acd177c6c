#include "model/fixed_slot_runner.h"

#include <algorithm>
#include <string>

namespace earnserve {
namespace {

StatusOr<Tensor> to_device(std::vector<int32_t> values, const Shape& shape, Device device) {
  Tensor host = Tensor::from_vector(values, shape);
  if (device == Device::kCPU) return host;
  return host.to(device);
}

}  // namespace

FixedSlotRunner::FixedSlotRunner(CausalLM& model, int max_seqs, int max_tokens_per_seq,
                                 int block_size)
    : model_(model),
      max_seqs_(max_seqs),
      max_tokens_per_seq_(max_tokens_per_seq),
      block_size_(block_size),
      blocks_per_seq_((max_tokens_per_seq + block_size - 1) / block_size),
      seq_lens_(static_cast<size_t>(max_seqs), 0) {
  ES_CHECK(max_seqs > 0 && max_tokens_per_seq > 0 && block_size > 0);
  const ModelConfig& c = model.config();
  const Shape pages = {static_cast<int64_t>(max_seqs) * blocks_per_seq_, block_size,
                       model.num_local_kv_heads(), c.head_dim};
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (std::vector<Tensor>* side : {&kv_.key, &kv_.value}) {
      StatusOr<Tensor> t = Tensor::zeros(pages, DType::kF32, model.device());
      ES_CHECK(t.ok()) << "KV pages: " << t.status().to_string();
      side->push_back(std::move(t).value());
    }
  }
}

void FixedSlotRunner::reset(int seq) {
  ES_CHECK(0 <= seq && seq < max_seqs_);
  seq_lens_[static_cast<size_t>(seq)] = 0;
}

StatusOr<Tensor> FixedSlotRunner::run(std::span<const SeqChunk> chunks, bool all_logits) {
  if (chunks.empty()) return invalid_argument("FixedSlotRunner: empty step");
  std::vector<int32_t> token_ids, positions, slots, block_tables, seq_lens, query_start_loc{0},
      logits_indices;
  std::vector<bool> seen(static_cast<size_t>(max_seqs_), false);
  for (const SeqChunk& chunk : chunks) {
    if (chunk.seq < 0 || chunk.seq >= max_seqs_) {
      return invalid_argument("FixedSlotRunner: sequence " + std::to_string(chunk.seq) +
                              " outside [0, " + std::to_string(max_seqs_) + ")");
    }
    if (seen[static_cast<size_t>(chunk.seq)]) {
      return invalid_argument("FixedSlotRunner: sequence " + std::to_string(chunk.seq) +
                              " appears twice in one step");
    }
    seen[static_cast<size_t>(chunk.seq)] = true;
    if (chunk.tokens.empty()) return invalid_argument("FixedSlotRunner: empty chunk");
    const int start = seq_lens_[static_cast<size_t>(chunk.seq)];
    const int64_t end = start + static_cast<int64_t>(chunk.tokens.size());
    if (end > max_tokens_per_seq_) {
      return out_of_range("FixedSlotRunner: sequence " + std::to_string(chunk.seq) +
                          " would hold " + std::to_string(end) +
                          " tokens, more than its capacity " + std::to_string(max_tokens_per_seq_));
    }
    const int first_block = chunk.seq * blocks_per_seq_;
    for (size_t i = 0; i < chunk.tokens.size(); ++i) {
      const int pos = start + static_cast<int>(i);
      if (all_logits || i + 1 == chunk.tokens.size()) {
        logits_indices.push_back(static_cast<int32_t>(token_ids.size()));
      }
      token_ids.push_back(chunk.tokens[i]);
      positions.push_back(pos);
      slots.push_back((first_block + pos / block_size_) * block_size_ + pos % block_size_);
    }
    for (int b = 0; b < blocks_per_seq_; ++b) block_tables.push_back(first_block + b);
    seq_lens.push_back(static_cast<int32_t>(end));
    query_start_loc.push_back(static_cast<int32_t>(token_ids.size()));
  }
  const Device device = model_.device();
  const int64_t num_tokens = static_cast<int64_t>(token_ids.size());
  const int64_t num_seqs = static_cast<int64_t>(chunks.size());
  ForwardBatch batch;
  AttentionMetadata group;
  ES_ASSIGN_OR_RETURN(batch.token_ids, to_device(std::move(token_ids), {num_tokens}, device));
  ES_ASSIGN_OR_RETURN(batch.positions, to_device(std::move(positions), {num_tokens}, device));
  ES_ASSIGN_OR_RETURN(group.slot_mapping, to_device(std::move(slots), {num_tokens}, device));
  ES_ASSIGN_OR_RETURN(group.block_tables,
                      to_device(std::move(block_tables), {num_seqs, blocks_per_seq_}, device));
  ES_ASSIGN_OR_RETURN(group.seq_lens, to_device(std::move(seq_lens), {num_seqs}, device));
  ES_ASSIGN_OR_RETURN(group.query_start_loc,
                      to_device(std::move(query_start_loc), {num_seqs + 1}, device));
  const int64_t num_logits = static_cast<int64_t>(logits_indices.size());
  ES_ASSIGN_OR_RETURN(batch.logits_indices,
                      to_device(std::move(logits_indices), {num_logits}, device));
  batch.groups.push_back(std::move(group));
  batch.layer_group.assign(static_cast<size_t>(model_.config().num_hidden_layers), 0);

  ES_ASSIGN_OR_RETURN(Tensor logits,
                      Tensor::empty({num_logits, model_.config().vocab_size}, DType::kF32, device));
  ES_RETURN_IF_ERROR(model_.forward(batch, kv_, logits));
  for (const SeqChunk& chunk : chunks) {
    seq_lens_[static_cast<size_t>(chunk.seq)] += static_cast<int>(chunk.tokens.size());
  }
  if (device == Device::kCPU) return logits;
  return logits.to(Device::kCPU);
}

StatusOr<std::vector<std::vector<float>>> FixedSlotRunner::step(std::span<const SeqChunk> chunks) {
  ES_ASSIGN_OR_RETURN(Tensor logits, run(chunks, /*all_logits=*/false));
  const int64_t vocab = logits.dim(1);
  std::vector<std::vector<float>> out;
  const float* data = logits.data<float>();
  for (int64_t r = 0; r < logits.dim(0); ++r) {
    out.emplace_back(data + r * vocab, data + (r + 1) * vocab);
  }
  return out;
}

StatusOr<std::vector<float>> FixedSlotRunner::prefill(int seq, std::span<const int32_t> tokens) {
  const SeqChunk chunk{seq, tokens};
  ES_ASSIGN_OR_RETURN(std::vector<std::vector<float>> rows, step({&chunk, 1}));
  return std::move(rows[0]);
}

StatusOr<std::vector<float>> FixedSlotRunner::decode(int seq, int32_t token) {
  return prefill(seq, {&token, 1});
}

StatusOr<Tensor> FixedSlotRunner::prefill_all_logits(int seq, std::span<const int32_t> tokens) {
  const SeqChunk chunk{seq, tokens};
  return run({&chunk, 1}, /*all_logits=*/true);
}

StatusOr<std::vector<std::vector<float>>> FixedSlotRunner::run_token_by_token(
    int seq, std::span<const int32_t> tokens) {
  std::vector<std::vector<float>> out;
  out.reserve(tokens.size());
  for (int32_t token : tokens) {
    ES_ASSIGN_OR_RETURN(std::vector<float> logits, decode(seq, token));
    out.push_back(std::move(logits));
  }
  return out;
}

StatusOr<std::vector<int32_t>> FixedSlotRunner::generate_greedy(int seq,
                                                                std::span<const int32_t> prompt,
                                                                int max_new_tokens,
                                                                std::span<const int32_t> stop_ids) {
  std::vector<int32_t> out;
  if (max_new_tokens <= 0) return out;
  ES_ASSIGN_OR_RETURN(std::vector<float> logits, prefill(seq, prompt));
  while (true) {
    // First maximum on ties, as torch.argmax.
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    if (static_cast<int>(out.size()) == max_new_tokens ||
        std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      return out;
    }
    ES_ASSIGN_OR_RETURN(logits, decode(seq, next));
  }
}

}  // namespace earnserve
