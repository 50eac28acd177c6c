// What compute this process gets: CPU features, the kernel path and GEMM library chosen from
// them, threads, CUDA devices. Shown by `earnserve info`, logged once when `serve` starts and
// exported as the Prometheus info metric earnserve:backend_info, so users can see what they run.
#pragma once

#include <string>
#include <vector>

namespace earnserve {

struct BackendInfo {
  std::string cpu_brand;     // CPUID brand string (display only)
  std::string cpu_vendor;    // CPUID vendor string (display only)
  int logical_cpus = 0;      // std::thread::hardware_concurrency
  std::string cpu_features;  // space-separated (kernels/cpu/cpu_features.h)
  std::string kernel_isa;    // the CPU kernels' SIMD path: "avx2" or "portable"
  std::string int8_linear;   // how --weight-dtype int8 multiplies: scheme and instructions
  std::string weights;       // the linear layers' weight layout and GEMM (panels or row-major)
  std::string gemm;          // e.g. "OpenBLAS 0.3.21 ... (core Haswell, chosen by cpu features)"
  std::string gemm_library;  // the file opened
  std::string gemm_core;     // OpenBLAS kernel set in use
  std::string gemm_core_choice;
  int threads = 0;  // the engine's CPU threads (core/threading.h)
  bool built_with_cuda = false;
  std::vector<std::string> cuda_devices;
};

// Collects the above (loads the BLAS library if nothing has yet).
BackendInfo backend_info();

// A JSON object (one line).
std::string backend_info_json(const BackendInfo& info);
// Human-readable lines, "key: value".
std::string backend_info_text(const BackendInfo& info);
// One line for logs.
std::string backend_info_line(const BackendInfo& info);

}  // namespace earnserve
