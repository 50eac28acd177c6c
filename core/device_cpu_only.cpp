// Device memory for builds without the CUDA backend: CPU memory, and a clear error for CUDA.
#include <cstdlib>
#include <cstring>

#include "core/device.h"

namespace earnserve {
namespace {
constexpr size_t kAlignment = 64;
Status no_cuda() {
  return unimplemented(
      "this earnserve was built without CUDA (configure with -DEARNSERVE_CUDA=ON)");
}
}  // namespace

bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
bool built_with_cuda() { return false; }
std::vector<std::string> cuda_device_descriptions() { return {}; }

Status select_cuda_device(int) { return no_cuda(); }

StatusOr<void*> device_alloc(Device device, size_t nbytes) {
  if (device != Device::kCPU) return no_cuda();
  void* p = std::aligned_alloc(kAlignment, (nbytes + kAlignment - 1) / kAlignment * kAlignment);
  if (p == nullptr)
    return resource_exhausted("out of host memory allocating " + std::to_string(nbytes) + " bytes");
  return p;
}

void device_free(Device device, void* ptr) {
  if (device == Device::kCPU) std::free(ptr);
}

Status device_copy(void* dst, Device dst_device, const void* src, Device src_device,
                   size_t nbytes) {
  if (dst_device != Device::kCPU || src_device != Device::kCPU) return no_cuda();
  if (nbytes) std::memmove(dst, src, nbytes);
  return Status::Ok();
}

Status device_memset_zero(void* ptr, Device device, size_t nbytes) {
  if (device != Device::kCPU) return no_cuda();
  if (nbytes) std::memset(ptr, 0, nbytes);
  return Status::Ok();
}

Status device_synchronize(Device device) {
  if (device != Device::kCPU) return no_cuda();
  return Status::Ok();
}

}  // namespace earnserve
