#include "model/tensor_parallel.h"

#include <string>

#include "model/parallel/communicator.h"

namespace earnserve {
namespace {

Status not_divisible(const char* field, int64_t value, int size, const std::string& why = "") {
  return invalid_argument(std::string("field '") + field + "' (" + std::to_string(value) +
                          ") is not divisible by the tensor-parallel size " + std::to_string(size) +
                          why);
}

}  // namespace

StatusOr<TensorParallelShard> plan_tensor_parallel(const ModelConfig& config,
                                                   const TensorParallel& tp) {
  if (tp.size < 1) {
    return invalid_argument("tensor-parallel size must be at least 1, got " +
                            std::to_string(tp.size));
  }
  if (tp.rank < 0 || tp.rank >= tp.size) {
    return invalid_argument("tensor-parallel rank " + std::to_string(tp.rank) + " outside [0, " +
                            std::to_string(tp.size) + ")");
  }
  const int64_t size = tp.size;
  const int64_t rank = tp.rank;
  const int64_t num_heads = config.num_attention_heads;
  const int64_t num_kv_heads = config.num_key_value_heads;
  if (num_heads % size != 0) return not_divisible("num_attention_heads", num_heads, tp.size);
  if (num_kv_heads >= size ? num_kv_heads % size != 0 : size % num_kv_heads != 0) {
    return invalid_argument("field 'num_key_value_heads' (" + std::to_string(num_kv_heads) +
                            ") and the tensor-parallel size " + std::to_string(tp.size) +
                            ": one must divide the other");
  }
  if (config.intermediate_size % size != 0) {
    return not_divisible("intermediate_size", config.intermediate_size, tp.size);
  }
  if (tp.vocab_parallel_embeddings && config.vocab_size % size != 0) {
    return not_divisible("vocab_size", config.vocab_size, tp.size, " (vocab_parallel_embeddings)");
  }
  if (size > 1) {
    if (tp.comm == nullptr) {
      return invalid_argument("tensor-parallel size " + std::to_string(tp.size) +
                              " needs a communicator");
    }
    if (tp.comm->world_size() != tp.size || tp.comm->rank() != tp.rank) {
      return invalid_argument("communicator is rank " + std::to_string(tp.comm->rank()) + " of " +
                              std::to_string(tp.comm->world_size()) + ", tensor parallel says " +
                              std::to_string(tp.rank) + " of " + std::to_string(tp.size));
    }
  }

  TensorParallelShard shard;
  shard.num_local_heads = num_heads / size;
  shard.head_begin = rank * shard.num_local_heads;
  // Both cases in one formula: with KV < tp, r * KV / tp is the KV head of rank r's query heads.
  shard.num_local_kv_heads = num_kv_heads >= size ? num_kv_heads / size : 1;
  shard.kv_head_begin = rank * num_kv_heads / size;
  shard.local_intermediate_size = config.intermediate_size / size;
  shard.intermediate_begin = rank * shard.local_intermediate_size;
  if (tp.vocab_parallel_embeddings) {
    shard.local_vocab_size = config.vocab_size / size;
    shard.vocab_begin = rank * shard.local_vocab_size;
  } else {
    shard.local_vocab_size = config.vocab_size;
  }
  return shard;
}

}  // namespace earnserve
