#include <algorithm>
#include <vector>

#include "core/threading.h"
#include "kernels/cpu/cpu_ops.h"

namespace earnserve::cpu {
namespace {

struct Candidate {
  float value;
  int32_t index;
};

// Strict order of the result: larger value first, then smaller index.
inline bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

}  // namespace

void top_k(const Tensor& x, int k, Tensor& values, Tensor& indices) {
  const int64_t rows = x.dim(0);
  const int64_t cols = x.dim(1);
  const float* src = x.data<float>();
  float* out_values = values.data<float>();
  int32_t* out_indices = indices.data<int32_t>();
  if (k == 0) return;
  parallel_for(rows, grain_for_work(2 * cols), [&](int64_t begin, int64_t end) {
    std::vector<Candidate> heap;
    heap.reserve(static_cast<size_t>(k));
    for (int64_t r = begin; r < end; ++r) {
      const float* in = src + r * cols;
      // A heap of the k best so far whose top is the worst of them; scanning in index order
      // means a later equal value never displaces an earlier one.
      heap.clear();
      for (int64_t c = 0; c < k; ++c) heap.push_back({in[c], static_cast<int32_t>(c)});
      std::make_heap(heap.begin(), heap.end(), ranks_before);
      for (int64_t c = k; c < cols; ++c) {
        if (in[c] > heap.front().value) {
          std::pop_heap(heap.begin(), heap.end(), ranks_before);
          heap.back() = {in[c], static_cast<int32_t>(c)};
          std::push_heap(heap.begin(), heap.end(), ranks_before);
        }
      }
      std::sort_heap(heap.begin(), heap.end(), ranks_before);
      for (int j = 0; j < k; ++j) {
        out_values[r * k + j] = heap[static_cast<size_t>(j)].value;
        out_indices[r * k + j] = heap[static_cast<size_t>(j)].index;
      }
    }
  });
}

}  // namespace earnserve::cpu
