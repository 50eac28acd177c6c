// Tensor: a typed, shaped view of contiguous memory on one device. Copying a Tensor copies the
// handle, not the data: storage is shared and freed with its last handle. A Tensor may also view
// memory it does not own (a memory-mapped weight file) while a keep-alive handle lives.
// Thread-compatible: concurrent reads are safe, writes need outside synchronisation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/logging.h"
#include "core/status.h"

namespace earnserve {

// kI8: signed bytes, e.g. int8 weights (model/weights.h quantises them, scales kept beside).
enum class DType : uint8_t { kF32, kBF16, kF16, kI32, kI64, kU8, kI8 };
enum class Device : uint8_t { kCPU, kCUDA };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* device_name(Device device);

using Shape = std::vector<int64_t>;
std::string shape_to_string(const Shape& shape);
int64_t shape_numel(const Shape& shape);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::kI32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::kI64;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::kU8;
}
template <>
constexpr DType dtype_of<int8_t>() {
  return DType::kI8;
}

// Memory owned by a Tensor (or kept alive for it). The deleter runs once, with the last handle.
class Storage {
 public:
  Storage(void* data, size_t nbytes, Device device, std::function<void(void*)> deleter)
      : data_(data), nbytes_(nbytes), device_(device), deleter_(std::move(deleter)) {}
  ~Storage() {
    if (deleter_) deleter_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void(void*)> deleter_;
};

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised memory. Returns an error for a device this build lacks or out of memory.
  static StatusOr<Tensor> empty(const Shape& shape, DType dtype, Device device = Device::kCPU);
  static StatusOr<Tensor> zeros(const Shape& shape, DType dtype, Device device = Device::kCPU);
  // CPU tensor, aborts on allocation failure: for host-side scratch and tests.
  static Tensor cpu(const Shape& shape, DType dtype);
  // Zero-filled CPU tensor in its own anonymous mapping, asked for 2 MiB pages
  // (madvise(MADV_HUGEPAGE); the kernel may still give small ones): for large matrices read
  // front to back at every step (weights packed at load), where 4 KiB pages cost a TLB miss
  // every 4 KiB. Errors: the mapping failed.
  static StatusOr<Tensor> cpu_huge_pages(const Shape& shape, DType dtype);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape);
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values) {
    return from_vector(values, Shape{static_cast<int64_t>(values.size())});
  }
  // A view of memory owned elsewhere; `keep_alive` (may be null) is held as long as the view.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device,
                          std::shared_ptr<void> keep_alive = nullptr);

  bool defined() const { return storage_ != nullptr || data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  // Negative dims count from the end.
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cpu() const { return device_ == Device::kCPU; }

  void* raw_data() const { return data_; }
  template <typename T>
  T* data() const {
    ES_CHECK(dtype_ == dtype_of<T>()) << "tensor is " << dtype_name(dtype_);
    return static_cast<T*>(data_);
  }
  // Raw 16-bit payload of a bf16 or fp16 tensor.
  uint16_t* data_u16() const {
    ES_CHECK(dtype_ == DType::kBF16 || dtype_ == DType::kF16);
    return static_cast<uint16_t*>(data_);
  }

  // Same data, new shape with the same numel. One dimension may be -1.
  Tensor view(const Shape& shape) const;
  // Rows [begin, end) of dim 0, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;

  // Copy to another device (or the same one).
  StatusOr<Tensor> to(Device device) const;
  // Converted copy on the CPU: f32/bf16/f16 among themselves. REQUIRES: is_cpu().
  Tensor to_dtype(DType dtype) const;
  // Copies `src` (same numel and dtype) into this tensor, across devices if needed.
  Status copy_from(const Tensor& src);

  // Element i of a CPU tensor as float (any float dtype or i32/i64), for tests and debugging.
  float item_as_float(int64_t i) const;
  // All elements of a CPU float tensor as fp32.
  std::vector<float> to_float_vector() const;

  std::string debug_string() const;

 private:
  std::shared_ptr<void> storage_;  // keeps the memory alive; Storage or a caller's keep-alive
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
};

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape) {
  ES_CHECK_EQ(static_cast<int64_t>(values.size()), shape_numel(shape));
  Tensor t = cpu(shape, dtype_of<T>());
  if (!values.empty()) std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(T));
  return t;
}

}  // namespace earnserve
