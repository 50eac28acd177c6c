#include "kernels/cpu/vec_math.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/half.h"
#include "core/logging.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/simd_targets.h"

namespace earnserve::cpu {
namespace {

// ---- Portable bodies ----------------------------------------------------------------------

namespace portable {

void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  if (dtype == DType::kBF16) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(h[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_float(h[i]);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  // Four partial sums let the compiler keep independent dependency chains.
  float s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) s[j] += a[i + j] * b[i + j];
  }
  for (; i < n; ++i) s[0] += a[i] * b[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

void dequantize_i8(const int8_t* src, float scale, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = scale * static_cast<float>(src[i]);
}

void dot_rows_i8(const int8_t* w, int64_t row_stride, int64_t num_rows, const I8Vectors& x,
                 float* out) {
  const int64_t n = x.n(), num_x = x.num_x();
  for (int64_t r = 0; r < num_rows; ++r) {
    const int8_t* row = w + r * row_stride;
    for (int64_t j = 0; j < num_x; ++j) {
      const int16_t* qj = x.q(j);
      const float* sj = x.scales(j);
      float acc = 0.0f;
      for (int64_t i0 = 0, b = 0; i0 < n; i0 += kI8Block, ++b) {
        int32_t s = 0;
        for (int64_t i = i0; i < std::min(n, i0 + kI8Block); ++i) {
          s += int32_t{row[i]} * int32_t{qj[i]};
        }
        acc += sj[b] * static_cast<float>(s);
      }
      out[r * num_x + j] = acc;
    }
  }
}

// dot_rows, one row and one vector at a time; 16-bit rows are widened first into row_buf (one
// per thread, kept between calls: linear calls this once per block of rows).
void dot_rows(const void* w, DType dtype, int64_t row_stride, int64_t num_rows, const float* x,
              int64_t x_stride, int64_t num_x, int64_t n, float* out) {
  thread_local std::vector<float> row_buf;
  for (int64_t r = 0; r < num_rows; ++r) {
    const size_t offset = static_cast<size_t>(r * row_stride) * dtype_size(dtype);
    const void* row = static_cast<const char*>(w) + offset;
    for (int64_t j = 0; j < num_x; ++j) {
      float d = 0.0f;
      if (dtype == DType::kF32) {
        d = dot(static_cast<const float*>(row), x + j * x_stride, n);
      } else {
        if (j == 0) {
          row_buf.resize(static_cast<size_t>(n));
          widen_to_f32(row, dtype, row_buf.data(), n);
        }
        d = dot(row_buf.data(), x + j * x_stride, n);
      }
      out[r * num_x + j] = d;
    }
  }
}

float max_value(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float exp_shifted(const float* x, float shift, float* out, int64_t n) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    float e = std::exp(x[i] - shift);
    if (out != nullptr) out[i] = e;
    sum += e;
  }
  return sum;
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

}  // namespace portable

// The int8 GEMV's traversal, shared by its AVX2 and AVX-512 kernels: blocks of four rows, each
// against the vectors j.. in groups of three, then a group of two or one, through
// kernel.template run<T>(rows, j, out, out_stride, ahead); the last num_rows % 4 rows as a block
// padded with copies of the last row into a scratch output, of which only the real rows are
// kept. `ahead` is the block kPrefetchBlocks further on (where rows are contiguous), which the
// first group of vectors prefetches while it streams its rows in; later groups find the rows
// cached and pass the block itself.
template <typename Kernel>
void for_each_row_block_i8(const int8_t* w, int64_t row_stride, int64_t num_rows, int64_t num_x,
                           int64_t n, float* out, const Kernel& kernel) {
  constexpr int64_t kPrefetchBlocks = 2;
  auto rows_block = [&](const int8_t* const(&rows)[4], float* o, int64_t o_stride,
                        const char* ahead) {
    const char* self = reinterpret_cast<const char*>(rows[0]);
    int64_t j = 0;
    for (; j + 3 <= num_x; j += 3) {
      kernel.template run<3>(rows, j, o + j, o_stride, j == 0 ? ahead : self);
    }
    if (num_x - j == 2) {
      kernel.template run<2>(rows, j, o + j, o_stride, j == 0 ? ahead : self);
    } else if (num_x - j == 1) {
      kernel.template run<1>(rows, j, o + j, o_stride, j == 0 ? ahead : self);
    }
  };
  int64_t r = 0;
  for (; r + 4 <= num_rows; r += 4) {
    const int8_t* base = w + r * row_stride;
    const int8_t* const rows[4] = {base, base + row_stride, base + 2 * row_stride,
                                   base + 3 * row_stride};
    const char* ahead = row_stride == n && r + 4 * (kPrefetchBlocks + 1) <= num_rows
                            ? reinterpret_cast<const char*>(base + 4 * kPrefetchBlocks * row_stride)
                            : reinterpret_cast<const char*>(base);
    rows_block(rows, out + r * num_x, num_x, ahead);
  }
  if (r < num_rows) {
    const int8_t* last = w + (num_rows - 1) * row_stride;
    const int8_t* const rows[4] = {w + r * row_stride,
                                   r + 1 < num_rows ? w + (r + 1) * row_stride : last,
                                   r + 2 < num_rows ? w + (r + 2) * row_stride : last, last};
    thread_local std::vector<float> tmp;
    tmp.resize(static_cast<size_t>(4 * num_x));
    rows_block(rows, tmp.data(), num_x, reinterpret_cast<const char*>(rows[0]));
    std::memcpy(out + r * num_x, tmp.data(),
                static_cast<size_t>((num_rows - r) * num_x) * sizeof(float));
  }
}

// ---- AVX2 bodies --------------------------------------------------------------------------

namespace avx2 {

ES_AVX2 inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

ES_AVX2 inline float hmax(__m256 v) {
  __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

// exp(x) for 8 lanes: x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7 (relative
// error below 1e-8 on that interval, so the result is within ~2 ulp), 2^n built in the exponent
// field. Inputs below ln(2^-126) give 0, so exp(-inf) = 0 as softmax masks need.
ES_AVX2 inline __m256 exp256(__m256 x) {
  const __m256 k_max = _mm256_set1_ps(88.37f);
  const __m256 k_min = _mm256_set1_ps(-87.33654475f);
  __m256 underflow = _mm256_cmp_ps(x, k_min, _CMP_LT_OQ);
  __m256 xc = _mm256_max_ps(_mm256_min_ps(x, k_max), k_min);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln 2 split in two so n * ln2_hi is exact.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, result);
}

// Loads n < 8 floats, zero-filling the rest.
ES_AVX2 inline __m256i tail_mask(int64_t n) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lanes);
}

ES_AVX2 void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (dtype == DType::kBF16) {
    for (; i + 8 <= n; i += 8) {
      __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
      __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16);
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
    }
    for (; i < n; ++i) dst[i] = bf16_to_float(h[i]);
  } else {
    for (; i + 8 <= n; i += 8) {
      __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(v));
    }
    for (; i < n; ++i) dst[i] = fp16_to_float(h[i]);
  }
}

// Eight int8 values widened to f32 (bytes -> i32 lanes -> f32); n < 8 reads only n bytes and
// zero-fills the rest.
ES_AVX2 inline __m256 load_i8x8(const int8_t* p) {
  __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
}

ES_AVX2 inline __m256 load_i8_tail(const int8_t* p, int64_t n) {
  int8_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::memcpy(buf, p, static_cast<size_t>(n));
  return load_i8x8(buf);
}

ES_AVX2 void dequantize_i8(const int8_t* src, float scale, float* dst, int64_t n) {
  const __m256 sv = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_mul_ps(load_i8x8(src + i), sv));
  if (i < n) {
    _mm256_maskstore_ps(dst + i, tail_mask(n - i), _mm256_mul_ps(load_i8_tail(src + i, n - i), sv));
  }
}

// A weight row read eight floats at a time, as stored.
struct F32Row {
  const float* w;
  ES_AVX2 __m256 load(int64_t i) const { return _mm256_loadu_ps(w + i); }
  ES_AVX2 __m256 load_tail(int64_t i, int64_t n) const {
    return _mm256_maskload_ps(w + i, tail_mask(n));
  }
};

// 16-bit rows widened in registers (eight elements from 16 bytes): bf16 by a shift into the high
// half, f16 by F16C.
struct WidenBf16 {
  ES_AVX2 static __m256 widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
};
struct WidenF16 {
  ES_AVX2 static __m256 widen(__m128i h) { return _mm256_cvtph_ps(h); }
};

template <typename Widen>
struct Row16 {
  const uint16_t* w;
  ES_AVX2 __m256 load(int64_t i) const {
    return Widen::widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + i)));
  }
  ES_AVX2 __m256 load_tail(int64_t i, int64_t n) const {
    uint16_t buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(buf, w + i, static_cast<size_t>(n) * sizeof(uint16_t));
    return Widen::widen(_mm_loadu_si128(reinterpret_cast<const __m128i*>(buf)));
  }
};
using BF16Row = Row16<WidenBf16>;
using F16Row = Row16<WidenF16>;

// Software prefetch of the weights a later block of four rows will read: while this block's rows
// stream in, `ahead` (the later block's first row; its four rows are contiguous) is fetched at
// four times the block's pace, so that block is in cache when its turn comes. Short int8 and
// 16-bit rows (a few hundred bytes) are too short for the hardware prefetchers to ramp up on.
// Where there is no later block, callers pass the block's own first row (cached anyway): a null
// check here made GCC 12 drop every prefetch.
template <int64_t kElemBytes>
ES_AVX2 inline void prefetch_lines(const char* ahead, int64_t offset, int64_t bytes) {
  if constexpr (kElemBytes >= 4) return;  // f32 rows: the hardware prefetchers suffice
  for (int64_t b = 0; b < bytes; b += 64) {
    _mm_prefetch(ahead + offset + b, _MM_HINT_T0);
  }
}

// Four weight rows against T <= 3 vectors: 4T accumulators, T vector registers and one weight
// register (16 ymm registers at T = 3). Per eight columns the kernel loads T + 4 vectors for 4T
// FMAs, so from T = 2 on it is bound by the FMA units, not by loads, and each weight is read
// (and widened) once per T vectors. out[r * out_stride + t] receives row r against vector t.
// `ahead`: see prefetch_lines.
template <int T, typename Row>
ES_AVX2 void rows4_dot(const Row (&rows)[4], const float* x, int64_t x_stride, int64_t n,
                       float* out, int64_t out_stride, const char* ahead) {
  constexpr int64_t kElemBytes = sizeof(*rows[0].w);
  __m256 acc[4][T];
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    prefetch_lines<kElemBytes>(ahead, 4 * i * kElemBytes, 32 * kElemBytes);
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + i);
    for (int r = 0; r < 4; ++r) {
      const __m256 wv = rows[r].load(i);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  if (i < n) {
    const __m256i m = tail_mask(n - i);
    __m256 xv[T];
    for (int t = 0; t < T; ++t) xv[t] = _mm256_maskload_ps(x + t * x_stride + i, m);
    for (int r = 0; r < 4; ++r) {
      const __m256 wv = rows[r].load_tail(i, n - i);
      for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
    }
  }
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < T; ++t) out[r * out_stride + t] = hsum(acc[r][t]);
  }
}

// One vector: two accumulators per row (eight chains) so the FMA latency is hidden.
template <typename Row>
ES_AVX2 void rows4_dot1(const Row (&rows)[4], const float* x, int64_t n, float* out,
                        int64_t out_stride, const char* ahead) {
  constexpr int64_t kElemBytes = sizeof(*rows[0].w);
  __m256 a[4][2];
  for (int r = 0; r < 4; ++r) a[r][0] = a[r][1] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    prefetch_lines<kElemBytes>(ahead, 4 * i * kElemBytes, 64 * kElemBytes);
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    for (int r = 0; r < 4; ++r) {
      a[r][0] = _mm256_fmadd_ps(rows[r].load(i), x0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(rows[r].load(i + 8), x1, a[r][1]);
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 x0 = _mm256_loadu_ps(x + i);
    for (int r = 0; r < 4; ++r) a[r][0] = _mm256_fmadd_ps(rows[r].load(i), x0, a[r][0]);
  }
  if (i < n) {
    const __m256 x0 = _mm256_maskload_ps(x + i, tail_mask(n - i));
    for (int r = 0; r < 4; ++r) {
      a[r][1] = _mm256_fmadd_ps(rows[r].load_tail(i, n - i), x0, a[r][1]);
    }
  }
  for (int r = 0; r < 4; ++r) out[r * out_stride] = hsum(_mm256_add_ps(a[r][0], a[r][1]));
}

template <typename Row>
ES_AVX2 void dot_multi_row(Row w, const float* x, int64_t x_stride, int64_t num_x, int64_t n,
                           float* out);

// dot_rows on typed rows: blocks of four rows through the register-blocked kernels (vectors in
// groups of three, then a group of two or one), the last num_rows % 4 rows one by one.
template <typename Row, typename E>
ES_AVX2 void dot_rows_typed(const E* w, int64_t row_stride, int64_t num_rows, const float* x,
                            int64_t x_stride, int64_t num_x, int64_t n, float* out) {
  // Blocks ahead that the prefetches reach (only where rows are contiguous: row_stride == n).
  constexpr int64_t kPrefetchBlocks = 2;
  int64_t r = 0;
  for (; r + 4 <= num_rows; r += 4) {
    const E* base = w + r * row_stride;
    const Row rows[4] = {Row{base}, Row{base + row_stride}, Row{base + 2 * row_stride},
                         Row{base + 3 * row_stride}};
    const char* self = reinterpret_cast<const char*>(base);
    // f32 rows are long enough for the hardware prefetchers (measured: no gain).
    const char* ahead =
        sizeof(E) < 4 && row_stride == n && r + 4 * (kPrefetchBlocks + 1) <= num_rows
            ? reinterpret_cast<const char*>(base + 4 * kPrefetchBlocks * row_stride)
            : self;
    float* o = out + r * num_x;
    int64_t j = 0;
    // The first group of vectors streams the rows in (and prefetches); the rest find them cached.
    for (; j + 3 <= num_x; j += 3) {
      rows4_dot<3>(rows, x + j * x_stride, x_stride, n, o + j, num_x, j == 0 ? ahead : self);
    }
    if (num_x - j == 2) {
      rows4_dot<2>(rows, x + j * x_stride, x_stride, n, o + j, num_x, j == 0 ? ahead : self);
    } else if (num_x - j == 1) {
      rows4_dot1(rows, x + j * x_stride, n, o + j, num_x, j == 0 ? ahead : self);
    }
  }
  for (; r < num_rows; ++r) {
    dot_multi_row(Row{w + r * row_stride}, x, x_stride, num_x, n, out + r * num_x);
  }
}

// Four int8 rows against T <= 3 int16 vectors, one block of 32 columns a step: each row's
// bytes are widened to int16 (vpmovsxbw) and multiplied with every vector pairwise into int32
// lanes (vpmaddwd: w[2k] q[2k] + w[2k+1] q[2k+1]), the block's two products added, converted
// to f32 and accumulated times the vector's block scale. 4T f32 accumulators and two weight
// registers; the vectors are read from L1 by the multiplies. The last partial block goes
// through zero-padded copies. `ahead`: the block prefetch_lines fetches (see there).
static_assert(kI8Block == 32);
template <int T>
ES_AVX2 void rows4_dot_i8(const int8_t* const (&rows)[4], const int16_t* q, int64_t q_stride,
                          const float* scales, int64_t scale_stride, int64_t n, float* out,
                          int64_t out_stride, const char* ahead) {
  __m256 acc[4][T];
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  alignas(32) int16_t xbuf[T][32];
  alignas(16) int8_t wbuf[4][32];
  const int64_t whole = n / 32 * 32;
  for (int64_t i0 = 0, b = 0; i0 < n; i0 += 32, ++b) {
    // Whole blocks read the rows and vectors in place; the last partial block zero-padded copies
    // (the accumulators stay in registers: the loop body never takes their address).
    const int8_t* w[4] = {rows[0] + i0, rows[1] + i0, rows[2] + i0, rows[3] + i0};
    const int16_t* x[T];
    for (int t = 0; t < T; ++t) x[t] = q + t * q_stride + i0;
    if (i0 < whole) {
      prefetch_lines<1>(ahead, 4 * i0, 128);
    } else {
      const int64_t rest = n - i0;
      for (int t = 0; t < T; ++t) {
        std::memset(xbuf[t], 0, sizeof(xbuf[t]));
        std::memcpy(xbuf[t], x[t], static_cast<size_t>(rest) * sizeof(int16_t));
        x[t] = xbuf[t];
      }
      for (int r = 0; r < 4; ++r) {
        std::memset(wbuf[r], 0, sizeof(wbuf[r]));
        std::memcpy(wbuf[r], w[r], static_cast<size_t>(rest));
        w[r] = wbuf[r];
      }
    }
    __m256 s[T];
    for (int t = 0; t < T; ++t) s[t] = _mm256_broadcast_ss(scales + t * scale_stride + b);
    for (int r = 0; r < 4; ++r) {
      const __m256i w0 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r])));
      const __m256i w1 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[r] + 16)));
      for (int t = 0; t < T; ++t) {
        const __m256i p = _mm256_add_epi32(
            _mm256_madd_epi16(w0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t]))),
            _mm256_madd_epi16(w1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[t] + 16))));
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < T; ++t) out[r * out_stride + t] = hsum(acc[r][t]);
  }
}

struct I8Kernel {
  const I8Vectors& x;
  template <int T>
  ES_AVX2 void run(const int8_t* const (&rows)[4], int64_t j, float* out, int64_t out_stride,
                   const char* ahead) const {
    rows4_dot_i8<T>(rows, x.q(j), x.n(), x.scales(j), x.num_blocks(), x.n(), out, out_stride,
                    ahead);
  }
};

void dot_rows_i8(const int8_t* w, int64_t row_stride, int64_t num_rows, const I8Vectors& x,
                 float* out) {
  for_each_row_block_i8(w, row_stride, num_rows, x.num_x(), x.n(), out, I8Kernel{x});
}

template <typename Row>
ES_AVX2 float dot_row(Row w, const float* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(w.load(i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(w.load(i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(w.load(i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(w.load(i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(w.load(i), _mm256_loadu_ps(b + i), s0);
  if (i < n) {
    s1 = _mm256_fmadd_ps(w.load_tail(i, n - i), _mm256_maskload_ps(b + i, tail_mask(n - i)), s1);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
}

// One row against four vectors: each group of eight weights is loaded (and widened) once.
template <typename Row>
ES_AVX2 void dot4_row(Row w, const float* x0, const float* x1, const float* x2, const float* x3,
                      int64_t n, float* out) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wv = w.load(i);
    s0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + i), s0);
    s1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + i), s1);
    s2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + i), s2);
    s3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + i), s3);
  }
  if (i < n) {
    __m256i m = tail_mask(n - i);
    __m256 wv = w.load_tail(i, n - i);
    s0 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x0 + i, m), s0);
    s1 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x1 + i, m), s1);
    s2 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x2 + i, m), s2);
    s3 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x3 + i, m), s3);
  }
  out[0] = hsum(s0);
  out[1] = hsum(s1);
  out[2] = hsum(s2);
  out[3] = hsum(s3);
}

template <typename Row>
ES_AVX2 void dot_multi_row(Row w, const float* x, int64_t x_stride, int64_t num_x, int64_t n,
                           float* out) {
  int64_t j = 0;
  for (; j + 4 <= num_x; j += 4) {
    const float* xj = x + j * x_stride;
    dot4_row(w, xj, xj + x_stride, xj + 2 * x_stride, xj + 3 * x_stride, n, out + j);
  }
  for (; j < num_x; ++j) out[j] = dot_row(w, x + j * x_stride, n);
}

ES_AVX2 float dot(const float* a, const float* b, int64_t n) { return dot_row(F32Row{a}, b, n); }

ES_AVX2 void dot_multi(const float* w, const float* x, int64_t x_stride, int64_t num_x, int64_t n,
                       float* out) {
  dot_multi_row(F32Row{w}, x, x_stride, num_x, n, out);
}

ES_AVX2 void dot_rows(const void* w, DType dtype, int64_t row_stride, int64_t num_rows,
                      const float* x, int64_t x_stride, int64_t num_x, int64_t n, float* out) {
  switch (dtype) {
    case DType::kF32:
      dot_rows_typed<F32Row>(static_cast<const float*>(w), row_stride, num_rows, x, x_stride, num_x,
                             n, out);
      return;
    case DType::kBF16:
      dot_rows_typed<BF16Row>(static_cast<const uint16_t*>(w), row_stride, num_rows, x, x_stride,
                              num_x, n, out);
      return;
    case DType::kF16:
      dot_rows_typed<F16Row>(static_cast<const uint16_t*>(w), row_stride, num_rows, x, x_stride,
                             num_x, n, out);
      return;
    default:
      ES_CHECK(false) << "dot_rows: unsupported weight dtype " << dtype_name(dtype);
  }
}

ES_AVX2 void accumulate_rows(const float* weights, const float* rows, int64_t row_stride,
                             int64_t num_rows, int64_t n, float* y) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 a0 = _mm256_loadu_ps(y + i), a1 = _mm256_loadu_ps(y + i + 8);
    __m256 a2 = _mm256_loadu_ps(y + i + 16), a3 = _mm256_loadu_ps(y + i + 24);
    for (int64_t j = 0; j < num_rows; ++j) {
      const float* row = rows + j * row_stride + i;
      __m256 w = _mm256_set1_ps(weights[j]);
      a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(row), a0);
      a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(row + 8), a1);
      a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(row + 16), a2);
      a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(row + 24), a3);
    }
    _mm256_storeu_ps(y + i, a0);
    _mm256_storeu_ps(y + i + 8, a1);
    _mm256_storeu_ps(y + i + 16, a2);
    _mm256_storeu_ps(y + i + 24, a3);
  }
  for (; i < n; i += 8) {
    __m256i m = tail_mask(n - i);
    __m256 a = _mm256_maskload_ps(y + i, m);
    for (int64_t j = 0; j < num_rows; ++j) {
      a = _mm256_fmadd_ps(_mm256_set1_ps(weights[j]),
                          _mm256_maskload_ps(rows + j * row_stride + i, m), a);
    }
    _mm256_maskstore_ps(y + i, m, a);
  }
}

ES_AVX2 void axpy(float alpha, const float* x, float* y, int64_t n) {
  __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

ES_AVX2 float sum_squares(const float* x, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(x + i);
    __m256 b = _mm256_loadu_ps(x + i + 8);
    s0 = _mm256_fmadd_ps(a, a, s0);
    s1 = _mm256_fmadd_ps(b, b, s1);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_loadu_ps(x + i);
    s0 = _mm256_fmadd_ps(a, a, s0);
  }
  if (i < n) {
    __m256 a = _mm256_maskload_ps(x + i, tail_mask(n - i));
    s1 = _mm256_fmadd_ps(a, a, s1);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

ES_AVX2 void add(const float* a, const float* b, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  for (; i < n; ++i) out[i] = a[i] + b[i];
}

ES_AVX2 void scale_mul(const float* x, float s, const float* w, float* out, int64_t n) {
  __m256 sv = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), sv);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(w + i)));
  }
  for (; i < n; ++i) out[i] = x[i] * s * w[i];
}

ES_AVX2 float max_value(const float* x, int64_t n) {
  if (n < 8) return portable::max_value(x, n);
  __m256 m = _mm256_loadu_ps(x);
  int64_t i = 8;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float r = hmax(m);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

ES_AVX2 float exp_shifted(const float* x, float shift, float* out, int64_t n) {
  __m256 sv = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sv));
    if (out != nullptr) _mm256_storeu_ps(out + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    __m256i m = tail_mask(n - i);
    __m256 e = exp256(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), sv));
    e = _mm256_and_ps(e, _mm256_castsi256_ps(m));
    if (out != nullptr) _mm256_maskstore_ps(out + i, m, e);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum(sum);
}

ES_AVX2 void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 g = _mm256_loadu_ps(gate + i);
    __m256 denom = _mm256_add_ps(one, exp256(_mm256_xor_ps(g, sign)));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(g, denom), _mm256_loadu_ps(up + i)));
  }
  portable::silu_mul(gate + i, up + i, out + i, n - i);
}

}  // namespace avx2

// ---- AVX-512 bodies (the avx512 path; everything without one here runs its AVX2 body) -------

namespace avx512 {

// Four int8 rows against T <= 3 prepared vectors, one block of 32 columns a step, in 256-bit
// registers (AVX-512 VL + VNNI): the loop of the AVX2 kernel with each block's widening and
// pairwise products replaced by one vpdpbusd per row and vector. VNNI multiplies unsigned by
// signed bytes, so the rows are flipped to unsigned by XOR 0x80 (w + 128) and each int32 lane
// starts from the vector's correction: vpdpbusd(-128 sum x, w + 128, x) is the exact sum of w x
// over the lane's four columns, so the block sums equal the AVX2 path's. A partial last block
// loads its row bytes masked (zero; x is zero-padded there, so they add nothing).
template <int T>
ES_AVX512 void rows4_dot_vnni(const int8_t* const (&rows)[4], const I8Vectors& v, int64_t j0,
                              int64_t n, float* out, int64_t out_stride, const char* ahead) {
  __m256 acc[4][T];
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  }
  const int64_t padded = v.padded(), groups = v.padded() / 4;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0, b = 0; i < n; i += 32, ++b) {
    __m256i w[4];
    if (i + 32 <= n) {
      _mm_prefetch(ahead + 4 * i, _MM_HINT_T0);
      _mm_prefetch(ahead + 4 * i + 64, _MM_HINT_T0);
      for (int r = 0; r < 4; ++r) {
        w[r] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[r] + i)),
                                flip);
      }
    } else {
      const __mmask32 m = (__mmask32{1} << (n - i)) - 1;  // n - i < 32 here
      for (int r = 0; r < 4; ++r) {
        w[r] = _mm256_xor_si256(_mm256_maskz_loadu_epi8(m, rows[r] + i), flip);
      }
    }
    for (int t = 0; t < T; ++t) {
      const int64_t j = j0 + t;
      const __m256i x =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v.bytes() + j * padded + i));
      const __m256i c = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(v.corrections() + j * groups + i / 4));
      const __m256 s = _mm256_broadcast_ss(v.scales(j) + b);
      for (int r = 0; r < 4; ++r) {
        const __m256i p = _mm256_dpbusd_epi32(c, w[r], x);
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), s, acc[r][t]);
      }
    }
  }
  for (int r = 0; r < 4; ++r) {
    for (int t = 0; t < T; ++t) out[r * out_stride + t] = avx2::hsum(acc[r][t]);
  }
}

struct I8Kernel {
  const I8Vectors& x;
  template <int T>
  ES_AVX512 void run(const int8_t* const (&rows)[4], int64_t j, float* out, int64_t out_stride,
                     const char* ahead) const {
    rows4_dot_vnni<T>(rows, x, j, x.n(), out, out_stride, ahead);
  }
};

void dot_rows_i8(const int8_t* w, int64_t row_stride, int64_t num_rows, const I8Vectors& x,
                 float* out) {
  for_each_row_block_i8(w, row_stride, num_rows, x.num_x(), x.n(), out, I8Kernel{x});
}

}  // namespace avx512

}  // namespace

void widen_to_f32(const void* src, DType dtype, float* dst, int64_t n) {
  if (dtype == DType::kF32) {
    if (n > 0 && src != dst) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  ES_CHECK(dtype == DType::kBF16 || dtype == DType::kF16) << "cannot widen " << dtype_name(dtype);
  if (use_avx2()) {
    avx2::widen_to_f32(src, dtype, dst, n);
  } else {
    portable::widen_to_f32(src, dtype, dst, n);
  }
}

void dequantize_i8(const int8_t* src, float scale, float* dst, int64_t n) {
  if (use_avx2()) {
    avx2::dequantize_i8(src, scale, dst, n);
  } else {
    portable::dequantize_i8(src, scale, dst, n);
  }
}

void dot_rows(const void* w, DType dtype, int64_t row_stride, int64_t num_rows, const float* x,
              int64_t x_stride, int64_t num_x, int64_t n, float* out) {
  ES_CHECK(dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16)
      << "dot_rows: unsupported weight dtype " << dtype_name(dtype);
  if (use_avx2()) {
    avx2::dot_rows(w, dtype, row_stride, num_rows, x, x_stride, num_x, n, out);
  } else {
    portable::dot_rows(w, dtype, row_stride, num_rows, x, x_stride, num_x, n, out);
  }
}

namespace {

// quantize_activations_i8's one body: Q is int16_t or int8_t; `sums` (may be null) gets each
// block's sum of q.
template <typename Q>
void quantize_blocks(const float* x, int64_t n, Q* q, float* scales, int32_t* sums) {
  // Adding and subtracting 1.5 * 2^23 rounds |v| <= 127 to the nearest integer, ties to even, in
  // the default rounding mode; plain arithmetic, so the loop vectorises on every target.
  // (std::max(-127, NaN) is -127: no undefined conversion even for non-finite x.)
  constexpr float kRound = 12582912.0f;
  for (int64_t i0 = 0, b = 0; i0 < n; i0 += kI8Block, ++b) {
    const int64_t end = std::min(n, i0 + kI8Block);
    float amax = 0.0f;
    for (int64_t i = i0; i < end; ++i) amax = std::max(amax, std::fabs(x[i]));
    if (!(amax > 0.0f)) {
      std::fill(q + i0, q + end, Q{0});
      scales[b] = 0.0f;
      if (sums != nullptr) sums[b] = 0;
      continue;
    }
    const float inv = 127.0f / amax;
    int32_t sum = 0;
    for (int64_t i = i0; i < end; ++i) {
      const float v = std::min(127.0f, std::max(-127.0f, x[i] * inv));
      const int32_t r = static_cast<int32_t>((v + kRound) - kRound);
      q[i] = static_cast<Q>(r);
      sum += r;
    }
    scales[b] = amax / 127.0f;
    if (sums != nullptr) sums[b] = sum;
  }
}

}  // namespace

void quantize_activations_i8(const float* x, int64_t n, int16_t* q, float* scales) {
  quantize_blocks(x, n, q, scales, nullptr);
}

void quantize_activations_i8(const float* x, int64_t n, int8_t* q, float* scales, int32_t* sums) {
  quantize_blocks(x, n, q, scales, sums);
}

void I8Vectors::quantize(const float* x, int64_t x_stride, int64_t num_x, int64_t n) {
  num_x_ = num_x;
  n_ = n;
  q_.resize(static_cast<size_t>(num_x * n));
  scales_.resize(static_cast<size_t>(num_x * num_blocks()));
  for (int64_t j = 0; j < num_x; ++j) {
    quantize_activations_i8(x + j * x_stride, n, q_.data() + j * n,
                            scales_.data() + j * num_blocks());
  }
  build_vnni_layout();
}

void I8Vectors::assign(const int16_t* q, int64_t q_stride, const float* scales,
                       int64_t scale_stride, int64_t num_x, int64_t n) {
  num_x_ = num_x;
  n_ = n;
  q_.resize(static_cast<size_t>(num_x * n));
  scales_.resize(static_cast<size_t>(num_x * num_blocks()));
  for (int64_t j = 0; j < num_x; ++j) {
    std::copy(q + j * q_stride, q + j * q_stride + n, q_.data() + j * n);
    std::copy(scales + j * scale_stride, scales + j * scale_stride + num_blocks(),
              scales_.data() + j * num_blocks());
  }
  build_vnni_layout();
}

void I8Vectors::build_vnni_layout() {
  if (!use_avx512()) {
    padded_ = 0;
    return;
  }
  padded_ = num_blocks() * kI8Block;
  const int64_t groups = padded_ / 4;
  bytes_.assign(static_cast<size_t>(num_x_ * padded_), 0);
  corrections_.resize(static_cast<size_t>(num_x_ * groups));
  for (int64_t j = 0; j < num_x_; ++j) {
    int8_t* bj = bytes_.data() + j * padded_;
    const int16_t* qj = q(j);
    for (int64_t i = 0; i < n_; ++i) bj[i] = static_cast<int8_t>(qj[i]);
    int32_t* cj = corrections_.data() + j * groups;
    for (int64_t g = 0; g < groups; ++g) {
      const int8_t* b4 = bj + 4 * g;
      cj[g] = -128 * (int32_t{b4[0]} + b4[1] + b4[2] + b4[3]);
    }
  }
}

void dot_rows_i8(const int8_t* w, int64_t row_stride, int64_t num_rows, const I8Vectors& x,
                 float* out) {
  if (use_avx512() && x.padded() > 0) {
    avx512::dot_rows_i8(w, row_stride, num_rows, x, out);
  } else if (use_avx2()) {
    avx2::dot_rows_i8(w, row_stride, num_rows, x, out);
  } else {
    portable::dot_rows_i8(w, row_stride, num_rows, x, out);
  }
}

float dot(const float* a, const float* b, int64_t n) {
  return use_avx2() ? avx2::dot(a, b, n) : portable::dot(a, b, n);
}

void dot_multi(const float* w, const float* x, int64_t x_stride, int64_t num_x, int64_t n,
               float* out) {
  if (use_avx2()) {
    avx2::dot_multi(w, x, x_stride, num_x, n, out);
    return;
  }
  for (int64_t j = 0; j < num_x; ++j) out[j] = portable::dot(w, x + j * x_stride, n);
}

void accumulate_rows(const float* weights, const float* rows, int64_t row_stride, int64_t num_rows,
                     int64_t n, float* y) {
  if (use_avx2()) {
    avx2::accumulate_rows(weights, rows, row_stride, num_rows, n, y);
    return;
  }
  for (int64_t j = 0; j < num_rows; ++j) {
    const float* row = rows + j * row_stride;
    for (int64_t i = 0; i < n; ++i) y[i] += weights[j] * row[i];
  }
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  if (use_avx2()) {
    avx2::axpy(alpha, x, y, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

float sum_squares(const float* x, int64_t n) {
  return use_avx2() ? avx2::sum_squares(x, n) : portable::dot(x, x, n);
}

void add(const float* a, const float* b, float* out, int64_t n) {
  if (use_avx2()) {
    avx2::add(a, b, out, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale_mul(const float* x, float s, const float* w, float* out, int64_t n) {
  if (use_avx2()) {
    avx2::scale_mul(x, s, w, out, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * s * w[i];
}

void scale(float* x, float s, int64_t n) {
  // Simple enough that the compiler's baseline vectorisation is all there is to gain.
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

float max_value(const float* x, int64_t n) {
  ES_CHECK_GE(n, 1);
  return use_avx2() ? avx2::max_value(x, n) : portable::max_value(x, n);
}

float exp_shifted(const float* x, float shift, float* out, int64_t n) {
  return use_avx2() ? avx2::exp_shifted(x, shift, out, n) : portable::exp_shifted(x, shift, out, n);
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  if (use_avx2()) {
    avx2::silu_mul(gate, up, out, n);
  } else {
    portable::silu_mul(gate, up, out, n);
  }
}

}  // namespace earnserve::cpu
