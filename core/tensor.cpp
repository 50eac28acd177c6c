#include "core/tensor.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>

#include "core/device.h"
#include "core/half.h"

namespace earnserve {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kF16:
      return 2;
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU8:
    case DType::kI8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
    case DType::kU8:
      return "u8";
    case DType::kI8:
      return "i8";
  }
  return "?";
}

const char* device_name(Device device) { return device == Device::kCPU ? "cpu" : "cuda"; }

std::string shape_to_string(const Shape& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

StatusOr<Tensor> Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (int64_t d : shape) {
    if (d < 0) return invalid_argument("negative dimension in shape " + shape_to_string(shape));
  }
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  size_t nbytes = t.nbytes();
  ES_ASSIGN_OR_RETURN(void* ptr, device_alloc(device, nbytes == 0 ? 1 : nbytes));
  auto storage =
      std::make_shared<Storage>(ptr, nbytes, device, [device](void* p) { device_free(device, p); });
  t.data_ = ptr;
  t.storage_ = std::move(storage);
  return t;
}

StatusOr<Tensor> Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  ES_ASSIGN_OR_RETURN(Tensor t, empty(shape, dtype, device));
  ES_RETURN_IF_ERROR(device_memset_zero(t.data_, device, t.nbytes()));
  return t;
}

Tensor Tensor::cpu(const Shape& shape, DType dtype) {
  StatusOr<Tensor> t = empty(shape, dtype, Device::kCPU);
  ES_CHECK(t.ok()) << t.status().to_string();
  return std::move(t).value();
}

StatusOr<Tensor> Tensor::cpu_huge_pages(const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t len = std::max(kHugePage, (bytes + kHugePage - 1) / kHugePage * kHugePage);
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return resource_exhausted("cannot map " + std::to_string(len) + " bytes for a tensor");
  }
  madvise(p, len, MADV_HUGEPAGE);  // a hint: without transparent huge pages, small pages
  std::shared_ptr<void> mapping(p, [len](void* q) { munmap(q, len); });
  return from_blob(p, shape, dtype, Device::kCPU, std::move(mapping));
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device,
                         std::shared_ptr<void> keep_alive) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = std::move(keep_alive);
  return t;
}

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      ES_CHECK_EQ(infer, -1) << "two -1 dims in view " << shape_to_string(shape);
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    ES_CHECK(known > 0 && numel() % known == 0);
    s[infer] = numel() / known;
  }
  ES_CHECK_EQ(shape_numel(s), numel())
      << "view " << shape_to_string(shape) << " of " << shape_to_string(shape_);
  Tensor t = *this;
  t.shape_ = std::move(s);
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  ES_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0])
      << "slice [" << begin << ", " << end << ") of " << shape_to_string(shape_);
  int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.data_ = static_cast<char*>(data_) + static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

StatusOr<Tensor> Tensor::to(Device device) const {
  ES_ASSIGN_OR_RETURN(Tensor t, empty(shape_, dtype_, device));
  ES_RETURN_IF_ERROR(device_copy(t.data_, device, data_, device_, nbytes()));
  return t;
}

Status Tensor::copy_from(const Tensor& src) {
  if (src.numel() != numel() || src.dtype() != dtype_) {
    return invalid_argument("copy_from: " + src.debug_string() + " into " + debug_string());
  }
  return device_copy(data_, device_, src.data_, src.device_, nbytes());
}

static float load_float(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return fp16_to_float(static_cast<const uint16_t*>(data)[i]);
    case DType::kI32:
      return static_cast<float>(static_cast<const int32_t*>(data)[i]);
    case DType::kI64:
      return static_cast<float>(static_cast<const int64_t*>(data)[i]);
    case DType::kU8:
      return static_cast<float>(static_cast<const uint8_t*>(data)[i]);
    case DType::kI8:
      return static_cast<float>(static_cast<const int8_t*>(data)[i]);
  }
  return 0.0f;
}

Tensor Tensor::to_dtype(DType dtype) const {
  ES_CHECK(is_cpu());
  Tensor out = cpu(shape_, dtype);
  int64_t n = numel();
  if (dtype == dtype_) {
    std::memcpy(out.data_, data_, nbytes());
    return out;
  }
  for (int64_t i = 0; i < n; ++i) {
    float v = load_float(data_, dtype_, i);
    switch (dtype) {
      case DType::kF32:
        static_cast<float*>(out.data_)[i] = v;
        break;
      case DType::kBF16:
        static_cast<uint16_t*>(out.data_)[i] = float_to_bf16(v);
        break;
      case DType::kF16:
        static_cast<uint16_t*>(out.data_)[i] = float_to_fp16(v);
        break;
      case DType::kI32:
        static_cast<int32_t*>(out.data_)[i] = static_cast<int32_t>(v);
        break;
      case DType::kI64:
        static_cast<int64_t*>(out.data_)[i] = static_cast<int64_t>(v);
        break;
      case DType::kU8:
        static_cast<uint8_t*>(out.data_)[i] = static_cast<uint8_t>(v);
        break;
      case DType::kI8:
        static_cast<int8_t*>(out.data_)[i] = static_cast<int8_t>(v);
        break;
    }
  }
  return out;
}

float Tensor::item_as_float(int64_t i) const {
  ES_CHECK(is_cpu());
  ES_CHECK(0 <= i && i < numel());
  return load_float(data_, dtype_, i);
}

std::vector<float> Tensor::to_float_vector() const {
  ES_CHECK(is_cpu());
  std::vector<float> v(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) v[static_cast<size_t>(i)] = load_float(data_, dtype_, i);
  return v;
}

std::string Tensor::debug_string() const {
  return std::string("Tensor(") + dtype_name(dtype_) + ", " + device_name(device_) + ", " +
         shape_to_string(shape_) + ")";
}

}  // namespace earnserve
