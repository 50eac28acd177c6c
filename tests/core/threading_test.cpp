// parallel_for on the helper pool: every index exactly once, whatever the thread count, nesting
// or number of concurrent callers.
#include "core/threading.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace earnserve {
namespace {

class ParallelForTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = num_threads(); }
  void TearDown() override { set_num_threads(saved_); }

 private:
  int saved_ = 1;
};

// Counts how often each index of [0, n) is visited.
std::vector<int> visit_counts(int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  parallel_for(n, grain, [&](int64_t begin, int64_t end) {
    ASSERT_LE(0, begin);
    ASSERT_LT(begin, end);
    ASSERT_LE(end, n);
    for (int64_t i = begin; i < end; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
  });
  std::vector<int> out;
  for (const auto& h : hits) out.push_back(h.load());
  return out;
}

TEST_F(ParallelForTest, VisitsEveryIndexOnceForManySizesAndThreadCounts) {
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    for (int64_t n : {1, 2, 7, 64, 1000, 10007}) {
      for (int64_t grain : {1, 3, 100}) {
        std::vector<int> hits = visit_counts(n, grain);
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(hits[static_cast<size_t>(i)], 1)
              << "threads " << threads << " n " << n << " grain " << grain << " index " << i;
        }
      }
    }
  }
}

TEST_F(ParallelForTest, ReusesThePoolAcrossManyBackToBackCalls) {
  set_num_threads(4);
  std::atomic<int64_t> sum{0};
  for (int call = 0; call < 2000; ++call) {
    parallel_for(64, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) sum.fetch_add(i);
    });
  }
  EXPECT_EQ(sum.load(), int64_t{2000} * (63 * 64 / 2));
}

TEST_F(ParallelForTest, OneThreadRunsTheWholeRangeOnTheCaller) {
  set_num_threads(1);
  std::vector<std::pair<int64_t, int64_t>> calls;
  std::thread::id where;
  parallel_for(1000, 1, [&](int64_t begin, int64_t end) {
    calls.emplace_back(begin, end);
    where = std::this_thread::get_id();
  });
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0], std::make_pair(int64_t{0}, int64_t{1000}));
  EXPECT_EQ(where, std::this_thread::get_id());
}

TEST_F(ParallelForTest, NestedCallsRunInlineInOneChunk) {
  set_num_threads(4);
  std::atomic<int> nested_calls{0};
  std::atomic<int> outer_items{0};
  parallel_for(16, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      outer_items.fetch_add(1);
      parallel_for(100, 1, [&](int64_t b, int64_t e) {
        EXPECT_EQ(b, 0);
        EXPECT_EQ(e, 100);
        nested_calls.fetch_add(1);
      });
    }
  });
  EXPECT_EQ(outer_items.load(), 16);
  EXPECT_EQ(nested_calls.load(), 16);
}

TEST_F(ParallelForTest, ConcurrentCallersEachCoverTheirOwnRange) {
  set_num_threads(3);
  constexpr int kCallers = 4;
  std::vector<std::thread> callers;
  std::atomic<int> bad{0};
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int call = 0; call < 200; ++call) {
        const int64_t n = 50 + c * 17 + call % 5;
        std::vector<int> hits = visit_counts(n, 1);
        for (int h : hits) {
          if (h != 1) bad.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace earnserve
