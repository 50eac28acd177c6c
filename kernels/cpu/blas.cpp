#include "kernels/cpu/blas.h"

#include <cblas.h>
#include <dlfcn.h>

#include <cstdlib>

#include "core/logging.h"

namespace earnserve::cpu {
namespace {

constexpr const char* kLibrary = "libopenblas.so.0";

struct Blas {
  decltype(&cblas_sgemm) sgemm = nullptr;
  void (*set_num_threads)(int) = nullptr;
  int (*get_num_threads)() = nullptr;
  BlasInfo info;
};

template <typename Fn>
Fn symbol(void* handle, const char* name) {
  void* p = dlsym(handle, name);
  ES_CHECK(p != nullptr) << kLibrary << " has no symbol " << name
                         << " (the engine needs Debian's libopenblas0)";
  return reinterpret_cast<Fn>(p);
}

// Sets OPENBLAS_CORETYPE (unless the user did) and returns how the core is chosen.
std::string choose_core() {
  if (const char* user = std::getenv("OPENBLAS_CORETYPE"); user != nullptr && *user != '\0') {
    return "OPENBLAS_CORETYPE";
  }
  std::string core;
  std::string choice = "cpu features";
  if (const char* forced = std::getenv("EARNSERVE_BLAS_CORE"); forced != nullptr && *forced) {
    if (std::string(forced) == "library") return "library detection";
    core = forced;
    choice = "EARNSERVE_BLAS_CORE";
  } else {
    core = blas_core_for(cpu_features());
    if (core.empty()) return "library detection";
  }
  ::setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  return choice;
}

const Blas& blas() {
  static const Blas* loaded = [] {
    auto* b = new Blas();
    b->info.core_choice = choose_core();
    void* handle = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
    ES_CHECK(handle != nullptr) << "cannot load " << kLibrary << ": " << dlerror()
                                << " (install Debian's libopenblas0)";
    b->sgemm = symbol<decltype(&cblas_sgemm)>(handle, "cblas_sgemm");
    b->set_num_threads = symbol<void (*)(int)>(handle, "openblas_set_num_threads");
    b->get_num_threads = symbol<int (*)()>(handle, "openblas_get_num_threads");
    auto config = symbol<char* (*)()>(handle, "openblas_get_config");
    auto corename = symbol<char* (*)()>(handle, "openblas_get_corename");
    b->info.config = config();
    b->info.core = corename();
    Dl_info where{};
    b->info.library = dladdr(reinterpret_cast<void*>(b->sgemm), &where) != 0 && where.dli_fname
                          ? where.dli_fname
                          : kLibrary;
    return b;
  }();
  return *loaded;
}

}  // namespace

std::string blas_core_for(const CpuFeatures& f) {
  if (f.avx512_core() && f.avx512_bf16) return "Cooperlake";
  if (f.avx512_core()) return "SkylakeX";
  if (f.avx2 && f.fma) return "Haswell";
  return "";
}

const BlasInfo& blas_info() { return blas().info; }

void sgemm(bool trans_b, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
           int ldb, float beta, float* c, int ldc) {
  blas().sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
               lda, b, ldb, beta, c, ldc);
}

int blas_num_threads() { return blas().get_num_threads(); }

void set_blas_num_threads(int n) { blas().set_num_threads(n); }

}  // namespace earnserve::cpu
