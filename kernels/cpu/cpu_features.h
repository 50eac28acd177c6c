// Which SIMD path the CPU kernels take. The choice is made once, at first use: AVX2+FMA+F16C when
// the machine has them, else the portable path (plain C++ the compiler vectorises for baseline
// x86-64). EARNSERVE_CPU_ISA=portable forces the portable path; tests switch with set_cpu_isa.
// Thread-safe (an atomic); switching while kernels run is allowed but only sensible in tests.
#pragma once

namespace earnserve::cpu {

enum class CpuIsa { kPortable, kAvx2 };

const char* cpu_isa_name(CpuIsa isa);

// True when this machine can run `isa`.
bool cpu_isa_supported(CpuIsa isa);

// The path kernels take now.
CpuIsa cpu_isa();

// Selects the path for later calls. REQUIRES: cpu_isa_supported(isa).
void set_cpu_isa(CpuIsa isa);

// True when the AVX2 path is active (the hot-path test in each kernel).
inline bool use_avx2() { return cpu_isa() == CpuIsa::kAvx2; }

}  // namespace earnserve::cpu
