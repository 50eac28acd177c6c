// Embedding lookup on the GPU: one thread block per token copies (and widens) one table row.
// gather_rows.cu runs the same kernel for f32 row gathers.
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {
namespace {

constexpr int kThreads = 256;

// table: [vocab_size, hidden] W, ids: [num_tokens], out: [num_tokens, hidden]
template <typename W>
__global__ void embedding_kernel(const W* __restrict__ table, const int32_t* __restrict__ ids,
                                 float* __restrict__ out, int64_t vocab_size, int64_t hidden) {
  const int64_t token = blockIdx.x;
  const int32_t id = ids[token];
  float* dst = out + token * hidden;
  if (id < 0 || id >= vocab_size) {
    for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = 0.0f;
    return;
  }
  const W* src = table + static_cast<int64_t>(id) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = load_f32(src, i);
}

}  // namespace

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  const int64_t num_tokens = ids.numel();
  const int64_t vocab_size = table.dim(0);
  const int64_t hidden = table.dim(1);
  if (num_tokens == 0 || hidden == 0) return;
  dispatch_weight_dtype(table.dtype(), [&](auto tag) {
    using W = std::remove_const_t<std::remove_pointer_t<decltype(tag)>>;
    embedding_kernel<W><<<static_cast<unsigned>(num_tokens), kThreads>>>(
        weight_ptr<W>(table), ids.data<int32_t>(), out.data<float>(), vocab_size, hidden);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace earnserve::cuda
