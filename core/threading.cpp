#include "core/threading.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace earnserve {
namespace {

int default_threads() {
  if (const char* env = std::getenv("EARNSERVE_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

std::atomic<int>& thread_storage() {
  static std::atomic<int> n(default_threads());
  return n;
}

// Chunks per thread: spare chunks let whoever is running take over the share of a thread the OS
// has not scheduled yet.
constexpr int64_t kChunksPerThread = 4;
// Pause iterations a thread spins before sleeping: long enough to catch the next op of a forward
// pass (tens of microseconds), short enough not to steal a loaded machine's cores.
constexpr int kSpinIterations = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

thread_local bool t_in_parallel = false;

// One parallel_for call. Chunks are claimed through `next`; the caller returns once `done`
// reaches num_chunks, so it never waits for a helper that has not claimed anything.
struct Job {
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 0;
  int64_t num_chunks = 0;
  std::atomic<int> helper_slots{0};  // helpers that may still join
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void work() {
    for (int64_t c = next.fetch_add(1); c < num_chunks; c = next.fetch_add(1)) {
      const int64_t begin = c * chunk;
      (*fn)(begin, std::min(n, begin + chunk));
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == num_chunks) done.notify_all();
    }
  }
};

// Helper threads that sleep on a condition variable between jobs. One job at a time; a
// parallel_for from another thread while a job runs executes inline. Leaked on purpose: helpers
// are never joined, so process exit has no destruction-order hazards.
class Pool {
 public:
  // False when another job is running (the caller then runs its work inline).
  bool try_run(const std::shared_ptr<Job>& job, int helpers) {
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true, std::memory_order_acquire)) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(threads_.size()) < helpers) {
        threads_.emplace_back([this] { helper_loop(); });
        threads_.back().detach();
      }
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();

    t_in_parallel = true;
    job->work();
    t_in_parallel = false;
    for (int i = 0;
         i < kSpinIterations && job->done.load(std::memory_order_acquire) < job->num_chunks; ++i) {
      cpu_relax();
    }
    for (int64_t d = job->done.load(std::memory_order_acquire); d < job->num_chunks;
         d = job->done.load(std::memory_order_acquire)) {
      job->done.wait(d, std::memory_order_acquire);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_.reset();
    }
    busy_.store(false, std::memory_order_release);
    return true;
  }

 private:
  void helper_loop() {
    t_in_parallel = true;  // nested parallel_for calls inside a job run inline
    uint64_t seen = 0;
    for (;;) {
      for (int i = 0; i < kSpinIterations && generation_.load(std::memory_order_acquire) == seen;
           ++i) {
        cpu_relax();
      }
      std::shared_ptr<Job> job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        job = job_;
      }
      if (job && job->helper_slots.fetch_sub(1) > 0) job->work();
    }
  }

  std::atomic<bool> busy_{false};
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) for each job
  std::mutex mu_;
  std::condition_variable cv_;
  // Guarded by mu_
  std::shared_ptr<Job> job_;
  std::vector<std::thread> threads_;
};

Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

int num_threads() { return thread_storage().load(); }
void set_num_threads(int n) { thread_storage().store(std::max(1, n)); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (threads <= 1 || t_in_parallel) {
    fn(0, n);
    return;
  }
  auto job = std::make_shared<Job>();
  job->fn = &fn;
  job->n = n;
  job->num_chunks = std::min<int64_t>(max_chunks, threads * kChunksPerThread);
  job->chunk = (n + job->num_chunks - 1) / job->num_chunks;
  job->num_chunks = (n + job->chunk - 1) / job->chunk;
  job->helper_slots.store(threads - 1);
  if (!pool().try_run(job, threads - 1)) fn(0, n);
}

}  // namespace earnserve
