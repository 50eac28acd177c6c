// CPU threading for kernels: a parallel-for over an index range on a pool of helper threads.
// The caller works too and claims chunks dynamically, so it never waits for a helper the OS has
// not scheduled yet (on a loaded machine that wait, once per op, used to dominate decode). The
// thread count defaults to the machine's cores (EARNSERVE_NUM_THREADS overrides). Thread-safe to
// call; nested calls, and calls made while another thread's parallel_for runs, run serially.
#pragma once

#include <cstdint>
#include <functional>

namespace earnserve {

int num_threads();
void set_num_threads(int n);

// Work (in floating-point operations or bytes touched) below which waking another thread costs
// more than it saves; kernels size their grains from it so tiny ops stay on one thread.
inline constexpr int64_t kMinParallelWork = int64_t{1} << 17;

// Items per chunk so that each chunk carries at least kMinParallelWork.
inline int64_t grain_for_work(int64_t work_per_item) {
  return work_per_item >= kMinParallelWork
             ? 1
             : kMinParallelWork / (work_per_item > 0 ? work_per_item : 1);
}

// Calls fn(begin, end) on disjoint chunks covering [0, n), each at least `grain` long (except
// maybe the last), in parallel. Runs inline when n is small or already inside a parallel region.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace earnserve
