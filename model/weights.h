// Weights: the name -> Tensor store a model builds itself from. It wraps the tensors of a
// checkpoint (memory-mapped, model/safetensors.h) and hands each one out checked against the shape
// the model expects, converted to the wanted dtype and placed on the wanted device. On the CPU a
// tensor already in the wanted dtype is a zero-copy view of the mapping; anything else is a copy
// the caller owns. Linear layers' matrices come through the get_linear* getters: with weight dtype
// int8 they are quantised here, symmetric per output row (kernels/quantize.h), their f32 scales
// beside them (ops::LinearWeight); other matrices and norms keep a float dtype. The row and column
// getters hand out one tensor-parallel rank's slice of a
// tensor (model/tensor_parallel.h), reading only that slice from the mapping. A checkpoint of
// LoadOptions::progress_min_bytes or more logs (Info, every few seconds) how much of it the model
// has taken so far; `--quiet` hides it. Immutable after construction but for that count;
// thread-safe to read.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "kernels/ops.h"
#include "model/safetensors.h"
#include "model/tensor_parallel.h"

namespace earnserve {

struct LoadOptions {
  // Dtype of the large matrices (embeddings, projections, lm_head): kF32, kBF16 or kF16. Or kI8
  // (CPU only): the linear layers' matrices (projections, lm_head) quantised at load, per output
  // row; embedding tables then stay in the checkpoint's float dtype. Norm weights and biases are
  // always f32.
  DType weight_dtype = DType::kF32;
  Device device = Device::kCPU;
  // This process's rank and the split of the weights; the default is the whole model.
  TensorParallel tensor_parallel;
  // CPU f32/bf16 projections packed into panels at load (kernels/cpu/panel_gemm.h; the lm_head
  // and embedding tables stay row-major). Model loaders also honour EARNSERVE_WEIGHT_PANELS=0.
  bool weight_panels = true;
  // A checkpoint this large reports loading progress (Info log every few seconds).
  int64_t progress_min_bytes = int64_t{1} << 30;
};

class LoadProgress;

class Weights {
 public:
  // All tensors of the checkpoint in `model_dir` (single file or sharded).
  static StatusOr<Weights> load(const std::string& model_dir, const LoadOptions& options);

  // `source` (the model directory) names the checkpoint in errors about missing tensors.
  Weights(std::map<std::string, CheckpointTensor> tensors, LoadOptions options, std::string source)
      : tensors_(std::move(tensors)), options_(options), source_(std::move(source)) {}

  const LoadOptions& options() const { return options_; }
  // The model directory.
  const std::string& source() const { return source_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const;

  // The tensor `name`, which must have shape `expected`, as `dtype` on options().device.
  // Errors: "<model_dir>: checkpoint has no tensor 'x'", or "<file>: tensor 'x' has shape [a, b],
  // expected [c, d]".
  StatusOr<Tensor> get(const std::string& name, const Shape& expected, DType dtype) const;
  // Rows [begin, end) of dim 0 of `name` (which must have shape `expected`), as `dtype` on
  // options().device; only those rows are read. On the CPU in the checkpoint's dtype this is a
  // zero-copy view of the mapping. REQUIRES: 0 <= begin <= end <= expected[0].
  StatusOr<Tensor> get_rows(const std::string& name, const Shape& expected, int64_t begin,
                            int64_t end, DType dtype) const;
  // Columns [begin, end) of the 2-D tensor `name`: a [rows, end - begin] copy of just those
  // columns. REQUIRES: 0 <= begin <= end <= expected[1].
  StatusOr<Tensor> get_columns(const std::string& name, const Shape& expected, int64_t begin,
                               int64_t end, DType dtype) const;
  // get() in table_dtype(name): for matrices other than linear layers' (embedding tables).
  StatusOr<Tensor> get_matrix(const std::string& name, const Shape& expected) const {
    return get(name, expected, table_dtype(name));
  }
  // The dtype of a matrix that is not a linear layer's: options().weight_dtype, but under kI8 the
  // checkpoint's dtype of `name` when it is f32, bf16 or f16 (a zero-copy view on the CPU), else
  // f32.
  DType table_dtype(const std::string& name) const;
  // get() as f32: for norm weights and biases.
  StatusOr<Tensor> get_f32(const std::string& name, const Shape& expected) const {
    return get(name, expected, DType::kF32);
  }
  // Several 2-D tensors with the same number of columns stacked by rows into one, e.g. gate_proj
  // and up_proj into one [2 * intermediate, hidden] matrix. `expected[i]` is the shape of names[i].
  // With row_end >= 0 only rows [row_begin, row_end) of every part are taken (a tensor-parallel
  // rank's share of each).
  StatusOr<Tensor> get_stacked(const std::vector<std::string>& names,
                               const std::vector<Shape>& expected, DType dtype,
                               int64_t row_begin = 0, int64_t row_end = -1) const;

  // A linear layer's matrix in options().weight_dtype: as get_rows / get_columns / get_stacked,
  // and under kI8 quantised (weight kI8, scale [rows] f32). A column slice's scales come from the
  // whole rows, so tensor-parallel ranks' partial products add up to the unsplit layer's.
  // Errors as the plain getters, and "<file>: tensor 'x' has a non-finite value in row r" (kI8).
  StatusOr<ops::LinearWeight> get_linear(const std::string& name, const Shape& expected) const {
    return get_linear_rows(name, expected, 0, expected.empty() ? 0 : expected[0]);
  }
  StatusOr<ops::LinearWeight> get_linear_rows(const std::string& name, const Shape& expected,
                                              int64_t begin, int64_t end) const;
  StatusOr<ops::LinearWeight> get_linear_columns(const std::string& name, const Shape& expected,
                                                 int64_t begin, int64_t end) const;
  StatusOr<ops::LinearWeight> get_linear_stacked(const std::vector<std::string>& names,
                                                 const std::vector<Shape>& expected,
                                                 int64_t row_begin = 0, int64_t row_end = -1) const;

 private:
  StatusOr<const CheckpointTensor*> find_checked(const std::string& name,
                                                 const Shape& expected) const;
  // `host` (a CPU tensor) on options().device; errors name tensor `name`.
  StatusOr<Tensor> to_device(Tensor host, const std::string& name) const;

  // Constant after construction
  std::map<std::string, CheckpointTensor> tensors_;
  LoadOptions options_;
  std::string source_;
  std::shared_ptr<LoadProgress> progress_;  // null: a small checkpoint, nothing reported
};

}  // namespace earnserve
