// Row gather on the GPU. An f32 row gather is an embedding lookup in an f32 table, so it runs
// embedding.cu's kernel (one thread block per output row; an index outside [0, num_rows) yields a
// zero row).
#include "kernels/cuda/cuda_ops.h"

namespace earnserve::cuda {

void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) {
  embedding(x, indices, out);
}

}  // namespace earnserve::cuda
