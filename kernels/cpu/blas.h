// The BLAS under the CPU kernels' matrix products: Debian's OpenBLAS (libopenblas0), opened with
// dlopen at first use so that its kernel set can be chosen from this machine's CPU features
// before the library initialises.
//
// Why: OpenBLAS built with DYNAMIC_ARCH picks its kernels from the CPU's family and model
// numbers. A processor newer than the library (e.g. a 2-vCPU cloud Xeon with AVX-512 that
// OpenBLAS 0.3.21 does not know) falls back to its Prescott (SSE3) kernels, a quarter of the
// machine's GEMM rate. The library reads OPENBLAS_CORETYPE once, when it is loaded, so the engine
// sets it from CPUID features (blas_core_for) and only then opens the library:
//   AVX512-BF16 with the AVX-512 core set -> Cooperlake; AVX-512 F/BW/VL/DQ/CD -> SkylakeX;
//   AVX2 + FMA -> Haswell; anything else -> the library's own detection.
// Overrides: OPENBLAS_CORETYPE set by the user is kept as it is; EARNSERVE_BLAS_CORE=library
// leaves the choice to the library, EARNSERVE_BLAS_CORE=<name> forces an OpenBLAS core name.
// Thread-safe: loading happens once (a function-local static); failing to load is fatal with a
// message naming the package.
#pragma once

#include <string>

#include "kernels/cpu/cpu_features.h"

namespace earnserve::cpu {

struct BlasInfo {
  std::string library;      // the file opened, e.g. /usr/lib/x86_64-linux-gnu/.../libopenblas.so.0
  std::string config;       // openblas_get_config(): version and build options
  std::string core;         // openblas_get_corename(): the kernel set in use
  std::string core_choice;  // how the core was chosen: "cpu features", "OPENBLAS_CORETYPE",
                            // "EARNSERVE_BLAS_CORE", "library detection"
};

// The OpenBLAS core name the engine asks for on a CPU with `features` ("" = let the library
// detect). Pure; by features only.
std::string blas_core_for(const CpuFeatures& features);

// Loads the library on first use.
const BlasInfo& blas_info();

// C[m x n] = alpha * A[m x k] * op(B) + beta * C, row-major; op(B) = B^T with B [n x k] when
// trans_b, else B [k x n].
void sgemm(bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
           int ldb, float beta, float* c, int ldc);

// OpenBLAS's own thread pool (process-wide).
int blas_num_threads();
void set_blas_num_threads(int n);

}  // namespace earnserve::cpu
