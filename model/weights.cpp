#include "model/weights.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <mutex>

#include "core/half.h"
#include "core/logging.h"
#include "core/threading.h"
#include "kernels/quantize.h"

namespace earnserve {

// How much of a large checkpoint the model has taken (bytes of the tensors handed out, counted
// once per call), logged every kInterval. Thread-safe.
class LoadProgress {
 public:
  LoadProgress(std::string source, int64_t total_bytes)
      : source_(std::move(source)), total_bytes_(total_bytes), last_(Clock::now()) {}

  void add(int64_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    taken_bytes_ = std::min(total_bytes_, taken_bytes_ + bytes);
    const Clock::time_point now = Clock::now();
    if (now - last_ < kInterval && taken_bytes_ < total_bytes_) return;
    if (reported_all_) return;
    last_ = now;
    reported_all_ = taken_bytes_ == total_bytes_;
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    ES_LOG(Info) << "loading " << source_ << ": " << fixed_1(taken_bytes_ / kGiB) << " of "
                 << fixed_1(total_bytes_ / kGiB) << " GiB of weights ("
                 << (100 * taken_bytes_ / total_bytes_) << "%)";
  }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kInterval = std::chrono::seconds(2);

  static std::string fixed_1(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", v);
    return buf;
  }

  // Constant after construction
  const std::string source_;
  const int64_t total_bytes_;

  std::mutex mu_;
  int64_t taken_bytes_ = 0;    // Guarded by mu_
  Clock::time_point last_;     // Guarded by mu_
  bool reported_all_ = false;  // Guarded by mu_
};

namespace {

int64_t tensor_bytes(const Tensor& t) {
  return t.numel() * static_cast<int64_t>(dtype_size(t.dtype()));
}

float load_as_float(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return fp16_to_float(static_cast<const uint16_t*>(data)[i]);
    default:
      return static_cast<const float*>(data)[i];
  }
}

void store_from_float(void* data, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::kBF16:
      static_cast<uint16_t*>(data)[i] = float_to_bf16(v);
      break;
    case DType::kF16:
      static_cast<uint16_t*>(data)[i] = float_to_fp16(v);
      break;
    default:
      static_cast<float*>(data)[i] = v;
      break;
  }
}

// Converts `n` elements of src (f32/bf16/f16) into dst (f32/bf16/f16), in parallel: loading a
// large checkpoint in another dtype is dominated by this loop.
void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype));
    return;
  }
  parallel_for(n, int64_t{1} << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      store_from_float(dst, dst_dtype, i, load_as_float(src, src_dtype, i));
    }
  });
}

bool is_float_dtype(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16;
}

// Quantises `src` ([rows, cols] f32|bf16|f16, tensor `name` of `file`) to int8 with scales from
// whole rows, writing columns [col_begin, col_end) to q ([rows, col_end - col_begin]) and the
// scales to scale ([rows]).
Status quantize_into(const Tensor& src, int64_t col_begin, int64_t col_end, int8_t* q, float* scale,
                     const std::string& file, const std::string& name) {
  const int64_t bad_row = quantize_rows_int8(src, col_begin, col_end, q, scale);
  if (bad_row >= 0) {
    return invalid_argument(file + ": tensor '" + name + "' has a non-finite value in row " +
                            std::to_string(bad_row) + "; it cannot be quantised to int8");
  }
  return Status::Ok();
}

}  // namespace

StatusOr<Weights> Weights::load(const std::string& model_dir, const LoadOptions& options) {
  if (!is_float_dtype(options.weight_dtype) && options.weight_dtype != DType::kI8) {
    return invalid_argument(std::string("weight dtype ") + dtype_name(options.weight_dtype) +
                            " is not supported (supported: f32, bf16, f16, i8)");
  }
  if (options.weight_dtype == DType::kI8 && options.device != Device::kCPU) {
    return invalid_argument(std::string("--weight-dtype int8 is CPU-only (device ") +
                            device_name(options.device) + ")");
  }
  ES_ASSIGN_OR_RETURN(auto tensors, load_safetensors_dir(model_dir));
  int64_t total_bytes = 0;
  for (const auto& [name, entry] : tensors) total_bytes += tensor_bytes(entry.tensor);
  Weights weights(std::move(tensors), options, model_dir);
  if (total_bytes >= options.progress_min_bytes) {
    weights.progress_ = std::make_shared<LoadProgress>(model_dir, total_bytes);
  }
  return weights;
}

std::vector<std::string> Weights::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& entry : tensors_) out.push_back(entry.first);
  return out;
}

StatusOr<const CheckpointTensor*> Weights::find_checked(const std::string& name,
                                                        const Shape& expected) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return not_found(source_ + ": checkpoint has no tensor '" + name + "'");
  if (progress_) progress_->add(tensor_bytes(it->second.tensor));
  const Tensor& t = it->second.tensor;
  if (t.shape() != expected) {
    return invalid_argument(it->second.file + ": tensor '" + name + "' has shape " +
                            shape_to_string(t.shape()) + ", expected " + shape_to_string(expected));
  }
  return &it->second;
}

StatusOr<Tensor> Weights::get(const std::string& name, const Shape& expected, DType dtype) const {
  ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(name, expected));
  const Tensor& src = entry->tensor;
  Tensor host = src;
  if (src.dtype() != dtype) {
    host = Tensor::cpu(src.shape(), dtype);
    convert(src.raw_data(), src.dtype(), host.raw_data(), dtype, src.numel());
  }
  return to_device(std::move(host), name);
}

DType Weights::table_dtype(const std::string& name) const {
  if (options_.weight_dtype != DType::kI8) return options_.weight_dtype;
  auto it = tensors_.find(name);
  if (it != tensors_.end() && is_float_dtype(it->second.tensor.dtype())) {
    return it->second.tensor.dtype();
  }
  return DType::kF32;
}

StatusOr<Tensor> Weights::to_device(Tensor host, const std::string& name) const {
  if (options_.device == Device::kCPU) return host;
  StatusOr<Tensor> moved = host.to(options_.device);
  if (!moved.ok()) return moved.status().with_prefix("tensor '" + name + "'");
  return moved;
}

StatusOr<Tensor> Weights::get_rows(const std::string& name, const Shape& expected, int64_t begin,
                                   int64_t end, DType dtype) const {
  ES_CHECK(!expected.empty() && 0 <= begin && begin <= end && end <= expected[0])
      << "rows [" << begin << ", " << end << ") of " << shape_to_string(expected);
  ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(name, expected));
  Tensor rows = entry->tensor.slice_rows(begin, end);
  if (rows.dtype() != dtype) {
    Tensor converted = Tensor::cpu(rows.shape(), dtype);
    convert(rows.raw_data(), rows.dtype(), converted.raw_data(), dtype, rows.numel());
    rows = converted;
  }
  return to_device(std::move(rows), name);
}

StatusOr<Tensor> Weights::get_columns(const std::string& name, const Shape& expected, int64_t begin,
                                      int64_t end, DType dtype) const {
  ES_CHECK(expected.size() == 2 && 0 <= begin && begin <= end && end <= expected[1])
      << "columns [" << begin << ", " << end << ") of " << shape_to_string(expected);
  // All columns: get() keeps the zero-copy view where there is one.
  if (begin == 0 && end == expected[1]) return get(name, expected, dtype);
  ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(name, expected));
  const Tensor& src = entry->tensor;
  const int64_t num_rows = expected[0];
  const int64_t width = end - begin;
  const size_t src_row_bytes = static_cast<size_t>(expected[1]) * dtype_size(src.dtype());
  const size_t src_offset = static_cast<size_t>(begin) * dtype_size(src.dtype());
  const size_t dst_row_bytes = static_cast<size_t>(width) * dtype_size(dtype);
  Tensor host = Tensor::cpu({num_rows, width}, dtype);
  const char* src_bytes = static_cast<const char*>(src.raw_data());
  char* dst_bytes = static_cast<char*>(host.raw_data());
  // Rows in parallel; convert() inside a parallel region runs serially.
  parallel_for(num_rows, grain_for_work(width), [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r) {
      convert(src_bytes + static_cast<size_t>(r) * src_row_bytes + src_offset, src.dtype(),
              dst_bytes + static_cast<size_t>(r) * dst_row_bytes, dtype, width);
    }
  });
  return to_device(std::move(host), name);
}

StatusOr<Tensor> Weights::get_stacked(const std::vector<std::string>& names,
                                      const std::vector<Shape>& expected, DType dtype,
                                      int64_t row_begin, int64_t row_end) const {
  ES_CHECK_EQ(names.size(), expected.size());
  ES_CHECK(!names.empty());
  int64_t rows = 0;
  const int64_t cols = expected[0].size() == 2 ? expected[0][1] : -1;
  std::vector<Tensor> parts;
  for (size_t i = 0; i < names.size(); ++i) {
    ES_CHECK(expected[i].size() == 2 && expected[i][1] == cols) << "get_stacked needs 2-D shapes "
                                                                   "with equal columns";
    ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(names[i], expected[i]));
    const int64_t end = row_end < 0 ? expected[i][0] : row_end;
    ES_CHECK(0 <= row_begin && row_begin <= end && end <= expected[i][0])
        << "rows [" << row_begin << ", " << end << ") of " << shape_to_string(expected[i]);
    parts.push_back(entry->tensor.slice_rows(row_begin, end));
    rows += end - row_begin;
  }
  Tensor host = Tensor::cpu({rows, cols}, dtype);
  int64_t offset = 0;
  for (const Tensor& src : parts) {
    Tensor dst = host.slice_rows(offset, offset + src.dim(0));
    convert(src.raw_data(), src.dtype(), dst.raw_data(), dtype, src.numel());
    offset += src.dim(0);
  }
  return to_device(std::move(host), names[0]);
}

StatusOr<ops::LinearWeight> Weights::get_linear_rows(const std::string& name, const Shape& expected,
                                                     int64_t begin, int64_t end) const {
  if (options_.weight_dtype != DType::kI8) {
    ES_ASSIGN_OR_RETURN(Tensor w, get_rows(name, expected, begin, end, options_.weight_dtype));
    return ops::LinearWeight{std::move(w), Tensor()};
  }
  return get_linear_stacked({name}, {expected}, begin, end);
}

StatusOr<ops::LinearWeight> Weights::get_linear_columns(const std::string& name,
                                                        const Shape& expected, int64_t begin,
                                                        int64_t end) const {
  if (options_.weight_dtype != DType::kI8) {
    ES_ASSIGN_OR_RETURN(Tensor w, get_columns(name, expected, begin, end, options_.weight_dtype));
    return ops::LinearWeight{std::move(w), Tensor()};
  }
  ES_CHECK(expected.size() == 2 && 0 <= begin && begin <= end && end <= expected[1])
      << "columns [" << begin << ", " << end << ") of " << shape_to_string(expected);
  ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(name, expected));
  ops::LinearWeight out{Tensor::cpu({expected[0], end - begin}, DType::kI8),
                        Tensor::cpu({expected[0]}, DType::kF32)};
  ES_RETURN_IF_ERROR(quantize_into(entry->tensor, begin, end, out.weight.data<int8_t>(),
                                   out.scale.data<float>(), entry->file, name));
  return out;
}

StatusOr<ops::LinearWeight> Weights::get_linear_stacked(const std::vector<std::string>& names,
                                                        const std::vector<Shape>& expected,
                                                        int64_t row_begin, int64_t row_end) const {
  if (options_.weight_dtype != DType::kI8) {
    ES_ASSIGN_OR_RETURN(Tensor w,
                        get_stacked(names, expected, options_.weight_dtype, row_begin, row_end));
    return ops::LinearWeight{std::move(w), Tensor()};
  }
  ES_CHECK_EQ(names.size(), expected.size());
  ES_CHECK(!names.empty() && expected[0].size() == 2);
  const int64_t cols = expected[0][1];
  std::vector<const CheckpointTensor*> entries;
  int64_t rows = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    ES_CHECK(expected[i].size() == 2 && expected[i][1] == cols)
        << "get_linear_stacked needs 2-D shapes with equal columns";
    const int64_t end = row_end < 0 ? expected[i][0] : row_end;
    ES_CHECK(0 <= row_begin && row_begin <= end && end <= expected[i][0])
        << "rows [" << row_begin << ", " << end << ") of " << shape_to_string(expected[i]);
    ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(names[i], expected[i]));
    entries.push_back(entry);
    rows += end - row_begin;
  }
  ops::LinearWeight out{Tensor::cpu({rows, cols}, DType::kI8), Tensor::cpu({rows}, DType::kF32)};
  int64_t offset = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const int64_t end = row_end < 0 ? expected[i][0] : row_end;
    const Tensor part = entries[i]->tensor.slice_rows(row_begin, end);
    ES_RETURN_IF_ERROR(quantize_into(part, 0, cols, out.weight.data<int8_t>() + offset * cols,
                                     out.scale.data<float>() + offset, entries[i]->file, names[i]));
    offset += part.dim(0);
  }
  return out;
}

}  // namespace earnserve
