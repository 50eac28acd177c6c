// The messages rank 0 and its tensor-parallel workers exchange over the control channel
// (model/parallel/control_channel.h frames and versions them), with their binary encodings.
//
// Conversation, per worker:
//   worker -> rank 0  kHello   {rank, world_size}
//   rank 0 -> worker  kWelcome {}                      or kError {message}, then rank 0 closes
//   (both join the communicator, load their shard and size their KV pages)
//   worker -> rank 0  kReady   {model shape, KV blocks per group}     or kError {message}
//   rank 0 -> worker  kStep    {ForwardBatch, block copies}  once per engine step
//   rank 0 -> worker  kShutdown {}
// A worker that fails sends kError {message} if it still can, then exits.
//
// Payload integers are little-endian. A tensor is: u8 defined; if defined, u8 ndim (<= 4), i64
// dims, then the i32 elements (every ForwardBatch tensor is i32). Decoders check every length
// against the payload and reject trailing bytes: a malformed payload is DATA_LOSS naming the
// message, never a crash. Stateless functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cache/block_copy.h"
#include "core/status.h"
#include "model/forward_batch.h"
#include "model/parallel/control_channel.h"

namespace earnserve {

enum class TpMessageType : uint16_t {
  kHello = 1,
  kWelcome = 2,
  kReady = 3,
  kStep = 4,
  kShutdown = 5,
  kError = 6,
};

const char* tp_message_name(uint16_t type);

struct TpHello {
  int32_t rank = 0;
  int32_t world_size = 0;
};

// What a worker loaded; rank 0 checks it equals its own, so that block ids mean the same pages
// on every rank.
struct TpReady {
  int64_t num_hidden_layers = 0;
  int64_t vocab_size = 0;
  int64_t head_dim = 0;
  int64_t num_local_kv_heads = 0;
  int32_t block_size = 0;
  std::vector<int32_t> num_blocks_per_group;
  std::vector<int32_t> block_size_per_group;  // tokens per block in each group's pages

  bool operator==(const TpReady&) const = default;
};

// One engine step: the model inputs and the copy-on-write copies to run before them.
struct TpStep {
  ForwardBatch batch;  // CPU tensors after decoding
  std::vector<BlockCopy> copies;
};

ControlMessage encode_tp_hello(const TpHello& hello);
ControlMessage encode_tp_ready(const TpReady& ready);
// `batch` may live on any device; its tensors are copied to the host to be encoded.
StatusOr<ControlMessage> encode_tp_step(const ForwardBatch& batch,
                                        const std::vector<BlockCopy>& copies);
ControlMessage encode_tp_error(const std::string& message);
ControlMessage encode_tp_empty(TpMessageType type);

// Each decoder first checks the message type; a kError message decodes to UNAVAILABLE carrying
// the sender's message.
StatusOr<TpHello> decode_tp_hello(const ControlMessage& message);
StatusOr<TpReady> decode_tp_ready(const ControlMessage& message);
StatusOr<TpStep> decode_tp_step(const ControlMessage& message);
Status decode_tp_empty(const ControlMessage& message, TpMessageType type);

// "layers 4, vocab 128, head_dim 8, local KV heads 1, block size 16, KV blocks [32]".
std::string describe_tp_ready(const TpReady& ready);

}  // namespace earnserve
