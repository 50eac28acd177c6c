#include "model/weights.h"

#include <cstring>

#include "core/half.h"
#include "core/threading.h"

namespace earnserve {
namespace {

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

}  // namespace

StatusOr<Weights> Weights::load(const std::string& model_dir, const LoadOptions& options) {
  if (!is_float_dtype(options.weight_dtype)) {
    return invalid_argument(std::string("weight dtype ") + dtype_name(options.weight_dtype) +
                            " is not supported (supported: f32, bf16, f16)");
  }
  ES_ASSIGN_OR_RETURN(auto tensors, load_safetensors_dir(model_dir));
  return Weights(std::move(tensors), options, model_dir);
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
  if (options_.device == Device::kCPU) return host;
  StatusOr<Tensor> moved = host.to(options_.device);
  if (!moved.ok()) return moved.status().with_prefix("tensor '" + name + "'");
  return moved;
}

StatusOr<Tensor> Weights::get_stacked(const std::vector<std::string>& names,
                                      const std::vector<Shape>& expected, DType dtype) const {
  ES_CHECK_EQ(names.size(), expected.size());
  ES_CHECK(!names.empty());
  int64_t rows = 0;
  const int64_t cols = expected[0].size() == 2 ? expected[0][1] : -1;
  std::vector<const CheckpointTensor*> parts;
  for (size_t i = 0; i < names.size(); ++i) {
    ES_CHECK(expected[i].size() == 2 && expected[i][1] == cols) << "get_stacked needs 2-D shapes "
                                                                   "with equal columns";
    ES_ASSIGN_OR_RETURN(const CheckpointTensor* entry, find_checked(names[i], expected[i]));
    parts.push_back(entry);
    rows += expected[i][0];
  }
  Tensor host = Tensor::cpu({rows, cols}, dtype);
  int64_t offset = 0;
  for (const CheckpointTensor* part : parts) {
    const Tensor& src = part->tensor;
    Tensor dst = host.slice_rows(offset, offset + src.dim(0));
    convert(src.raw_data(), src.dtype(), dst.raw_data(), dtype, src.numel());
    offset += src.dim(0);
  }
  if (options_.device == Device::kCPU) return host;
  StatusOr<Tensor> moved = host.to(options_.device);
  if (!moved.ok()) return moved.status().with_prefix("tensor '" + names[0] + "'");
  return moved;
}

}  // namespace earnserve
