#include "kernels/backend_info.h"

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/device.h"
#include "core/threading.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/panel_gemm.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/ops.h"

namespace earnserve {
namespace {

// "OpenBLAS 0.3.21" from openblas_get_config()'s "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...".
std::string library_version(const std::string& config) {
  std::istringstream in(config);
  std::string name, version;
  in >> name >> version;
  return version.empty() ? config : name + " " + version;
}

}  // namespace

BackendInfo backend_info() {
  BackendInfo info;
  info.cpu_brand = cpu::cpu_brand();
  info.cpu_vendor = cpu::cpu_vendor();
  info.logical_cpus = static_cast<int>(std::thread::hardware_concurrency());
  info.cpu_features = cpu::cpu_features().names();
  info.kernel_isa = cpu::cpu_isa_name(cpu::cpu_isa());
  const bool panels = ops::weight_panels_enabled();
  const bool i8_panels = panels && cpu::best_cpu_isa() == cpu::CpuIsa::kAvx512;
  info.int8_linear = std::string("int8 rows x int8 activations in blocks of ") +
                     std::to_string(cpu::kI8Block) + ", int32 block sums" +
                     (cpu::use_avx512() && i8_panels ? " (panels, avx512 vnni vpdpbusd)"
                      : cpu::use_avx512()            ? " (avx512 vnni vpdpbusd)"
                      : cpu::use_avx2()              ? " (avx2 vpmaddwd)"
                                                     : " (portable)");
  if (panels) {
    info.weights =
        std::string("panels of ") + std::to_string(cpu::kPanelWidth) +
        " features packed at load, panel GEMM for f32/bf16" + (i8_panels ? "/int8" : "") + " (" +
        cpu::cpu_isa_name(cpu::cpu_isa()) + ")" +
        (cpu::bf16_dot_products(cpu::kBf16DotMinRows)
             ? "; bf16 x bf16 (avx512_bf16) from " + std::to_string(cpu::kBf16DotMinRows) + " rows"
             : "");
  } else {
    info.weights = "row-major (EARNSERVE_WEIGHT_PANELS=0): GEMV up to a few rows, else the gemm";
  }
  const cpu::BlasInfo& blas = cpu::blas_info();
  info.gemm_library = blas.library;
  info.gemm_core = blas.core;
  info.gemm_core_choice = blas.core_choice;
  info.gemm = library_version(blas.config) + " (core " + blas.core + ", chosen by " +
              blas.core_choice + ")";
  info.threads = num_threads();
  info.built_with_cuda = built_with_cuda();
  info.cuda_devices = cuda_device_descriptions();
  return info;
}

std::string backend_info_json(const BackendInfo& info) {
  nlohmann::json j = {
      {"cpu",
       {{"brand", info.cpu_brand},
        {"vendor", info.cpu_vendor},
        {"logical_cpus", info.logical_cpus},
        {"features", info.cpu_features}}},
      {"kernels",
       {{"isa", info.kernel_isa}, {"int8_linear", info.int8_linear}, {"weights", info.weights}}},
      {"gemm",
       {{"backend", info.gemm},
        {"library", info.gemm_library},
        {"core", info.gemm_core},
        {"core_choice", info.gemm_core_choice}}},
      {"threads", info.threads},
      {"cuda", {{"built", info.built_with_cuda}, {"devices", info.cuda_devices}}}};
  return j.dump();
}

std::string backend_info_text(const BackendInfo& info) {
  std::ostringstream out;
  out << "cpu: " << (info.cpu_brand.empty() ? "(unknown)" : info.cpu_brand) << " ("
      << info.cpu_vendor << "), " << info.logical_cpus << " logical CPUs\n"
      << "cpu features: " << (info.cpu_features.empty() ? "(none)" : info.cpu_features) << "\n"
      << "kernel path: " << info.kernel_isa << "\n"
      << "int8 linear: " << info.int8_linear << "\n"
      << "weights: " << info.weights << "\n"
      << "gemm: " << info.gemm << "\n"
      << "gemm library: " << info.gemm_library << "\n"
      << "threads: " << info.threads << "\n"
      << "cuda: ";
  if (!info.built_with_cuda) {
    out << "not built\n";
  } else if (info.cuda_devices.empty()) {
    out << "built, no GPU visible\n";
  } else {
    out << info.cuda_devices.size() << " GPU(s)\n";
    for (size_t i = 0; i < info.cuda_devices.size(); ++i) {
      out << "  cuda:" << i << ": " << info.cuda_devices[i] << "\n";
    }
  }
  return out.str();
}

std::string backend_info_line(const BackendInfo& info) {
  std::ostringstream out;
  out << "cpu " << (info.cpu_brand.empty() ? "(unknown)" : info.cpu_brand) << " ["
      << info.cpu_features << "]; kernels " << info.kernel_isa << "; weights " << info.weights
      << "; gemm " << info.gemm << "; threads " << info.threads << "; cuda "
      << (!info.built_with_cuda ? std::string("not built")
                                : std::to_string(info.cuda_devices.size()) + " GPU(s)");
  return out.str();
}

}  // namespace earnserve
