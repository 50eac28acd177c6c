// Keeps OpenBLAS from starting its own threads inside our parallel regions. OpenBLAS here is the
// pthreads build: sgemm called from several OpenMP workers at once would each fan out to the
// whole OpenBLAS pool and oversubscribe the cores. A kernel that calls sgemm per work item from
// inside parallel_for holds a ScopedSingleThreadBlas around the region.
// OpenBLAS's thread count is process-wide; concurrent ops may see it at 1 for the duration,
// which costs speed, never correctness.
#pragma once

#include "kernels/cpu/blas.h"

namespace earnserve::cpu {

class ScopedSingleThreadBlas {
 public:
  ScopedSingleThreadBlas() : previous_(blas_num_threads()) {
    if (previous_ != 1) set_blas_num_threads(1);
  }
  ~ScopedSingleThreadBlas() {
    if (previous_ != 1) set_blas_num_threads(previous_);
  }
  ScopedSingleThreadBlas(const ScopedSingleThreadBlas&) = delete;
  ScopedSingleThreadBlas& operator=(const ScopedSingleThreadBlas&) = delete;

 private:
  int previous_;
};

}  // namespace earnserve::cpu
