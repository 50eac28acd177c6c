#include "scheduler/parallel/tp_messages.h"

#include <cstring>

namespace earnserve {
namespace {

constexpr int kMaxTensorDims = 4;
// Far above any real model; a larger count is a corrupt payload.
constexpr uint32_t kMaxGroups = 64;
constexpr uint32_t kMaxLayers = 1 << 16;

class Writer {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { put(v, 4); }
  void i32(int32_t v) { put(static_cast<uint32_t>(v), 4); }
  void i64(int64_t v) { put(static_cast<uint64_t>(v), 8); }
  // A count, then the values.
  void i32s(const std::vector<int32_t>& values) {
    u32(static_cast<uint32_t>(values.size()));
    for (int32_t v : values) i32(v);
  }
  void bytes(const void* data, size_t size) {
    const char* p = static_cast<const char*>(data);
    out_.insert(out_.end(), p, p + size);
  }
  std::vector<char> take() { return std::move(out_); }

 private:
  void put(uint64_t v, int size) {
    for (int i = 0; i < size; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::vector<char> out_;
};

class Reader {
 public:
  Reader(const std::vector<char>& in, const char* what) : in_(in), what_(what) {}

  Status u8(uint8_t& v) {
    uint64_t x = 0;
    ES_RETURN_IF_ERROR(get(x, 1));
    v = static_cast<uint8_t>(x);
    return Status::Ok();
  }
  Status u32(uint32_t& v) {
    uint64_t x = 0;
    ES_RETURN_IF_ERROR(get(x, 4));
    v = static_cast<uint32_t>(x);
    return Status::Ok();
  }
  Status i32(int32_t& v) {
    uint64_t x = 0;
    ES_RETURN_IF_ERROR(get(x, 4));
    v = static_cast<int32_t>(static_cast<uint32_t>(x));
    return Status::Ok();
  }
  Status i64(int64_t& v) {
    uint64_t x = 0;
    ES_RETURN_IF_ERROR(get(x, 8));
    v = static_cast<int64_t>(x);
    return Status::Ok();
  }
  // Writer::i32s's list of at most `max` values; `what` names them in the error.
  Status i32s(std::vector<int32_t>& values, uint32_t max, const char* what) {
    uint32_t count = 0;
    ES_RETURN_IF_ERROR(u32(count));
    if (count > max) return corrupt(std::to_string(count) + " " + what);
    values.resize(count);
    for (int32_t& v : values) ES_RETURN_IF_ERROR(i32(v));
    return Status::Ok();
  }
  Status bytes(void* out, size_t size) {
    if (in_.size() - pos_ < size) return truncated();
    std::memcpy(out, in_.data() + pos_, size);
    pos_ += size;
    return Status::Ok();
  }
  size_t remaining() const { return in_.size() - pos_; }
  Status finish() const {
    if (pos_ != in_.size()) {
      return corrupt(std::to_string(in_.size() - pos_) + " unexpected trailing bytes");
    }
    return Status::Ok();
  }
  Status corrupt(const std::string& problem) const {
    return data_loss(std::string("tensor-parallel ") + what_ + " message: " + problem);
  }

 private:
  Status truncated() const { return corrupt("truncated payload"); }
  Status get(uint64_t& v, int size) {
    if (in_.size() - pos_ < static_cast<size_t>(size)) return truncated();
    v = 0;
    for (int i = 0; i < size; ++i) {
      v |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += static_cast<size_t>(size);
    return Status::Ok();
  }

  const std::vector<char>& in_;
  const char* what_;
  size_t pos_ = 0;
};

Status write_tensor(Writer& w, const Tensor& t) {
  if (!t.defined()) {
    w.u8(0);
    return Status::Ok();
  }
  if (t.dtype() != DType::kI32) {
    return invalid_argument(std::string("tensor-parallel step: model inputs must be i32, got ") +
                            dtype_name(t.dtype()));
  }
  if (t.ndim() > kMaxTensorDims) {
    return invalid_argument("tensor-parallel step: a model input has " + std::to_string(t.ndim()) +
                            " dimensions");
  }
  Tensor host = t;
  if (!t.is_cpu()) {
    ES_ASSIGN_OR_RETURN(host, t.to(Device::kCPU));
  }
  w.u8(1);
  w.u8(static_cast<uint8_t>(host.ndim()));
  for (int64_t d : host.shape()) w.i64(d);
  w.bytes(host.raw_data(), host.nbytes());
  return Status::Ok();
}

Status read_tensor(Reader& r, Tensor& out) {
  uint8_t defined = 0;
  ES_RETURN_IF_ERROR(r.u8(defined));
  if (defined == 0) {
    out = Tensor();
    return Status::Ok();
  }
  if (defined != 1) return r.corrupt("bad tensor marker " + std::to_string(defined));
  uint8_t ndim = 0;
  ES_RETURN_IF_ERROR(r.u8(ndim));
  if (ndim > kMaxTensorDims) return r.corrupt("a tensor with " + std::to_string(ndim) + " dims");
  Shape shape(ndim);
  uint64_t numel = 1;
  for (int64_t& d : shape) {
    ES_RETURN_IF_ERROR(r.i64(d));
    if (d < 0 || static_cast<uint64_t>(d) > r.remaining()) {
      return r.corrupt("a tensor dimension of " + std::to_string(d));
    }
    numel *= static_cast<uint64_t>(d);
    if (numel * sizeof(int32_t) > r.remaining()) return r.corrupt("truncated tensor data");
  }
  out = Tensor::cpu(shape, DType::kI32);
  return r.bytes(out.raw_data(), out.nbytes());
}

// The sender's error, or an error naming the message we got instead of `expected`.
Status check_type(const ControlMessage& message, TpMessageType expected) {
  if (message.type == static_cast<uint16_t>(expected)) return Status::Ok();
  if (message.type == static_cast<uint16_t>(TpMessageType::kError)) {
    return unavailable(std::string(message.payload.begin(), message.payload.end()));
  }
  return data_loss(std::string("tensor-parallel control: expected a ") +
                   tp_message_name(static_cast<uint16_t>(expected)) + " message, got " +
                   tp_message_name(message.type));
}

}  // namespace

const char* tp_message_name(uint16_t type) {
  switch (static_cast<TpMessageType>(type)) {
    case TpMessageType::kHello:
      return "hello";
    case TpMessageType::kWelcome:
      return "welcome";
    case TpMessageType::kReady:
      return "ready";
    case TpMessageType::kStep:
      return "step";
    case TpMessageType::kShutdown:
      return "shutdown";
    case TpMessageType::kError:
      return "error";
  }
  return "unknown";
}

ControlMessage encode_tp_hello(const TpHello& hello) {
  Writer w;
  w.i32(hello.rank);
  w.i32(hello.world_size);
  return {static_cast<uint16_t>(TpMessageType::kHello), w.take()};
}

ControlMessage encode_tp_ready(const TpReady& ready) {
  Writer w;
  w.i64(ready.num_hidden_layers);
  w.i64(ready.vocab_size);
  w.i64(ready.head_dim);
  w.i64(ready.num_local_kv_heads);
  w.i32(ready.block_size);
  w.i32s(ready.num_blocks_per_group);
  w.i32s(ready.block_size_per_group);
  return {static_cast<uint16_t>(TpMessageType::kReady), w.take()};
}

StatusOr<ControlMessage> encode_tp_step(const ForwardBatch& batch,
                                        const std::vector<BlockCopy>& copies) {
  Writer w;
  ES_RETURN_IF_ERROR(write_tensor(w, batch.token_ids));
  ES_RETURN_IF_ERROR(write_tensor(w, batch.positions));
  w.u32(static_cast<uint32_t>(batch.groups.size()));
  for (const AttentionMetadata& g : batch.groups) {
    for (const Tensor* t : {&g.token_indices, &g.slot_mapping, &g.block_tables, &g.seq_lens,
                            &g.query_start_loc, &g.seq_prefix, &g.prefix_lens, &g.query_parents}) {
      ES_RETURN_IF_ERROR(write_tensor(w, *t));
    }
  }
  w.u32(static_cast<uint32_t>(batch.layer_group.size()));
  for (int g : batch.layer_group) w.i32(g);
  ES_RETURN_IF_ERROR(write_tensor(w, batch.logits_indices));
  w.u32(static_cast<uint32_t>(copies.size()));
  for (const BlockCopy& c : copies) {
    w.i32(c.group);
    w.i32(c.src_block);
    w.i32(c.dst_block);
  }
  return ControlMessage{static_cast<uint16_t>(TpMessageType::kStep), w.take()};
}

ControlMessage encode_tp_error(const std::string& message) {
  return {static_cast<uint16_t>(TpMessageType::kError),
          std::vector<char>(message.begin(), message.end())};
}

ControlMessage encode_tp_empty(TpMessageType type) { return {static_cast<uint16_t>(type), {}}; }

StatusOr<TpHello> decode_tp_hello(const ControlMessage& message) {
  ES_RETURN_IF_ERROR(check_type(message, TpMessageType::kHello));
  Reader r(message.payload, "hello");
  TpHello hello;
  ES_RETURN_IF_ERROR(r.i32(hello.rank));
  ES_RETURN_IF_ERROR(r.i32(hello.world_size));
  ES_RETURN_IF_ERROR(r.finish());
  return hello;
}

StatusOr<TpReady> decode_tp_ready(const ControlMessage& message) {
  ES_RETURN_IF_ERROR(check_type(message, TpMessageType::kReady));
  Reader r(message.payload, "ready");
  TpReady ready;
  ES_RETURN_IF_ERROR(r.i64(ready.num_hidden_layers));
  ES_RETURN_IF_ERROR(r.i64(ready.vocab_size));
  ES_RETURN_IF_ERROR(r.i64(ready.head_dim));
  ES_RETURN_IF_ERROR(r.i64(ready.num_local_kv_heads));
  ES_RETURN_IF_ERROR(r.i32(ready.block_size));
  ES_RETURN_IF_ERROR(r.i32s(ready.num_blocks_per_group, kMaxGroups, "KV groups"));
  ES_RETURN_IF_ERROR(r.i32s(ready.block_size_per_group, kMaxGroups, "KV block sizes"));
  ES_RETURN_IF_ERROR(r.finish());
  return ready;
}

StatusOr<TpStep> decode_tp_step(const ControlMessage& message) {
  ES_RETURN_IF_ERROR(check_type(message, TpMessageType::kStep));
  Reader r(message.payload, "step");
  TpStep step;
  ForwardBatch& b = step.batch;
  ES_RETURN_IF_ERROR(read_tensor(r, b.token_ids));
  ES_RETURN_IF_ERROR(read_tensor(r, b.positions));
  uint32_t num_groups = 0;
  ES_RETURN_IF_ERROR(r.u32(num_groups));
  if (num_groups == 0 || num_groups > kMaxGroups) {
    return r.corrupt(std::to_string(num_groups) + " KV groups");
  }
  b.groups.resize(num_groups);
  for (AttentionMetadata& g : b.groups) {
    for (Tensor* t : {&g.token_indices, &g.slot_mapping, &g.block_tables, &g.seq_lens,
                      &g.query_start_loc, &g.seq_prefix, &g.prefix_lens, &g.query_parents}) {
      ES_RETURN_IF_ERROR(read_tensor(r, *t));
    }
  }
  uint32_t num_layers = 0;
  ES_RETURN_IF_ERROR(r.u32(num_layers));
  if (num_layers > kMaxLayers) return r.corrupt(std::to_string(num_layers) + " layers");
  b.layer_group.resize(num_layers);
  for (int& g : b.layer_group) {
    int32_t v = 0;
    ES_RETURN_IF_ERROR(r.i32(v));
    if (v < 0 || static_cast<uint32_t>(v) >= num_groups) {
      return r.corrupt("layer group " + std::to_string(v) + " outside [0, " +
                       std::to_string(num_groups) + ")");
    }
    g = v;
  }
  ES_RETURN_IF_ERROR(read_tensor(r, b.logits_indices));
  uint32_t num_copies = 0;
  ES_RETURN_IF_ERROR(r.u32(num_copies));
  if (static_cast<uint64_t>(num_copies) * 12 > r.remaining()) return r.corrupt("truncated copies");
  step.copies.resize(num_copies);
  for (BlockCopy& c : step.copies) {
    int32_t group = 0, src = 0, dst = 0;
    ES_RETURN_IF_ERROR(r.i32(group));
    ES_RETURN_IF_ERROR(r.i32(src));
    ES_RETURN_IF_ERROR(r.i32(dst));
    if (group < 0 || static_cast<uint32_t>(group) >= num_groups || src < 0 || dst < 0) {
      return r.corrupt("bad block copy (group " + std::to_string(group) + ", " +
                       std::to_string(src) + " -> " + std::to_string(dst) + ")");
    }
    c = BlockCopy{group, src, dst};
  }
  ES_RETURN_IF_ERROR(r.finish());
  if (!b.token_ids.defined() || !b.positions.defined() || !b.logits_indices.defined()) {
    return r.corrupt("token ids, positions or logits indices are missing");
  }
  return step;
}

Status decode_tp_empty(const ControlMessage& message, TpMessageType type) {
  ES_RETURN_IF_ERROR(check_type(message, type));
  if (!message.payload.empty()) {
    return data_loss(std::string("tensor-parallel ") + tp_message_name(message.type) +
                     " message: unexpected payload");
  }
  return Status::Ok();
}

std::string describe_tp_ready(const TpReady& ready) {
  std::string blocks, sizes;
  for (int32_t n : ready.num_blocks_per_group) {
    blocks += (blocks.empty() ? "" : ", ") + std::to_string(n);
  }
  for (int32_t n : ready.block_size_per_group) {
    sizes += (sizes.empty() ? "" : ", ") + std::to_string(n);
  }
  return "layers " + std::to_string(ready.num_hidden_layers) + ", vocab " +
         std::to_string(ready.vocab_size) + ", head_dim " + std::to_string(ready.head_dim) +
         ", local KV heads " + std::to_string(ready.num_local_kv_heads) + ", block size " +
         std::to_string(ready.block_size) + ", KV blocks [" + blocks + "]" +
         (sizes.empty() ? "" : ", block sizes [" + sizes + "]");
}

}  // namespace earnserve
