// What this CPU can run, read once from CPUID (and XGETBV: the OS must save the wider registers),
// and which SIMD path the CPU kernels take. The path is chosen at first use by features, never
// by model name: avx512 when the machine has AVX-512 F/BW/VL/DQ/CD with VNNI (and the AVX2 set),
// else avx2 with AVX2+FMA+F16C, else the portable path (plain C++ the compiler vectorises for
// baseline x86-64). The avx512 path is the avx2 path with AVX-512 bodies for the kernels that
// have one (so far the int8 GEMV's inner loop, with VNNI); everything else runs its AVX2 body
// there. EARNSERVE_CPU_ISA=portable|avx2|avx512 asks for a path (one the CPU
// lacks falls back to the best it has, with a warning); tests switch with set_cpu_isa.
// Thread-safe (an atomic); switching while kernels run is allowed but only sensible in tests.
#pragma once

#include <string>

namespace earnserve::cpu {

// Instruction-set extensions usable in this process (CPUID bit and OS register state both set).
struct CpuFeatures {
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512cd = false;
  bool avx512_vnni = false;
  bool avx512_bf16 = false;
  bool avx_vnni = false;
  bool amx_tile = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;

  // The AVX-512 subset of Skylake-SP and later (F, BW, VL, DQ, CD).
  bool avx512_core() const { return avx512f && avx512bw && avx512vl && avx512dq && avx512cd; }
  // The names of the features present, in the order above, separated by spaces.
  std::string names() const;
};

// This machine's features (cached after the first call).
const CpuFeatures& cpu_features();
// CPUID's vendor and brand strings ("AuthenticAMD", "AMD EPYC ..."): shown to users, never used
// to choose code.
std::string cpu_vendor();
std::string cpu_brand();

enum class CpuIsa { kPortable, kAvx2, kAvx512 };

// Every path, from the most portable; cpu_isa_supported says which this machine runs.
inline constexpr CpuIsa kAllCpuIsas[] = {CpuIsa::kPortable, CpuIsa::kAvx2, CpuIsa::kAvx512};

const char* cpu_isa_name(CpuIsa isa);

// True when this machine can run `isa`.
bool cpu_isa_supported(CpuIsa isa);

// The path kernels take now.
CpuIsa cpu_isa();

// Selects the path for later calls. REQUIRES: cpu_isa_supported(isa).
void set_cpu_isa(CpuIsa isa);

// The best path this machine runs (what cpu_isa() starts with when EARNSERVE_CPU_ISA is unset).
CpuIsa best_cpu_isa();

// True when the AVX2 kernels run (avx2 and avx512 paths: the hot-path test in each kernel).
inline bool use_avx2() { return cpu_isa() != CpuIsa::kPortable; }
// True when the kernels with an AVX-512 body use it.
inline bool use_avx512() { return cpu_isa() == CpuIsa::kAvx512; }

}  // namespace earnserve::cpu
