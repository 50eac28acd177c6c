// The CPU backend of the ops in kernels/ops.h, one .cpp file per op (softmax.cpp holds softmax
// and log_softmax, rms_norm.cpp holds rms_norm and add_rms_norm). Each function has exactly the
// signature of its ops:: counterpart and is called by kernels/ops.cpp after the shapes, dtypes
// and devices were checked there; these functions check only what needs the data itself
// (indices in range). Multi-threaded with core/threading.h; vectorised through vec_math.h.
// embedding and linear take the LinearWeight form (a plain matrix has no scale).
// Thread-safety: as ops.h. f32 GEMMs go through OpenBLAS; kernels that call it from inside
// their own parallel region pin OpenBLAS to one thread for the duration (blas_threads.h).
#pragma once

#include "core/tensor.h"
#include "kernels/ops.h"

namespace earnserve::cpu {

void embedding(const ops::LinearWeight& table, const Tensor& ids, Tensor& out);
// ops::gather_linear_rows for an i8 weight (the float weights' rows are embedding's).
void gather_linear_rows_i8(const ops::LinearWeight& w, const Tensor& ids, ops::LinearWeight& out);
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out);
void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& weight, float eps, Tensor& out);
void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out);
void add_inplace(Tensor& y, const Tensor& x);
void rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq);
void silu_and_mul(const Tensor& gate_up, Tensor& out);
void linear(const Tensor& x, const ops::LinearWeight& weight, const Tensor& bias, Tensor& out);
void reshape_and_cache(const Tensor& key, const Tensor& value, Tensor& key_cache,
                       Tensor& value_cache, const Tensor& slot_mapping);
void paged_attention(const ops::PagedAttentionArgs& args, Tensor& out);
void softmax(const Tensor& x, Tensor& out);
void log_softmax(const Tensor& x, Tensor& out);
void argmax(const Tensor& x, Tensor& out);
void top_k(const Tensor& x, int k, Tensor& values, Tensor& indices);

}  // namespace earnserve::cpu
