// The copy bandwidth the benchmarks set their roofline against (bench/model_bench,
// bench/llm_earn_bench).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "core/threading.h"

namespace earnserve::bench {

// Best of `repeats` timed memcpys of `bytes`, split into `workers` chunks copied through
// parallel_for (workers = 1: one memcpy on the calling thread). Bytes copied per second: each
// byte is read once and written once. Both buffers are written when they are made, so no copy
// pays for first-touch page faults.
inline double memcpy_bytes_per_s(int64_t bytes, int64_t workers, int repeats) {
  std::vector<char> src(static_cast<size_t>(bytes), 1), dst(static_cast<size_t>(bytes), 0);
  workers = std::max<int64_t>(1, workers);
  const int64_t chunk = (bytes + workers - 1) / workers;
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    parallel_for(workers, 1, [&](int64_t begin, int64_t end) {
      for (int64_t w = begin; w < end; ++w) {
        const int64_t off = w * chunk;
        const int64_t len = std::min(chunk, bytes - off);
        if (len > 0) std::memcpy(dst.data() + off, src.data() + off, static_cast<size_t>(len));
      }
    });
    best = std::min(
        best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return static_cast<double>(bytes) / best;
}

}  // namespace earnserve::bench
