// Shared helpers of the kernel tests: the backends a case runs on (the CPU's portable, AVX2 and
// AVX-512 paths, CUDA), moving tensors there and back, seeded random inputs, and comparison against
// a double-precision reference with a tolerance per weight dtype. Test-only; not thread-safe.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"
#include "kernels/cpu/cpu_features.h"

namespace earnserve::testing {

enum class Backend { kCpuPortable, kCpuAvx2, kCpuAvx512, kCuda };

inline const std::vector<Backend>& all_backends() {
  static const std::vector<Backend> backends = {Backend::kCpuPortable, Backend::kCpuAvx2,
                                                Backend::kCpuAvx512, Backend::kCuda};
  return backends;
}

inline std::string backend_name(Backend b) {
  switch (b) {
    case Backend::kCpuPortable:
      return "CpuPortable";
    case Backend::kCpuAvx2:
      return "CpuAvx2";
    case Backend::kCpuAvx512:
      return "CpuAvx512";
    case Backend::kCuda:
      return "Cuda";
  }
  return "?";
}

inline std::string dtype_label(DType d) {
  switch (d) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    default:
      return dtype_name(d);
  }
}

inline Device backend_device(Backend b) {
  return b == Backend::kCuda ? Device::kCUDA : Device::kCPU;
}

// Selects `b` for the current test; returns false (after GTEST_SKIP in the caller) when the
// machine lacks it. Restore with restore_backend().
inline bool select_backend(Backend b, std::string* why_not) {
  if (b == Backend::kCuda) {
    if (!cuda_available()) {
      *why_not = "no CUDA device";
      return false;
    }
    return true;
  }
  const cpu::CpuIsa isa = b == Backend::kCpuAvx512 ? cpu::CpuIsa::kAvx512
                          : b == Backend::kCpuAvx2 ? cpu::CpuIsa::kAvx2
                                                   : cpu::CpuIsa::kPortable;
  if (!cpu::cpu_isa_supported(isa)) {
    *why_not = isa == cpu::CpuIsa::kAvx512 ? "CPU lacks AVX-512 F/BW/VL/DQ/CD with VNNI"
                                           : "CPU lacks AVX2/FMA/F16C";
    return false;
  }
  cpu::set_cpu_isa(isa);
  return true;
}

inline void restore_backend() { cpu::set_cpu_isa(cpu::best_cpu_isa()); }

// Fixture base for a parameter type P; subclasses say which backend a parameter means.
template <typename P>
class BackendTest : public ::testing::TestWithParam<P> {
 protected:
  virtual Backend backend() const = 0;
  void SetUp() override {
    std::string why_not;
    if (!select_backend(backend(), &why_not)) GTEST_SKIP() << why_not;
  }
  void TearDown() override { restore_backend(); }

  Device device() const { return backend_device(backend()); }
  // A copy of the CPU tensor `t` on this test's device.
  Tensor on_device(const Tensor& t) const {
    StatusOr<Tensor> moved = t.to(device());
    EXPECT_TRUE(moved.ok()) << moved.status().to_string();
    return std::move(moved).value();
  }
  // Zero-filled f32 tensor on this test's device.
  Tensor device_zeros(const Shape& shape, DType dtype = DType::kF32) const {
    StatusOr<Tensor> t = Tensor::zeros(shape, dtype, device());
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return std::move(t).value();
  }
};

using BackendDtype = std::tuple<Backend, DType>;

// Fixture for ops without weights: parameterised by backend.
class BackendParamTest : public BackendTest<Backend> {
 protected:
  Backend backend() const override { return GetParam(); }
};

// Fixture for ops with a weight input: parameterised by backend and weight dtype.
class BackendDtypeParamTest : public BackendTest<BackendDtype> {
 protected:
  Backend backend() const override { return std::get<0>(GetParam()); }
  DType weight_dtype() const { return std::get<1>(GetParam()); }
};

inline std::string backend_param_name(const ::testing::TestParamInfo<Backend>& info) {
  return backend_name(info.param);
}

inline std::string backend_dtype_param_name(const ::testing::TestParamInfo<BackendDtype>& info) {
  return backend_name(std::get<0>(info.param)) + dtype_label(std::get<1>(info.param));
}

#define ES_INSTANTIATE_BACKENDS(Suite)                                                \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite,                                           \
                           ::testing::ValuesIn(::earnserve::testing::all_backends()), \
                           ::earnserve::testing::backend_param_name)

#define ES_INSTANTIATE_BACKENDS_AND_DTYPES(Suite)                                    \
  INSTANTIATE_TEST_SUITE_P(                                                          \
      BackendsAndDtypes, Suite,                                                      \
      ::testing::Combine(::testing::ValuesIn(::earnserve::testing::all_backends()),  \
                         ::testing::Values(DType::kF32, DType::kBF16, DType::kF16)), \
      ::earnserve::testing::backend_dtype_param_name)

inline Tensor to_host(const Tensor& t) {
  StatusOr<Tensor> host = t.to(Device::kCPU);
  EXPECT_TRUE(host.ok()) << host.status().to_string();
  return std::move(host).value();
}

inline std::vector<float> host_floats(const Tensor& t) { return to_host(t).to_float_vector(); }

inline std::vector<int32_t> host_ints(const Tensor& t) {
  Tensor h = to_host(t);
  const int32_t* p = h.data<int32_t>();
  return std::vector<int32_t>(p, p + h.numel());
}

// Uniform values in [lo, hi), reproducible from `seed`.
inline std::vector<float> random_floats(int64_t n, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(gen);
  return v;
}

inline Tensor random_tensor(const Shape& shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  return Tensor::from_vector(random_floats(shape_numel(shape), seed, lo, hi), shape);
}

// Relative tolerance of an f32 computation whose inputs were rounded to `weight_dtype`: the
// reference uses the rounded weights too, so what remains is f32 accumulation order (and, on
// CUDA, bf16 splitting of activations).
inline double tolerance_for(DType weight_dtype) {
  switch (weight_dtype) {
    case DType::kF32:
      return 2e-5;
    case DType::kBF16:
      return 1e-4;
    case DType::kF16:
      return 5e-5;
    default:
      return 1e-5;
  }
}

// |got - want| <= atol + rtol * |want| elementwise; reports the first few mismatches.
inline void expect_near_all(const std::vector<float>& got, const std::vector<double>& want,
                            double atol, double rtol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(err <= atol + rtol * std::fabs(want[i]))) {
      ADD_FAILURE() << what << ": element " << i << " is " << got[i] << ", expected " << want[i]
                    << " (error " << err << ")";
      if (++reported == 5) return;
    }
  }
}

}  // namespace earnserve::testing
