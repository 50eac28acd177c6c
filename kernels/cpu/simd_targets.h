// Function attributes for the SIMD bodies of the CPU kernels. A function marked with one is
// compiled for that instruction set whatever the build's -march, and may only be called when
// cpu_features.h says the machine has it (use_avx2(), use_avx512()).
#pragma once

// AVX2 + FMA + F16C.
#define ES_AVX2 __attribute__((target("avx2,fma,f16c")))
// The above with AVX-512 F/BW/VL/DQ and VNNI: the avx512 path.
#define ES_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
// The above with AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16): also check cpu_features().avx512_bf16.
#define ES_AVX512_BF16                                                      \
  __attribute__((                                                           \
      target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni," \
             "avx512bf16")))
