#include "kernels/cpu/panel_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <type_traits>
#include <utility>

#include "core/half.h"
#include "core/logging.h"
#include "core/threading.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/simd_targets.h"

namespace earnserve::cpu {
namespace {

constexpr int kW = static_cast<int>(kPanelWidth);
// No software prefetch: each worker reads its panels front to back, which the hardware
// prefetchers follow on their own. Measured on a Zen 4 (2 threads, one-row products over a
// Qwen2.5-0.5B's 144 projections, six interleaved rounds): medians of 22-36 GB/s without it
// against 22-32 with _MM_HINT_T0 8 rows ahead and 25-35 at 32 rows.

// One call of a kernel: rows [0, mr) of a (row stride lda) times a block of kc panel rows at b
// (width w, row stride w), into c (row stride ldc); c = sums, or c += sums when accumulate.
struct Block {
  const float* a;
  int64_t lda;
  const void* b;
  int64_t kc;
  int w;
  float* c;
  int64_t ldc;
  bool accumulate;
};

// ---- Portable ---------------------------------------------------------------------------------

// Any width up to 32 (also the partial last panel on every path).
template <int MR, bool kBf16>
void kernel_portable(const Block& blk) {
  float acc[MR][kW] = {};
  float row[kW];
  const int w = blk.w;
  for (int64_t k = 0; k < blk.kc; ++k) {
    if constexpr (kBf16) {
      const uint16_t* src = static_cast<const uint16_t*>(blk.b) + k * w;
      for (int j = 0; j < w; ++j) row[j] = bf16_to_float(src[j]);
    } else {
      std::memcpy(row, static_cast<const float*>(blk.b) + k * w,
                  static_cast<size_t>(w) * sizeof(float));
    }
    for (int i = 0; i < MR; ++i) {
      const float ai = blk.a[i * blk.lda + k];
      for (int j = 0; j < w; ++j) acc[i][j] += ai * row[j];
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = blk.c + i * blk.ldc;
    for (int j = 0; j < w; ++j) c[j] = blk.accumulate ? c[j] + acc[i][j] : acc[i][j];
  }
}

// ---- AVX2: the whole 32-wide row for 1-2 rows of x, or one 16-wide half for up to 6 -----------

template <bool kBf16>
ES_AVX2 inline __m256 load8(const void* b, int64_t offset) {
  if constexpr (kBf16) {
    const __m128i h =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(b) + offset));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(b) + offset);
  }
}

// `half` < 0: all 32 columns (NV = 4 vectors); else columns [16 half, 16 half + 16) (NV = 2).
template <int MR, int NV, bool kBf16>
ES_AVX2 void kernel_avx2(const Block& blk, int half) {
  __m256 acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
  }
  const int64_t col0 = NV == 4 ? 0 : 16 * half;
  for (int64_t k = 0; k < blk.kc; ++k) {
    const int64_t row = k * kW;
    __m256 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load8<kBf16>(blk.b, row + col0 + 8 * v);
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(blk.a + i * blk.lda + k);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, b[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = blk.c + i * blk.ldc + col0;
    for (int v = 0; v < NV; ++v) {
      const __m256 prev = blk.accumulate ? _mm256_loadu_ps(c + 8 * v) : _mm256_setzero_ps();
      _mm256_storeu_ps(c + 8 * v, _mm256_add_ps(prev, acc[i][v]));
    }
  }
}

// ---- AVX-512: 12 rows x 32 columns of sums in 24 zmm registers --------------------------------

template <int MR, bool kBf16>
ES_AVX512 void kernel_avx512(const Block& blk) {
  __m512 acc0[MR], acc1[MR];
  for (int i = 0; i < MR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < blk.kc; ++k) {
    __m512 b0, b1;
    if constexpr (kBf16) {
      const uint16_t* bk = static_cast<const uint16_t*>(blk.b) + k * kW;
      const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk));
      const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk + 16));
      // (The zero-masked forms with every lane set: the plain intrinsics start from an
      // "undefined" vector that GCC 12 reports as maybe uninitialised.)
      const __mmask16 all = 0xFFFF;
      b0 = _mm512_castsi512_ps(
          _mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, lo), 16));
      b1 = _mm512_castsi512_ps(
          _mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, hi), 16));
    } else {
      const float* bk = static_cast<const float*>(blk.b) + k * kW;
      b0 = _mm512_loadu_ps(bk);
      b1 = _mm512_loadu_ps(bk + 16);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(blk.a[i * blk.lda + k]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = blk.c + i * blk.ldc;
    if (blk.accumulate) {
      acc0[i] = _mm512_add_ps(acc0[i], _mm512_loadu_ps(c));
      acc1[i] = _mm512_add_ps(acc1[i], _mm512_loadu_ps(c + 16));
    }
    _mm512_storeu_ps(c, acc0[i]);
    _mm512_storeu_ps(c + 16, acc1[i]);
  }
}

// ---- Dispatch ---------------------------------------------------------------------------------

using KernelFn = void (*)(const Block&);

template <bool kBf16, int... MRs>
constexpr auto portable_table(std::integer_sequence<int, MRs...>) {
  return std::array<KernelFn, sizeof...(MRs)>{&kernel_portable<MRs + 1, kBf16>...};
}
template <bool kBf16, int... MRs>
constexpr auto avx512_table(std::integer_sequence<int, MRs...>) {
  return std::array<KernelFn, sizeof...(MRs)>{&kernel_avx512<MRs + 1, kBf16>...};
}
using HalfFn = void (*)(const Block&, int);
template <int NV, bool kBf16, int... MRs>
constexpr auto avx2_table(std::integer_sequence<int, MRs...>) {
  return std::array<HalfFn, sizeof...(MRs)>{&kernel_avx2<MRs + 1, NV, kBf16>...};
}

constexpr int kMrPortable = 4;
constexpr int kMrAvx2Full = 2;
constexpr int kMrAvx2Half = 6;
constexpr int kMrAvx512 = 12;

// Splits rows [0, m) into chunks of at most max_mr rows, as even as they come (13 rows at 12 are
// 7 + 6, not 12 + 1), and calls fn(row0, rows) for each.
template <typename Fn>
void for_each_chunk(int64_t m, int max_mr, const Fn& fn) {
  const int64_t chunks = (m + max_mr - 1) / max_mr;
  int64_t row = 0;
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t rows = (m - row) / (chunks - c) + ((m - row) % (chunks - c) != 0 ? 1 : 0);
    fn(row, static_cast<int>(rows));
    row += rows;
  }
}

// One block of one panel against all m rows.
template <bool kBf16>
void run_block(CpuIsa isa, Block blk, int64_t m) {
  static constexpr auto kPortable = portable_table<kBf16>(std::make_integer_sequence<int, 4>());
  static constexpr auto kAvx512 = avx512_table<kBf16>(std::make_integer_sequence<int, 12>());
  static constexpr auto kAvx2Full = avx2_table<4, kBf16>(std::make_integer_sequence<int, 2>());
  static constexpr auto kAvx2Half = avx2_table<2, kBf16>(std::make_integer_sequence<int, 6>());
  static_assert(kPortable.size() == kMrPortable && kAvx512.size() == kMrAvx512 &&
                kAvx2Full.size() == kMrAvx2Full && kAvx2Half.size() == kMrAvx2Half);
  const float* a = blk.a;
  float* c = blk.c;
  auto at_rows = [&](int64_t row0) {
    Block b = blk;
    b.a = a + row0 * blk.lda;
    b.c = c + row0 * blk.ldc;
    return b;
  };
  if (blk.w != kW || isa == CpuIsa::kPortable) {
    for_each_chunk(m, kMrPortable, [&](int64_t row0, int rows) {
      kPortable[static_cast<size_t>(rows - 1)](at_rows(row0));
    });
  } else if (isa == CpuIsa::kAvx512) {
    for_each_chunk(m, kMrAvx512, [&](int64_t row0, int rows) {
      kAvx512[static_cast<size_t>(rows - 1)](at_rows(row0));
    });
  } else if (m <= kMrAvx2Full) {
    kAvx2Full[static_cast<size_t>(m - 1)](blk, -1);
  } else {
    for (int half = 0; half < 2; ++half) {
      for_each_chunk(m, kMrAvx2Half, [&](int64_t row0, int rows) {
        kAvx2Half[static_cast<size_t>(rows - 1)](at_rows(row0), half);
      });
    }
  }
}

template <bool kBf16>
void panel_gemm_typed(const float* x, int64_t m, int64_t k, const void* panels, int64_t n,
                      float beta, float* y) {
  using Elem = std::conditional_t<kBf16, uint16_t, float>;
  const Elem* base = static_cast<const Elem*>(panels);
  const int64_t num_panels = (n + kPanelWidth - 1) / kPanelWidth;
  const CpuIsa isa = cpu_isa();
  // Work per panel: 2 m k w flops, and k w weights read.
  const int64_t work = std::max<int64_t>(2 * m, 4) * k * kPanelWidth;
  parallel_for(num_panels, grain_for_work(work), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * kPanelWidth;
      const int w = static_cast<int>(std::min(kPanelWidth, n - n0));
      const Elem* panel = base + n0 * k;
      for (int64_t k0 = 0; k0 < k; k0 += kPanelKBlock) {
        Block blk;
        blk.a = x + k0;
        blk.lda = k;
        blk.b = panel + k0 * w;
        blk.kc = std::min(kPanelKBlock, k - k0);
        blk.w = w;
        blk.c = y + n0;
        blk.ldc = n;
        blk.accumulate = k0 > 0 || beta != 0.0f;
        run_block<kBf16>(isa, blk, m);
      }
    }
  });
}

template <typename Elem>
void pack_typed(const Elem* src, int64_t n, int64_t k, Elem* dst) {
  parallel_for((n + kPanelWidth - 1) / kPanelWidth, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * kPanelWidth;
      const int64_t w = std::min(kPanelWidth, n - n0);
      Elem* panel = dst + n0 * k;
      for (int64_t j = 0; j < w; ++j) {
        const Elem* row = src + (n0 + j) * k;
        for (int64_t kk = 0; kk < k; ++kk) panel[kk * w + j] = row[kk];
      }
    }
  });
}

template <typename Elem>
void unpack_typed(const Elem* src, int64_t n, int64_t k, Elem* dst) {
  for (int64_t n0 = 0; n0 < n; n0 += kPanelWidth) {
    const int64_t w = std::min(kPanelWidth, n - n0);
    const Elem* panel = src + n0 * k;
    for (int64_t j = 0; j < w; ++j) {
      for (int64_t kk = 0; kk < k; ++kk) dst[(n0 + j) * k + kk] = panel[kk * w + j];
    }
  }
}

}  // namespace

bool panel_dtype_supported(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16; }

void pack_panels(const void* src, DType dtype, int64_t n, int64_t k, void* dst) {
  ES_CHECK(panel_dtype_supported(dtype)) << "pack_panels: " << dtype_name(dtype);
  if (dtype == DType::kF32) {
    pack_typed(static_cast<const float*>(src), n, k, static_cast<float*>(dst));
  } else {
    pack_typed(static_cast<const uint16_t*>(src), n, k, static_cast<uint16_t*>(dst));
  }
}

void unpack_panels(const void* src, DType dtype, int64_t n, int64_t k, void* dst) {
  ES_CHECK(panel_dtype_supported(dtype)) << "unpack_panels: " << dtype_name(dtype);
  if (dtype == DType::kF32) {
    unpack_typed(static_cast<const float*>(src), n, k, static_cast<float*>(dst));
  } else {
    unpack_typed(static_cast<const uint16_t*>(src), n, k, static_cast<uint16_t*>(dst));
  }
}

void panel_row(const void* panels, DType dtype, int64_t n, int64_t k, int64_t row, float* dst) {
  ES_CHECK(panel_dtype_supported(dtype) && 0 <= row && row < n) << "panel_row: row " << row;
  const int64_t n0 = row / kPanelWidth * kPanelWidth;
  const int64_t w = std::min(kPanelWidth, n - n0);
  const int64_t j = row - n0;
  if (dtype == DType::kF32) {
    const float* src = static_cast<const float*>(panels) + n0 * k + j;
    for (int64_t kk = 0; kk < k; ++kk) dst[kk] = src[kk * w];
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(panels) + n0 * k + j;
    for (int64_t kk = 0; kk < k; ++kk) dst[kk] = bf16_to_float(src[kk * w]);
  }
}

void panel_gemm(const float* x, int64_t m, int64_t k, const void* panels, DType dtype, int64_t n,
                float beta, float* y) {
  ES_CHECK(panel_dtype_supported(dtype)) << "panel_gemm: " << dtype_name(dtype);
  ES_CHECK(beta == 0.0f || beta == 1.0f) << "panel_gemm: beta " << beta;
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 0.0f) std::memset(y, 0, static_cast<size_t>(m * n) * sizeof(float));
    return;
  }
  if (dtype == DType::kF32) {
    panel_gemm_typed<false>(x, m, k, panels, n, beta, y);
  } else {
    panel_gemm_typed<true>(x, m, k, panels, n, beta, y);
  }
}

}  // namespace earnserve::cpu
