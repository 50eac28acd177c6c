#include "kernels/cpu/cpu_features.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/logging.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace earnserve::cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf) {
  Regs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}

unsigned long long xgetbv0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

bool bit(unsigned value, int n) { return ((value >> n) & 1u) != 0; }

CpuFeatures read_features() {
  CpuFeatures f;
  const unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 1) return f;
  const Regs l1 = cpuid(1, 0);
  const bool osxsave = bit(l1.c, 27);
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;              // SSE and AVX state
  const bool os_zmm = os_ymm && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM0-15 upper, ZMM16-31
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;      // XTILECFG, XTILEDATA
  f.avx = os_ymm && bit(l1.c, 28);
  f.fma = f.avx && bit(l1.c, 12);
  f.f16c = f.avx && bit(l1.c, 29);
  if (max_leaf >= 7) {
    const Regs l7 = cpuid(7, 0);
    const Regs l7s1 = l7.a >= 1 ? cpuid(7, 1) : Regs{};
    f.avx2 = f.avx && bit(l7.b, 5);
    f.avx512f = os_zmm && bit(l7.b, 16);
    f.avx512dq = f.avx512f && bit(l7.b, 17);
    f.avx512cd = f.avx512f && bit(l7.b, 28);
    f.avx512bw = f.avx512f && bit(l7.b, 30);
    f.avx512vl = f.avx512f && bit(l7.b, 31);
    f.avx512_vnni = f.avx512f && bit(l7.c, 11);
    f.avx512_bf16 = f.avx512f && bit(l7s1.a, 5);
    f.avx_vnni = f.avx2 && bit(l7s1.a, 4);
    f.amx_bf16 = os_amx && bit(l7.d, 22);
    f.amx_tile = os_amx && bit(l7.d, 24);
    f.amx_int8 = os_amx && bit(l7.d, 25);
  }
  return f;
}

std::string cpuid_string(unsigned leaf_first, int leaves) {
  std::string s;
  for (int i = 0; i < leaves; ++i) {
    const Regs r = cpuid(leaf_first + static_cast<unsigned>(i), 0);
    for (unsigned v : {r.a, r.b, r.c, r.d}) s.append(reinterpret_cast<const char*>(&v), 4);
  }
  return s;
}
#else
CpuFeatures read_features() { return CpuFeatures{}; }
#endif

std::string trimmed(std::string s) {
  s.erase(std::find(s.begin(), s.end(), '\0'), s.end());
  const size_t begin = s.find_first_not_of(' ');
  const size_t end = s.find_last_not_of(' ');
  return begin == std::string::npos ? std::string() : s.substr(begin, end - begin + 1);
}

bool machine_has_avx2() {
  const CpuFeatures& f = cpu_features();
  return f.avx2 && f.fma && f.f16c;
}

bool machine_has_avx512() {
  const CpuFeatures& f = cpu_features();
  return machine_has_avx2() && f.avx512_core() && f.avx512_vnni;
}

CpuIsa initial_isa() {
  const CpuIsa best = best_cpu_isa();
  const char* env = std::getenv("EARNSERVE_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  for (CpuIsa isa : kAllCpuIsas) {
    if (std::strcmp(env, cpu_isa_name(isa)) != 0) continue;
    if (cpu_isa_supported(isa)) return isa;
    ES_LOG(Warning) << "EARNSERVE_CPU_ISA=" << env << " but this CPU cannot run that path; using "
                    << cpu_isa_name(best);
    return best;
  }
  ES_LOG(Warning) << "EARNSERVE_CPU_ISA=" << env
                  << " is not a path (portable, avx2 or avx512); using " << cpu_isa_name(best);
  return best;
}

std::atomic<CpuIsa>& isa_storage() {
  static std::atomic<CpuIsa> isa(initial_isa());
  return isa;
}

}  // namespace

std::string CpuFeatures::names() const {
  const std::pair<bool, const char*> all[] = {
      {avx, "avx"},
      {avx2, "avx2"},
      {fma, "fma"},
      {f16c, "f16c"},
      {avx512f, "avx512f"},
      {avx512bw, "avx512bw"},
      {avx512vl, "avx512vl"},
      {avx512dq, "avx512dq"},
      {avx512cd, "avx512cd"},
      {avx512_vnni, "avx512_vnni"},
      {avx512_bf16, "avx512_bf16"},
      {avx_vnni, "avx_vnni"},
      {amx_tile, "amx_tile"},
      {amx_bf16, "amx_bf16"},
      {amx_int8, "amx_int8"},
  };
  std::string s;
  for (const auto& [present, name] : all) {
    if (!present) continue;
    if (!s.empty()) s += ' ';
    s += name;
  }
  return s;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = read_features();
  return features;
}

std::string cpu_vendor() {
#if defined(__x86_64__) || defined(__i386__)
  const Regs r = cpuid(0, 0);
  std::string s;
  for (unsigned v : {r.b, r.d, r.c}) s.append(reinterpret_cast<const char*>(&v), 4);
  return trimmed(s);
#else
  return "";
#endif
}

std::string cpu_brand() {
#if defined(__x86_64__) || defined(__i386__)
  if (__get_cpuid_max(0x80000000u, nullptr) < 0x80000004u) return "";
  return trimmed(cpuid_string(0x80000002u, 3));
#else
  return "";
#endif
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAvx512:
      return "avx512";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kPortable:
      break;
  }
  return "portable";
}

bool cpu_isa_supported(CpuIsa isa) {
  static const bool has_avx2 = machine_has_avx2();
  static const bool has_avx512 = machine_has_avx512();
  switch (isa) {
    case CpuIsa::kAvx512:
      return has_avx512;
    case CpuIsa::kAvx2:
      return has_avx2;
    case CpuIsa::kPortable:
      break;
  }
  return true;
}

CpuIsa best_cpu_isa() {
  if (cpu_isa_supported(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
  return cpu_isa_supported(CpuIsa::kAvx2) ? CpuIsa::kAvx2 : CpuIsa::kPortable;
}

CpuIsa cpu_isa() { return isa_storage().load(std::memory_order_relaxed); }

void set_cpu_isa(CpuIsa isa) {
  ES_CHECK(cpu_isa_supported(isa)) << "this CPU cannot run the " << cpu_isa_name(isa) << " path";
  isa_storage().store(isa);
}

}  // namespace earnserve::cpu
