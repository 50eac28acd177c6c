#include "kernels/cpu/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/logging.h"

namespace earnserve::cpu {
namespace {

bool machine_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

CpuIsa initial_isa() {
  const char* env = std::getenv("EARNSERVE_CPU_ISA");
  if (env != nullptr && std::strcmp(env, "portable") == 0) return CpuIsa::kPortable;
  if (env != nullptr && std::strcmp(env, "avx2") == 0 && !machine_has_avx2()) {
    ES_LOG(Warning) << "EARNSERVE_CPU_ISA=avx2 but this CPU lacks AVX2/FMA/F16C; using portable";
  }
  return machine_has_avx2() ? CpuIsa::kAvx2 : CpuIsa::kPortable;
}

std::atomic<CpuIsa>& isa_storage() {
  static std::atomic<CpuIsa> isa(initial_isa());
  return isa;
}

}  // namespace

const char* cpu_isa_name(CpuIsa isa) { return isa == CpuIsa::kAvx2 ? "avx2" : "portable"; }

bool cpu_isa_supported(CpuIsa isa) {
  static const bool has_avx2 = machine_has_avx2();
  return isa == CpuIsa::kPortable || has_avx2;
}

CpuIsa cpu_isa() { return isa_storage().load(std::memory_order_relaxed); }

void set_cpu_isa(CpuIsa isa) {
  ES_CHECK(cpu_isa_supported(isa)) << "this CPU cannot run the " << cpu_isa_name(isa) << " path";
  isa_storage().store(isa);
}

}  // namespace earnserve::cpu
