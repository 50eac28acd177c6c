// Device memory: allocation, free, copies and synchronisation, dispatched on Device. The CUDA
// backend is compiled in only when the build has it (device_cuda.cpp); otherwise every CUDA call
// returns "built without CUDA". Thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace earnserve {

// True when this build has the CUDA backend and at least one GPU is visible.
bool cuda_available();
int cuda_device_count();
// True when this build has the CUDA backend (whether or not a GPU is visible).
bool built_with_cuda();
// "name, N MiB, compute capability X.Y" of each visible GPU (empty without CUDA or GPUs).
std::vector<std::string> cuda_device_descriptions();
// Makes CUDA device `index` current for this thread (cudaSetDevice). Errors: a build without
// CUDA, or an index outside [0, cuda_device_count()).
Status select_cuda_device(int index);

StatusOr<void*> device_alloc(Device device, size_t nbytes);
void device_free(Device device, void* ptr);
// Copies nbytes between any two devices; synchronous.
Status device_copy(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);
Status device_memset_zero(void* ptr, Device device, size_t nbytes);
// Waits until all work queued on `device` is done (no-op on the CPU).
Status device_synchronize(Device device);

}  // namespace earnserve
