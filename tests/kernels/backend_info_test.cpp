// CPU feature detection, the OpenBLAS core chosen from features, and what `earnserve info`
// reports.
#include "kernels/backend_info.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/ops.h"

namespace earnserve {
namespace {

using cpu::CpuFeatures;

CpuFeatures avx2_machine() {
  CpuFeatures f;
  f.avx = f.avx2 = f.fma = f.f16c = true;
  return f;
}

CpuFeatures avx512_machine() {
  CpuFeatures f = avx2_machine();
  f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512cd = true;
  return f;
}

TEST(BlasCoreTest, ChosenFromFeaturesOnly) {
  EXPECT_EQ(cpu::blas_core_for(CpuFeatures{}), "");  // no AVX2: the library decides
  CpuFeatures avx_only;
  avx_only.avx = true;
  EXPECT_EQ(cpu::blas_core_for(avx_only), "");
  CpuFeatures avx2_no_fma = avx2_machine();
  avx2_no_fma.fma = false;
  EXPECT_EQ(cpu::blas_core_for(avx2_no_fma), "");
  EXPECT_EQ(cpu::blas_core_for(avx2_machine()), "Haswell");
  EXPECT_EQ(cpu::blas_core_for(avx512_machine()), "SkylakeX");
  CpuFeatures bf16 = avx512_machine();
  bf16.avx512_bf16 = bf16.avx512_vnni = true;
  EXPECT_EQ(cpu::blas_core_for(bf16), "Cooperlake");
  // AVX-512F without the rest of the Skylake set (e.g. Knights Landing) is not SkylakeX.
  CpuFeatures partial = avx2_machine();
  partial.avx512f = true;
  EXPECT_EQ(cpu::blas_core_for(partial), "Haswell");
  // VNNI on AVX2 (Alder Lake's AVX-VNNI) changes nothing for f32 GEMM.
  CpuFeatures avx_vnni = avx2_machine();
  avx_vnni.avx_vnni = true;
  EXPECT_EQ(cpu::blas_core_for(avx_vnni), "Haswell");
}

TEST(CpuFeaturesTest, ConsistentWithTheKernelPath) {
  const CpuFeatures& f = cpu::cpu_features();
  // Implications CPUID guarantees on every real machine.
  if (f.avx2 || f.fma || f.f16c) {
    EXPECT_TRUE(f.avx);
  }
  if (f.avx512bw || f.avx512vl || f.avx512dq || f.avx512_vnni || f.avx512_bf16) {
    EXPECT_TRUE(f.avx512f);
  }
  EXPECT_EQ(cpu::cpu_isa_supported(cpu::CpuIsa::kAvx2), f.avx2 && f.fma && f.f16c);
  EXPECT_EQ(cpu::cpu_isa_supported(cpu::CpuIsa::kAvx512),
            f.avx2 && f.fma && f.f16c && f.avx512_core() && f.avx512_vnni);
  // The path chosen at start-up is the best one the features allow (EARNSERVE_CPU_ISA unset).
  if (std::getenv("EARNSERVE_CPU_ISA") == nullptr) {
    EXPECT_EQ(cpu::cpu_isa(), cpu::best_cpu_isa());
  }
  // names() lists exactly the features set.
  const std::string names = " " + f.names() + " ";
  EXPECT_EQ(names.find(" avx2 ") != std::string::npos, f.avx2);
  EXPECT_EQ(names.find(" avx512f ") != std::string::npos, f.avx512f);
  EXPECT_EQ(names.find(" avx512_bf16 ") != std::string::npos, f.avx512_bf16);
}

TEST(BlasInfoTest, TheLibraryRunsTheCoreTheFeaturesChose) {
  const cpu::BlasInfo& info = cpu::blas_info();
  EXPECT_NE(info.config.find("OpenBLAS"), std::string::npos) << info.config;
  EXPECT_FALSE(info.library.empty());
  if (info.core_choice == "cpu features") {
    // OPENBLAS_CORETYPE was set before the library initialised and the library took it.
    const std::string want = cpu::blas_core_for(cpu::cpu_features());
    ASSERT_FALSE(want.empty());
    EXPECT_EQ(info.core, want) << info.config;
  } else {
    EXPECT_TRUE(info.core_choice == "OPENBLAS_CORETYPE" ||
                info.core_choice == "EARNSERVE_BLAS_CORE" ||
                info.core_choice == "library detection")
        << info.core_choice;
  }
  // The library computes: a small product against a hand sum, both transposes.
  const std::vector<float> a = {1, 2, 3, 4, 5, 6};    // 2 x 3
  const std::vector<float> bt = {1, 0, 2, -1, 1, 0};  // 2 x 3 (B^T rows)
  std::vector<float> c(4, 7.0f);
  cpu::sgemm(true, 2, 2, 3, 1.0f, a.data(), 3, bt.data(), 3, 0.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{7, 1, 16, 1}));
  const std::vector<float> b = {1, -1, 0, 1, 2, 0};  // 3 x 2
  cpu::sgemm(false, 2, 2, 3, 2.0f, a.data(), 3, b.data(), 2, 1.0f, c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{7 + 2 * 7, 1 + 2 * 1, 16 + 2 * 16, 1 + 2 * 1}));
}

TEST(BackendInfoTest, ReportsWhatTheProcessUses) {
  const BackendInfo info = backend_info();
  EXPECT_GT(info.logical_cpus, 0);
  EXPECT_GT(info.threads, 0);
  EXPECT_EQ(info.kernel_isa, cpu::cpu_isa_name(cpu::cpu_isa()));
  EXPECT_EQ(info.gemm_core, cpu::blas_info().core);
  EXPECT_NE(info.gemm.find("core " + info.gemm_core), std::string::npos) << info.gemm;
  const auto j = nlohmann::json::parse(backend_info_json(info));
  EXPECT_EQ(j["cpu"]["features"], info.cpu_features);
  EXPECT_EQ(j["kernels"]["isa"], info.kernel_isa);
  EXPECT_EQ(j["gemm"]["core"], info.gemm_core);
  EXPECT_EQ(j["threads"], info.threads);
  EXPECT_EQ(j["cuda"]["built"], info.built_with_cuda);
  EXPECT_EQ(j["cuda"]["devices"].size(), info.cuda_devices.size());
  const std::string text = backend_info_text(info);
  EXPECT_NE(text.find("gemm: " + info.gemm), std::string::npos) << text;
  EXPECT_NE(text.find("kernel path: " + info.kernel_isa), std::string::npos) << text;
  EXPECT_NE(text.find("int8 linear: " + info.int8_linear), std::string::npos) << text;
  EXPECT_EQ(j["kernels"]["int8_linear"], info.int8_linear);
  EXPECT_NE(info.int8_linear.find(cpu::cpu_isa_name(cpu::cpu_isa())), std::string::npos)
      << info.int8_linear;
  EXPECT_NE(backend_info_line(info).find(info.gemm), std::string::npos);
  EXPECT_EQ(j["kernels"]["weights"], info.weights);
  EXPECT_NE(text.find("weights: " + info.weights), std::string::npos) << text;
  // Panels unless EARNSERVE_WEIGHT_PANELS=0 (tools/test.sh runs the tests both ways), named
  // with the active path.
  if (ops::weight_panels_enabled()) {
    EXPECT_EQ(info.weights.rfind("panels of 32 features", 0), 0u) << info.weights;
    EXPECT_NE(info.weights.find(cpu::cpu_isa_name(cpu::cpu_isa())), std::string::npos)
        << info.weights;
  } else {
    EXPECT_EQ(info.weights.rfind("row-major", 0), 0u) << info.weights;
  }
}

}  // namespace
}  // namespace earnserve
