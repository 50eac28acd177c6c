#include "kernels/cpu/panel_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/half.h"
#include "core/logging.h"
#include "core/threading.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/simd_targets.h"
#include "kernels/cpu/vec_math.h"

namespace earnserve::cpu {
namespace {

constexpr int kW = static_cast<int>(kPanelWidth);
// No software prefetch: each worker reads its panels front to back, which the hardware
// prefetchers follow on their own. Measured on a Zen 4 (2 threads, one-row products over a
// Qwen2.5-0.5B's 144 projections, six interleaved rounds): medians of 22-36 GB/s without it
// against 22-32 with _MM_HINT_T0 8 rows ahead and 25-35 at 32 rows.

// Where (feature j, input kk) of a panel of width w over k inputs sits in it: rows of k in
// groups of `group` (f32 1, bf16 2, int8 4: one 32-bit word per feature and group), the groups
// interleaved per feature, k-major; rows past the last whole group plain.
int64_t panel_offset(int group, int64_t w, int64_t k, int64_t j, int64_t kk) {
  if (kk < k / group * group) return (kk / group) * group * w + group * j + kk % group;
  return kk * w + j;
}

// The group of a dtype's panels (see panel_offset).
template <typename Elem>
constexpr int kGroup = 4 / static_cast<int>(sizeof(Elem));

// int8 panels store a weight q as the unsigned byte q + 128 (vpdpbusd's unsigned operand): q with
// its sign bit flipped. Its own inverse.
inline int8_t flip_sign(int8_t q) { return static_cast<int8_t>(static_cast<uint8_t>(q) ^ 0x80u); }

// One call of a kernel: rows [0, mr) of a (row stride lda) times a block of kc panel rows at b
// (width w, row stride w), into c (row stride ldc); c = sums, or c += sums when accumulate.
struct Block {
  const float* a;
  int64_t lda;
  // The native bf16 kernel: a's rows rounded to bf16, as pairs (k even, k + 1) in one 32-bit
  // word each, row stride lda2 words (the f32 a is still read for an odd last k).
  const uint32_t* a2 = nullptr;
  int64_t lda2 = 0;
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
      // (A block of kc rows is laid out as a panel over kc inputs: blocks start at even k.)
      const uint16_t* b = static_cast<const uint16_t*>(blk.b);
      for (int j = 0; j < w; ++j)
        row[j] = bf16_to_float(b[panel_offset(kGroup<uint16_t>, w, blk.kc, j, k)]);
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

// 8 bf16 pairs (8 features at k and k + 1, one 32-bit word each) as two f32 vectors: the low
// halves shifted up (k), the high halves masked (k + 1).
ES_AVX2 inline void widen_pairs8(const uint16_t* p, __m256& even, __m256& odd) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

ES_AVX2 inline __m256 widen8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// `half` < 0: all 32 columns (NV = 4 vectors); else columns [16 half, 16 half + 16) (NV = 2).
template <int MR, int NV, bool kBf16>
ES_AVX2 void kernel_avx2(const Block& blk, int half) {
  __m256 acc[MR][NV];
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();
  }
  const int64_t col0 = NV == 4 ? 0 : 16 * half;
  int64_t k = 0;
  if constexpr (kBf16) {
    const uint16_t* b = static_cast<const uint16_t*>(blk.b);
    for (; k + 1 < blk.kc; k += 2) {
      const uint16_t* pair = b + k * kW + 2 * col0;
      __m256 even[NV], odd[NV];
      for (int v = 0; v < NV; ++v) widen_pairs8(pair + 16 * v, even[v], odd[v]);
      for (int i = 0; i < MR; ++i) {
        const __m256 a0 = _mm256_broadcast_ss(blk.a + i * blk.lda + k);
        const __m256 a1 = _mm256_broadcast_ss(blk.a + i * blk.lda + k + 1);
        for (int v = 0; v < NV; ++v) {
          acc[i][v] = _mm256_fmadd_ps(a0, even[v], acc[i][v]);
          acc[i][v] = _mm256_fmadd_ps(a1, odd[v], acc[i][v]);
        }
      }
    }
  }
  for (; k < blk.kc; ++k) {  // f32 rows, or a bf16 block's odd last row
    __m256 b[NV];
    for (int v = 0; v < NV; ++v) {
      if constexpr (kBf16) {
        b[v] = widen8(static_cast<const uint16_t*>(blk.b) + k * kW + col0 + 8 * v);
      } else {
        b[v] = _mm256_loadu_ps(static_cast<const float*>(blk.b) + k * kW + col0 + 8 * v);
      }
    }
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

// 16 bf16 pairs as two f32 vectors (see widen_pairs8).
ES_AVX512 inline void widen_pairs16(const uint16_t* p, __m512& even, __m512& odd) {
  const __m512i v = _mm512_loadu_si512(p);
  even = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xFFFF, v, 16));
  odd = _mm512_castsi512_ps(
      _mm512_maskz_and_epi32(0xFFFF, v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
}

ES_AVX512 inline __m512 widen16(const uint16_t* p) {
  // (The zero-masked forms with every lane set: the plain intrinsics start from an "undefined"
  // vector that GCC 12 reports as maybe uninitialised.)
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(
      _mm512_maskz_slli_epi32(0xFFFF, _mm512_maskz_cvtepu16_epi32(0xFFFF, h), 16));
}

template <int MR>
ES_AVX512 inline void store_sums(const Block& blk, __m512 (&acc0)[MR], __m512 (&acc1)[MR]) {
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

template <int MR>
ES_AVX512 inline void fma_row(const Block& blk, int64_t k, __m512 b0, __m512 b1, __m512 (&acc0)[MR],
                              __m512 (&acc1)[MR]) {
  for (int i = 0; i < MR; ++i) {
    const __m512 ai = _mm512_set1_ps(blk.a[i * blk.lda + k]);
    acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
    acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
  }
}

template <int MR, bool kBf16>
ES_AVX512 void kernel_avx512(const Block& blk) {
  __m512 acc0[MR], acc1[MR];
  for (int i = 0; i < MR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  int64_t k = 0;
  if constexpr (kBf16) {
    // One row (decode): the odd inputs into sums of their own, added at the end, so that no FMA
    // waits on the one before it within a pair. More rows have chains enough.
    constexpr bool kSplit = MR == 1;
    __m512 odd_sums0[MR], odd_sums1[MR];
    if constexpr (kSplit) {
      odd_sums0[0] = _mm512_setzero_ps();
      odd_sums1[0] = _mm512_setzero_ps();
    }
    __m512(&odd0)[MR] = kSplit ? odd_sums0 : acc0;
    __m512(&odd1)[MR] = kSplit ? odd_sums1 : acc1;
    const uint16_t* b = static_cast<const uint16_t*>(blk.b);
    for (; k + 1 < blk.kc; k += 2) {
      __m512 even0, odd_row0, even1, odd_row1;
      widen_pairs16(b + k * kW, even0, odd_row0);
      widen_pairs16(b + k * kW + 32, even1, odd_row1);
      fma_row<MR>(blk, k, even0, even1, acc0, acc1);
      fma_row<MR>(blk, k + 1, odd_row0, odd_row1, odd0, odd1);
    }
    if constexpr (kSplit) {
      acc0[0] = _mm512_add_ps(acc0[0], odd_sums0[0]);
      acc1[0] = _mm512_add_ps(acc1[0], odd_sums1[0]);
    }
    if (k < blk.kc) {
      const uint16_t* row = b + k * kW;
      fma_row<MR>(blk, k, widen16(row), widen16(row + 16), acc0, acc1);
    }
  } else {
    for (; k < blk.kc; ++k) {
      const float* bk = static_cast<const float*>(blk.b) + k * kW;
      fma_row<MR>(blk, k, _mm512_loadu_ps(bk), _mm512_loadu_ps(bk + 16), acc0, acc1);
    }
  }
  store_sums<MR>(blk, acc0, acc1);
}

// bf16 x bf16 with f32 sums (AVX512_BF16 vdpbf16ps: per lane, the pair's two products added to
// the sum): the weights' pairs against the rows' pairs, 2 k per instruction.
template <int MR>
ES_AVX512_BF16 void kernel_avx512_dot(const Block& blk) {
  __m512 acc0[MR], acc1[MR];
  for (int i = 0; i < MR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  const uint16_t* b = static_cast<const uint16_t*>(blk.b);
  int64_t k = 0;
  for (; k + 1 < blk.kc; k += 2) {
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + k * kW));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + k * kW + 32));
    const uint32_t* a2 = blk.a2 + k / 2;
    for (int i = 0; i < MR; ++i) {
      const __m512bh ai =
          reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a2[i * blk.lda2])));
      acc0[i] = _mm512_dpbf16_ps(acc0[i], ai, b0);
      acc1[i] = _mm512_dpbf16_ps(acc1[i], ai, b1);
    }
  }
  if (k < blk.kc) {
    const uint16_t* row = b + k * kW;
    fma_row<MR>(blk, k, widen16(row), widen16(row + 16), acc0, acc1);
  }
  store_sums<MR>(blk, acc0, acc1);
}

// One row of x rounded to bf16: as pairs (word kp: x[2kp] low, x[2kp + 1] high; an odd k's last
// pair has 0 high), (k + 1) / 2 words, and as the f32 values of those bf16 (what the kernels that
// widen the weights read, so every panel of the product multiplies the same rounded row).
ES_AVX512_BF16 void round_row_to_bf16(const float* src, int64_t k, uint32_t* pairs,
                                      float* rounded) {
  auto* dst = reinterpret_cast<uint16_t*>(pairs);
  int64_t i = 0;
  for (; i + 32 <= k; i += 32) {
    // cvtne2ps_pbh(hi, lo): lanes 0-15 from lo, 16-31 from hi, in order: pairs as words.
    const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i));
    _mm512_storeu_si512(dst + i, reinterpret_cast<__m512i>(h));
    _mm512_storeu_ps(rounded + i, widen16(dst + i));
    _mm512_storeu_ps(rounded + i + 16, widen16(dst + i + 16));
  }
  for (; i < k; ++i) {
    dst[i] = float_to_bf16(src[i]);
    rounded[i] = bf16_to_float(dst[i]);
  }
  if (k % 2 == 1) dst[k] = 0;
}

void round_rows_to_bf16(const float* x, int64_t m, int64_t k, uint32_t* pairs, float* rounded) {
  const int64_t k2 = (k + 1) / 2;
  parallel_for(m, grain_for_work(k), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      round_row_to_bf16(x + r * k, k, pairs + r * k2, rounded + r * k);
    }
  });
}

// ---- int8 weights x int8 rows ---------------------------------------------------------------
//
// Panels of int8 weights in groups of four rows, K a multiple of 4, each weight stored as the
// unsigned byte q_w + 128. Rows quantised per call as the row-major int8 GEMV quantises them
// (vec_math.h quantize_activations_i8: blocks of kI8Block with one scale each), four q_x of a
// group as one 32-bit word of signed bytes, and each block's sum of q_x. Per block of 32 inputs:
// int32 sums of (q_w + 128) q_x (AVX512-VNNI vpdpbusd: a lane adds the four products of a group,
// unsigned by signed bytes: one instruction per 64 bytes of weights), minus 128 * sum q_x, which
// is exactly sum q_w q_x; then f32 sums += int32 sums * the row's block scale; at the end
// y (+)= sums * the feature's weight scale. The same sum as the GEMV's,
// s_w * sum_b s_x[b] * sum_{i in b} q_w[i] q_x[i], in another order of f32 additions.

struct BlockI8 {
  const uint32_t* a4;  // rows' groups of four int8 q, row stride lda4 words
  int64_t lda4;
  const float* sx;      // rows' block scales, row stride ldsx; the block of input k0 first
  const int32_t* sumx;  // rows' block sums of q, the same strides as sx
  int64_t ldsx;
  const uint8_t* b;  // panel rows from k0 (q_w + 128), width w
  int64_t kc;        // a multiple of 4
  int w;
  const float* sw;  // the panel's w weight scales
  float* c;
  int64_t ldc;
  bool accumulate;
};

template <int MR>
void kernel_i8_portable(const BlockI8& blk) {
  float acc[MR][kW] = {};
  const int w = blk.w;
  for (int64_t g = 0; g < blk.kc; g += kI8Block) {
    const int64_t end = std::min(blk.kc, g + kI8Block);
    int32_t isum[MR][kW] = {};
    for (int64_t k = g; k < end; k += 4) {
      const uint8_t* group = blk.b + panel_offset(kGroup<int8_t>, w, blk.kc, 0, k);
      for (int i = 0; i < MR; ++i) {
        const uint32_t a = blk.a4[i * blk.lda4 + k / 4];
        for (int j = 0; j < w; ++j) {
          for (int t = 0; t < 4; ++t) {
            const int32_t qx = static_cast<int8_t>((a >> (8 * t)) & 0xFF);
            isum[i][j] += (static_cast<int32_t>(group[4 * j + t]) - 128) * qx;
          }
        }
      }
    }
    for (int i = 0; i < MR; ++i) {
      const float s = blk.sx[i * blk.ldsx + g / kI8Block];
      for (int j = 0; j < w; ++j) acc[i][j] += static_cast<float>(isum[i][j]) * s;
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = blk.c + i * blk.ldc;
    for (int j = 0; j < w; ++j) {
      const float v = acc[i][j] * blk.sw[j];
      c[j] = blk.accumulate ? c[j] + v : v;
    }
  }
}

template <int MR>
ES_AVX512 void kernel_i8_avx512(const BlockI8& blk) {
  __m512 acc0[MR], acc1[MR];
  for (int i = 0; i < MR; ++i) {
    acc0[i] = _mm512_setzero_ps();
    acc1[i] = _mm512_setzero_ps();
  }
  for (int64_t g = 0; g < blk.kc; g += kI8Block) {
    const int64_t end = std::min(blk.kc, g + kI8Block);
    __m512i s0[MR], s1[MR];
    for (int i = 0; i < MR; ++i) {
      s0[i] = _mm512_setzero_si512();
      s1[i] = _mm512_setzero_si512();
    }
    for (int64_t k = g; k < end; k += 4) {
      const uint8_t* group = blk.b + k * kW;  // 128 bytes: features 0-15, then 16-31
      const __m512i w0 = _mm512_loadu_si512(group);
      const __m512i w1 = _mm512_loadu_si512(group + 64);
      const uint32_t* a4 = blk.a4 + k / 4;
      for (int i = 0; i < MR; ++i) {
        const __m512i a = _mm512_set1_epi32(static_cast<int>(a4[i * blk.lda4]));
        s0[i] = _mm512_dpbusd_epi32(s0[i], w0, a);
        s1[i] = _mm512_dpbusd_epi32(s1[i], w1, a);
      }
    }
    const float* sx = blk.sx + g / kI8Block;
    const int32_t* sumx = blk.sumx + g / kI8Block;
    for (int i = 0; i < MR; ++i) {
      const __m512i offset = _mm512_set1_epi32(128 * sumx[i * blk.ldsx]);
      s0[i] = _mm512_sub_epi32(s0[i], offset);
      s1[i] = _mm512_sub_epi32(s1[i], offset);
      const __m512 s = _mm512_set1_ps(sx[i * blk.ldsx]);
      // (Zero-masked conversions: see widen16.)
      acc0[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, s0[i]), s, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, s1[i]), s, acc1[i]);
    }
  }
  const __m512 sw0 = _mm512_loadu_ps(blk.sw), sw1 = _mm512_loadu_ps(blk.sw + 16);
  for (int i = 0; i < MR; ++i) {
    float* c = blk.c + i * blk.ldc;
    __m512 v0 = _mm512_mul_ps(acc0[i], sw0), v1 = _mm512_mul_ps(acc1[i], sw1);
    if (blk.accumulate) {
      v0 = _mm512_add_ps(v0, _mm512_loadu_ps(c));
      v1 = _mm512_add_ps(v1, _mm512_loadu_ps(c + 16));
    }
    _mm512_storeu_ps(c, v0);
    _mm512_storeu_ps(c + 16, v1);
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
template <int... MRs>
constexpr auto avx512_dot_table(std::integer_sequence<int, MRs...>) {
  return std::array<KernelFn, sizeof...(MRs)>{&kernel_avx512_dot<MRs + 1>...};
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

// One block of one panel against all m rows. `dot`: bf16 weights with blk.a2 set, multiplied by
// vdpbf16ps (whole panels; a short last panel takes the portable kernel on f32 rows).
template <bool kBf16>
void run_block(CpuIsa isa, bool dot, Block blk, int64_t m) {
  static constexpr auto kPortable = portable_table<kBf16>(std::make_integer_sequence<int, 4>());
  static constexpr auto kAvx512 = avx512_table<kBf16>(std::make_integer_sequence<int, 12>());
  static constexpr auto kAvx512Dot = avx512_dot_table(std::make_integer_sequence<int, 12>());
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
    if (blk.a2 != nullptr) b.a2 = blk.a2 + row0 * blk.lda2;
    return b;
  };
  if (blk.w != kW || isa == CpuIsa::kPortable) {
    for_each_chunk(m, kMrPortable, [&](int64_t row0, int rows) {
      kPortable[static_cast<size_t>(rows - 1)](at_rows(row0));
    });
  } else if (dot) {
    for_each_chunk(m, kMrAvx512, [&](int64_t row0, int rows) {
      kAvx512Dot[static_cast<size_t>(rows - 1)](at_rows(row0));
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
  // bf16 x bf16 products: rows rounded to bf16 once per call, into this thread's buffer.
  const bool dot = kBf16 && bf16_dot_products(m);
  thread_local std::vector<uint32_t> pairs;
  thread_local std::vector<float> rounded;
  const int64_t k2 = (k + 1) / 2;
  if (dot) {
    pairs.resize(static_cast<size_t>(m * k2));
    rounded.resize(static_cast<size_t>(m * k));
    round_rows_to_bf16(x, m, k, pairs.data(), rounded.data());
    x = rounded.data();
  }
  const uint32_t* a2 = dot ? pairs.data() : nullptr;
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
        if (dot) {
          blk.a2 = a2 + k0 / 2;
          blk.lda2 = k2;
        }
        blk.b = panel + k0 * w;
        blk.kc = std::min(kPanelKBlock, k - k0);
        blk.w = w;
        blk.c = y + n0;
        blk.ldc = n;
        blk.accumulate = k0 > 0 || beta != 0.0f;
        run_block<kBf16>(isa, dot, blk, m);
      }
    }
  });
}

using KernelI8Fn = void (*)(const BlockI8&);
template <int... MRs>
constexpr auto i8_portable_table(std::integer_sequence<int, MRs...>) {
  return std::array<KernelI8Fn, sizeof...(MRs)>{&kernel_i8_portable<MRs + 1>...};
}
template <int... MRs>
constexpr auto i8_avx512_table(std::integer_sequence<int, MRs...>) {
  return std::array<KernelI8Fn, sizeof...(MRs)>{&kernel_i8_avx512<MRs + 1>...};
}
// 6 rows: 12 int32 and 12 f32 sums in zmm registers.
constexpr int kMrI8Avx512 = 6;

void panel_gemm_i8_impl(const float* x, int64_t m, int64_t k, const int8_t* panels,
                        const float* scale, int64_t n, float beta, float* y) {
  static constexpr auto kPortable = i8_portable_table(std::make_integer_sequence<int, 4>());
  static constexpr auto kAvx512 = i8_avx512_table(std::make_integer_sequence<int, 6>());
  // The rows quantised once per call (int8 values, four to a word; scales and sums per block).
  const int64_t nb = (k + kI8Block - 1) / kI8Block;
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> sx;
  thread_local std::vector<int32_t> sumx;
  q.resize(static_cast<size_t>(m * k));
  sx.resize(static_cast<size_t>(m * nb));
  sumx.resize(static_cast<size_t>(m * nb));
  int8_t* q_data = q.data();
  float* sx_data = sx.data();
  int32_t* sumx_data = sumx.data();
  parallel_for(m, grain_for_work(8 * k), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      quantize_activations_i8(x + r * k, k, q_data + r * k, sx_data + r * nb, sumx_data + r * nb);
    }
  });
  const auto* a4 = reinterpret_cast<const uint32_t*>(q_data);
  const bool avx512 = cpu_isa() == CpuIsa::kAvx512;
  const int64_t num_panels = (n + kPanelWidth - 1) / kPanelWidth;
  const int64_t work = std::max<int64_t>(2 * m, 4) * k * kPanelWidth;
  parallel_for(num_panels, grain_for_work(work), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * kPanelWidth;
      const int w = static_cast<int>(std::min(kPanelWidth, n - n0));
      for (int64_t k0 = 0; k0 < k; k0 += kPanelKBlock) {
        BlockI8 blk;
        blk.a4 = a4 + k0 / 4;
        blk.lda4 = k / 4;
        blk.sx = sx_data + k0 / kI8Block;
        blk.sumx = sumx_data + k0 / kI8Block;
        blk.ldsx = nb;
        blk.b = reinterpret_cast<const uint8_t*>(panels) + n0 * k + k0 * w;
        blk.kc = std::min(kPanelKBlock, k - k0);
        blk.w = w;
        blk.sw = scale + n0;
        blk.c = y + n0;
        blk.ldc = n;
        blk.accumulate = k0 > 0 || beta != 0.0f;
        auto at_rows = [&](int64_t row0) {
          BlockI8 b = blk;
          b.a4 = blk.a4 + row0 * blk.lda4;
          b.sx = blk.sx + row0 * blk.ldsx;
          b.sumx = blk.sumx + row0 * blk.ldsx;
          b.c = blk.c + row0 * blk.ldc;
          return b;
        };
        if (avx512 && w == kW) {
          for_each_chunk(m, kMrI8Avx512, [&](int64_t row0, int rows) {
            kAvx512[static_cast<size_t>(rows - 1)](at_rows(row0));
          });
        } else {
          for_each_chunk(m, kMrPortable, [&](int64_t row0, int rows) {
            kPortable[static_cast<size_t>(rows - 1)](at_rows(row0));
          });
        }
      }
    }
  });
}

// `map` applies to each element on its way (int8: flip_sign).
template <typename Elem, typename Map = std::identity>
void pack_typed(const Elem* src, int64_t n, int64_t k, Elem* dst, Map map = {}) {
  parallel_for((n + kPanelWidth - 1) / kPanelWidth, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n0 = p * kPanelWidth;
      const int64_t w = std::min(kPanelWidth, n - n0);
      Elem* panel = dst + n0 * k;
      for (int64_t j = 0; j < w; ++j) {
        const Elem* row = src + (n0 + j) * k;
        for (int64_t kk = 0; kk < k; ++kk) {
          panel[panel_offset(kGroup<Elem>, w, k, j, kk)] = map(row[kk]);
        }
      }
    }
  });
}

template <typename Elem, typename Map = std::identity>
void unpack_typed(const Elem* src, int64_t n, int64_t k, Elem* dst, Map map = {}) {
  for (int64_t n0 = 0; n0 < n; n0 += kPanelWidth) {
    const int64_t w = std::min(kPanelWidth, n - n0);
    const Elem* panel = src + n0 * k;
    for (int64_t j = 0; j < w; ++j) {
      for (int64_t kk = 0; kk < k; ++kk) {
        dst[(n0 + j) * k + kk] = map(panel[panel_offset(kGroup<Elem>, w, k, j, kk)]);
      }
    }
  }
}

}  // namespace

bool panel_dtype_supported(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kI8;
}

bool bf16_dot_products(int64_t m) {
  return m >= kBf16DotMinRows && cpu_isa() == CpuIsa::kAvx512 && cpu_features().avx512_bf16 &&
         bf16_dot_enabled();
}

namespace {
std::atomic<bool>& bf16_dot_flag() {
  static std::atomic<bool> enabled{[] {
    const char* v = std::getenv("EARNSERVE_BF16_DOT");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }()};
  return enabled;
}
}  // namespace

bool bf16_dot_enabled() { return bf16_dot_flag().load(std::memory_order_relaxed); }

void set_bf16_dot_enabled(bool enabled) {
  bf16_dot_flag().store(enabled, std::memory_order_relaxed);
}

void pack_panels(const void* src, DType dtype, int64_t n, int64_t k, void* dst) {
  ES_CHECK(panel_dtype_supported(dtype)) << "pack_panels: " << dtype_name(dtype);
  ES_CHECK(dtype != DType::kI8 || k % 4 == 0)
      << "pack_panels: int8 needs k a multiple of 4, got " << k;
  if (dtype == DType::kF32) {
    pack_typed(static_cast<const float*>(src), n, k, static_cast<float*>(dst));
  } else if (dtype == DType::kI8) {
    pack_typed(static_cast<const int8_t*>(src), n, k, static_cast<int8_t*>(dst), flip_sign);
  } else {
    pack_typed(static_cast<const uint16_t*>(src), n, k, static_cast<uint16_t*>(dst));
  }
}

void unpack_panels(const void* src, DType dtype, int64_t n, int64_t k, void* dst) {
  ES_CHECK(panel_dtype_supported(dtype)) << "unpack_panels: " << dtype_name(dtype);
  if (dtype == DType::kF32) {
    unpack_typed(static_cast<const float*>(src), n, k, static_cast<float*>(dst));
  } else if (dtype == DType::kI8) {
    unpack_typed(static_cast<const int8_t*>(src), n, k, static_cast<int8_t*>(dst), flip_sign);
  } else {
    unpack_typed(static_cast<const uint16_t*>(src), n, k, static_cast<uint16_t*>(dst));
  }
}

void panel_row(const void* panels, DType dtype, int64_t n, int64_t k, int64_t row, float* dst) {
  ES_CHECK((dtype == DType::kF32 || dtype == DType::kBF16) && 0 <= row && row < n)
      << "panel_row: row " << row;
  const int64_t n0 = row / kPanelWidth * kPanelWidth;
  const int64_t w = std::min(kPanelWidth, n - n0);
  const int64_t j = row - n0;
  if (dtype == DType::kF32) {
    const float* src = static_cast<const float*>(panels) + n0 * k + j;
    for (int64_t kk = 0; kk < k; ++kk) dst[kk] = src[kk * w];
  } else {
    const uint16_t* panel = static_cast<const uint16_t*>(panels) + n0 * k;
    for (int64_t kk = 0; kk < k; ++kk) {
      dst[kk] = bf16_to_float(panel[panel_offset(kGroup<uint16_t>, w, k, j, kk)]);
    }
  }
}

void panel_row_i8(const int8_t* panels, int64_t n, int64_t k, int64_t row, int8_t* dst) {
  ES_CHECK(0 <= row && row < n) << "panel_row_i8: row " << row;
  const int64_t n0 = row / kPanelWidth * kPanelWidth;
  const int64_t w = std::min(kPanelWidth, n - n0);
  const int8_t* panel = panels + n0 * k;
  for (int64_t kk = 0; kk < k; ++kk) {
    dst[kk] = flip_sign(panel[panel_offset(kGroup<int8_t>, w, k, row - n0, kk)]);
  }
}

void panel_gemm(const float* x, int64_t m, int64_t k, const void* panels, DType dtype, int64_t n,
                float beta, float* y) {
  ES_CHECK(dtype == DType::kF32 || dtype == DType::kBF16) << "panel_gemm: " << dtype_name(dtype);
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

void panel_gemm_i8(const float* x, int64_t m, int64_t k, const int8_t* panels, const float* scale,
                   int64_t n, float beta, float* y) {
  ES_CHECK(beta == 0.0f || beta == 1.0f) << "panel_gemm_i8: beta " << beta;
  ES_CHECK(k % 4 == 0) << "panel_gemm_i8: k " << k << " is not a multiple of 4";
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == 0.0f) std::memset(y, 0, static_cast<size_t>(m * n) * sizeof(float));
    return;
  }
  panel_gemm_i8_impl(x, m, k, panels, scale, n, beta, y);
}

}  // namespace earnserve::cpu
