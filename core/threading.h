// CPU threading for kernels: a parallel-for over an index range on the OpenMP pool. The thread
// count defaults to the machine's cores (EARNSERVE_NUM_THREADS overrides). Thread-safe to call;
// nested calls run serially inside the outer one.
#pragma once

#include <cstdint>
#include <functional>

namespace earnserve {

int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end) on disjoint chunks covering [0, n), each at least `grain` long (except
// maybe the last), in parallel. Runs inline when n is small or already inside a parallel region.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace earnserve
