// Per-device cuBLAS handles and scratch memory for the CUDA kernels.
#include <memory>
#include <vector>

#include "kernels/cuda/cuda_common.cuh"

namespace earnserve::cuda {
namespace {

// Slots are sized once to the device count; each slot is filled on first use.
struct DeviceState {
  std::mutex handle_mu;
  cublasHandle_t handle = nullptr;  // Guarded by handle_mu until set, then constant.

  std::mutex scratch_mu;
  void* scratch = nullptr;   // Guarded by scratch_mu.
  size_t scratch_bytes = 0;  // Guarded by scratch_mu.
};

DeviceState& device_state() {
  static std::vector<std::unique_ptr<DeviceState>>* states = [] {
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    auto* v = new std::vector<std::unique_ptr<DeviceState>>();
    for (int i = 0; i < count; ++i) v->push_back(std::make_unique<DeviceState>());
    return v;
  }();
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  ES_CHECK(device >= 0 && device < static_cast<int>(states->size())) << "device " << device;
  return *(*states)[device];
}

}  // namespace

cublasHandle_t cublas_handle() {
  DeviceState& state = device_state();
  std::lock_guard<std::mutex> lock(state.handle_mu);
  if (state.handle == nullptr) {
    CUBLAS_CHECK(cublasCreate(&state.handle));
    // Plain FP32 for Sgemm: TF32 would change results beyond the CPU reference's tolerance.
    CUBLAS_CHECK(cublasSetMathMode(state.handle, CUBLAS_DEFAULT_MATH));
  }
  return state.handle;
}

ScratchLease::ScratchLease(size_t nbytes) {
  DeviceState& state = device_state();
  lock_ = std::unique_lock<std::mutex>(state.scratch_mu);
  if (state.scratch_bytes < nbytes) {
    // Earlier users may still be reading the old buffer on the stream.
    CUDA_CHECK(cudaDeviceSynchronize());
    if (state.scratch != nullptr) CUDA_CHECK(cudaFree(state.scratch));
    state.scratch = nullptr;
    state.scratch_bytes = 0;
    size_t bytes = size_t{1} << 20;
    while (bytes < nbytes) bytes <<= 1;
    CUDA_CHECK(cudaMalloc(&state.scratch, bytes));
    state.scratch_bytes = bytes;
  }
  data_ = state.scratch;
}

}  // namespace earnserve::cuda
