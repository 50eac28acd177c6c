// Device memory for builds with the CUDA backend.
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "core/device.h"

namespace earnserve {
namespace {
constexpr size_t kAlignment = 64;

Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return internal_error(std::string(what) + ": " + cudaGetErrorString(err));
}

cudaMemcpyKind copy_kind(Device dst, Device src) {
  if (dst == Device::kCUDA && src == Device::kCUDA) return cudaMemcpyDeviceToDevice;
  if (dst == Device::kCUDA) return cudaMemcpyHostToDevice;
  if (src == Device::kCUDA) return cudaMemcpyDeviceToHost;
  return cudaMemcpyHostToHost;
}
}  // namespace

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

bool cuda_available() { return cuda_device_count() > 0; }

bool built_with_cuda() { return true; }

std::vector<std::string> cuda_device_descriptions() {
  std::vector<std::string> out;
  const int count = cuda_device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      cudaGetLastError();
      out.push_back("(unreadable)");
      continue;
    }
    out.push_back(std::string(prop.name) + ", " + std::to_string(prop.totalGlobalMem >> 20) +
                  " MiB, compute capability " + std::to_string(prop.major) + "." +
                  std::to_string(prop.minor));
  }
  return out;
}

Status select_cuda_device(int index) {
  const int count = cuda_device_count();
  if (index < 0 || index >= count) {
    return invalid_argument("CUDA device " + std::to_string(index) +
                            " does not exist: " + std::to_string(count) + " GPU(s) visible");
  }
  return cuda_status(cudaSetDevice(index), "cudaSetDevice");
}

StatusOr<void*> device_alloc(Device device, size_t nbytes) {
  if (device == Device::kCPU) {
    void* p = std::aligned_alloc(kAlignment, (nbytes + kAlignment - 1) / kAlignment * kAlignment);
    if (p == nullptr) return resource_exhausted("out of host memory");
    return p;
  }
  void* p = nullptr;
  ES_RETURN_IF_ERROR(cuda_status(cudaMalloc(&p, nbytes), "cudaMalloc"));
  return p;
}

void device_free(Device device, void* ptr) {
  if (device == Device::kCPU) {
    std::free(ptr);
  } else {
    cudaFree(ptr);
  }
}

Status device_copy(void* dst, Device dst_device, const void* src, Device src_device,
                   size_t nbytes) {
  if (nbytes == 0) return Status::Ok();
  if (dst_device == Device::kCPU && src_device == Device::kCPU) {
    std::memmove(dst, src, nbytes);
    return Status::Ok();
  }
  return cuda_status(cudaMemcpy(dst, src, nbytes, copy_kind(dst_device, src_device)), "cudaMemcpy");
}

Status device_memset_zero(void* ptr, Device device, size_t nbytes) {
  if (nbytes == 0) return Status::Ok();
  if (device == Device::kCPU) {
    std::memset(ptr, 0, nbytes);
    return Status::Ok();
  }
  return cuda_status(cudaMemset(ptr, 0, nbytes), "cudaMemset");
}

Status device_synchronize(Device device) {
  if (device == Device::kCPU) return Status::Ok();
  return cuda_status(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

}  // namespace earnserve
