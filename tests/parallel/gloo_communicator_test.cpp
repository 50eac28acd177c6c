// The Gloo communicator with real TCP rendezvous on loopback: ranks as threads of this process
// and as forked processes. Values are small integers, so every sum is exact in every dtype and
// the reference is computed directly.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <future>
#include <thread>

#include "core/half.h"
#include "model/parallel/communicator.h"
#include "tests/parallel/test_ports.h"

namespace earnserve {
namespace {

using std::chrono::milliseconds;

RendezvousOptions options_for(int port, int rank, int world_size, milliseconds timeout) {
  RendezvousOptions o;
  o.master_addr = "127.0.0.1";
  o.master_port = port;
  o.rank = rank;
  o.world_size = world_size;
  o.hostname = "127.0.0.1";
  o.timeout = timeout;
  return o;
}

// Runs `body` on world_size threads, each with its own communicator; returns each rank's Status
// (the rendezvous error, or what body returned).
std::vector<Status> run_world(int world_size, const std::function<Status(Communicator&)>& body,
                              milliseconds timeout = milliseconds(30000)) {
  const int port = free_loopback_port();
  std::vector<Status> results(world_size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      auto comm = create_gloo_communicator(options_for(port, rank, world_size, timeout));
      if (!comm.ok()) {
        results[rank] = comm.status();
        return;
      }
      results[rank] = body(**comm);
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

void expect_all_ok(const std::vector<Status>& results) {
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].to_string();
  }
}

// Rank r's i-th value: a small integer, distinct per rank.
float value_at(int rank, int64_t i) { return static_cast<float>((i % 41) - 20 + 3 * rank); }

Tensor rank_tensor(int rank, int64_t n, DType dtype) {
  Tensor t = Tensor::cpu({n}, dtype);
  for (int64_t i = 0; i < n; ++i) {
    const float v = value_at(rank, i);
    switch (dtype) {
      case DType::kF32:
        t.data<float>()[i] = v;
        break;
      case DType::kBF16:
        t.data_u16()[i] = float_to_bf16(v);
        break;
      case DType::kF16:
        t.data_u16()[i] = float_to_fp16(v);
        break;
      case DType::kI32:
        t.data<int32_t>()[i] = static_cast<int32_t>(v);
        break;
      case DType::kI64:
        t.data<int64_t>()[i] = static_cast<int64_t>(v);
        break;
      default:
        ES_CHECK(false) << "dtype";
    }
  }
  return t;
}

// Checks that t holds the sum over ranks of rank_tensor(r, n, dtype).
Status check_sum(const Tensor& t, int world_size, int64_t n) {
  if (t.numel() != n) return internal_error("numel changed to " + std::to_string(t.numel()));
  for (int64_t i = 0; i < n; ++i) {
    float expected = 0;
    for (int r = 0; r < world_size; ++r) expected += value_at(r, i);
    if (t.item_as_float(i) != expected) {
      return internal_error("element " + std::to_string(i) + " is " +
                            std::to_string(t.item_as_float(i)) + ", expected " +
                            std::to_string(expected));
    }
  }
  return Status::Ok();
}

// Sizes: empty, one, odd, and odd past Gloo's 1 MiB segment so the ring takes several rounds.
const int64_t kSizes[] = {0, 1, 7, 1001, (1 << 18) + 3};

class GlooCommunicatorTest : public testing::TestWithParam<int> {};

TEST_P(GlooCommunicatorTest, AllReduceSumEqualsTheSumOverRanks) {
  const int world_size = GetParam();
  expect_all_ok(run_world(world_size, [&](Communicator& comm) -> Status {
    if (comm.rank() < 0 || comm.rank() >= world_size || comm.world_size() != world_size) {
      return internal_error("wrong rank or world size");
    }
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64}) {
      for (int64_t n : kSizes) {
        if (dtype != DType::kF32 && n > 2000) continue;
        Tensor t = rank_tensor(comm.rank(), n, dtype);
        ES_RETURN_IF_ERROR(comm.all_reduce_sum(t));
        ES_RETURN_IF_ERROR(
            check_sum(t, world_size, n)
                .with_prefix(std::string(dtype_name(dtype)) + " n=" + std::to_string(n)));
      }
    }
    return Status::Ok();
  }));
}

TEST_P(GlooCommunicatorTest, AllGatherConcatenatesRanksAlongDimZero) {
  const int world_size = GetParam();
  expect_all_ok(run_world(world_size, [&](Communicator& comm) -> Status {
    for (int64_t rows : {0, 1, 5}) {
      // in: [rows, 3], element (i, j) = 1000 * rank + 3 * i + j
      std::vector<float> values(rows * 3);
      for (int64_t k = 0; k < rows * 3; ++k) values[k] = 1000.0f * comm.rank() + k;
      Tensor in = Tensor::from_vector(values, {rows, 3});
      Tensor out;  // allocated by all_gather
      ES_RETURN_IF_ERROR(comm.all_gather(in, out));
      if (out.shape() != Shape{world_size * rows, 3}) {
        return internal_error("out shape " + shape_to_string(out.shape()));
      }
      for (int r = 0; r < world_size; ++r) {
        for (int64_t k = 0; k < rows * 3; ++k) {
          if (out.data<float>()[r * rows * 3 + k] != 1000.0f * r + k) {
            return internal_error("rows=" + std::to_string(rows) + ": wrong value from rank " +
                                  std::to_string(r));
          }
        }
      }
    }
    // A caller-provided output of odd byte size (u8), reused as is.
    Tensor in = Tensor::cpu({3}, DType::kU8);
    for (int k = 0; k < 3; ++k) in.data<uint8_t>()[k] = static_cast<uint8_t>(comm.rank() * 3 + k);
    Tensor out = Tensor::cpu({3 * world_size}, DType::kU8);
    ES_RETURN_IF_ERROR(comm.all_gather(in, out));
    for (int k = 0; k < 3 * world_size; ++k) {
      if (out.data<uint8_t>()[k] != k)
        return internal_error("u8 gather wrong at " + std::to_string(k));
    }
    return Status::Ok();
  }));
}

TEST_P(GlooCommunicatorTest, BroadcastCopiesTheRootsTensorToEveryRank) {
  const int world_size = GetParam();
  expect_all_ok(run_world(world_size, [&](Communicator& comm) -> Status {
    for (int root = 0; root < world_size; ++root) {
      for (int64_t n : kSizes) {
        Tensor t = rank_tensor(comm.rank(), n, DType::kF32);
        ES_RETURN_IF_ERROR(comm.broadcast(t, root));
        for (int64_t i = 0; i < n; ++i) {
          if (t.data<float>()[i] != value_at(root, i)) {
            return internal_error("root " + std::to_string(root) + " n=" + std::to_string(n) +
                                  ": element " + std::to_string(i) + " not the root's");
          }
        }
      }
    }
    return Status::Ok();
  }));
}

TEST_P(GlooCommunicatorTest, BarrierReturnsOnlyAfterEveryRankEntered) {
  const int world_size = GetParam();
  std::atomic<int> entered{0};
  expect_all_ok(run_world(world_size, [&](Communicator& comm) -> Status {
    for (int round = 1; round <= 3; ++round) {
      entered.fetch_add(1);
      ES_RETURN_IF_ERROR(comm.barrier());
      if (entered.load() < round * world_size) {
        return internal_error("left barrier " + std::to_string(round) + " after only " +
                              std::to_string(entered.load()) + " entries");
      }
      ES_RETURN_IF_ERROR(comm.barrier());  // nobody enters the next round before all checked
    }
    return Status::Ok();
  }));
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, GlooCommunicatorTest, testing::Values(1, 2, 4),
                         [](const testing::TestParamInfo<int>& info) {
                           return "World" + std::to_string(info.param);
                         });

TEST(GlooCommunicatorErrorsTest, BadArgumentsAreRejectedOnEveryRank) {
  expect_all_ok(run_world(2, [](Communicator& comm) -> Status {
    Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3});
    Status s = comm.broadcast(t, 2);
    if (s.code() != StatusCode::kInvalidArgument) return internal_error("root 2: " + s.to_string());
    Tensor wrong = Tensor::cpu({5}, DType::kF32);
    s = comm.all_gather(t, wrong);
    if (s.code() != StatusCode::kInvalidArgument || s.message().find("[6]") == std::string::npos) {
      return internal_error("gather shape: " + s.to_string());
    }
    Tensor u8 = Tensor::cpu({2}, DType::kU8);
    s = comm.all_reduce_sum(u8);
    if (s.code() != StatusCode::kInvalidArgument) return internal_error("u8 sum: " + s.to_string());
    Tensor undefined;
    s = comm.all_reduce_sum(undefined);
    if (s.code() != StatusCode::kInvalidArgument)
      return internal_error("undefined: " + s.to_string());
    // Rejected calls leave the communicator usable.
    ES_RETURN_IF_ERROR(comm.all_reduce_sum(t));
    if (t.to_float_vector() != std::vector<float>{2, 4, 6})
      return internal_error("sum after errors");
    return Status::Ok();
  }));
}

TEST(GlooCommunicatorErrorsTest, RankThatNeverJoinsGivesDeadlineExceeded) {
  const int port = free_loopback_port();
  auto comm = create_gloo_communicator(options_for(port, 0, 2, milliseconds(500)));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), StatusCode::kDeadlineExceeded) << comm.status().to_string();
  EXPECT_NE(comm.status().message().find("rank 0 of 2"), std::string::npos);
}

TEST(GlooCommunicatorErrorsTest, MasterThatNeverStartsGivesDeadlineExceeded) {
  const int port = free_loopback_port();
  auto comm = create_gloo_communicator(options_for(port, 1, 2, milliseconds(300)));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), StatusCode::kDeadlineExceeded) << comm.status().to_string();
}

TEST(GlooCommunicatorErrorsTest, RankThatSkipsACollectiveGivesDeadlineExceeded) {
  const int port = free_loopback_port();
  std::promise<void> rank0_done;
  std::thread rank1([&] {
    auto comm = create_gloo_communicator(options_for(port, 1, 2, milliseconds(500)));
    ES_CHECK(comm.ok()) << comm.status().to_string();
    rank0_done.get_future().wait();  // alive, connected, but never enters the all-reduce
  });
  auto comm = create_gloo_communicator(options_for(port, 0, 2, milliseconds(500)));
  ASSERT_TRUE(comm.ok()) << comm.status().to_string();
  Tensor t = Tensor::from_vector(std::vector<float>{1, 2, 3});
  Status s = (*comm)->all_reduce_sum(t);
  rank0_done.set_value();
  rank1.join();
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.to_string();
  Status after = (*comm)->barrier();
  EXPECT_EQ(after.code(), StatusCode::kFailedPrecondition) << after.to_string();
}

// ---- ranks as processes --------------------------------------------------------------------

// Forks one process per rank running `body` (a non-OK Status exits 1, with the message on
// stderr) and returns each rank's exit status from waitpid.
std::vector<int> run_processes(int world_size,
                               const std::function<Status(int rank, int port)>& body) {
  const int port = free_loopback_port();
  std::vector<pid_t> pids;
  for (int rank = 0; rank < world_size; ++rank) {
    pid_t pid = fork();
    ES_CHECK(pid >= 0);
    if (pid == 0) {
      Status s = body(rank, port);
      if (!s.ok()) fprintf(stderr, "rank %d: %s\n", rank, s.to_string().c_str());
      fflush(stderr);
      _exit(s.ok() ? 0 : 1);
    }
    pids.push_back(pid);
  }
  std::vector<int> statuses;
  for (pid_t pid : pids) {
    int status = 0;
    waitpid(pid, &status, 0);
    statuses.push_back(status);
  }
  return statuses;
}

TEST(GlooCommunicatorProcessTest, ProcessesAgreeOnEveryCollective) {
  const int world_size = 3;
  auto statuses = run_processes(world_size, [](int rank, int port) -> Status {
    ES_ASSIGN_OR_RETURN(auto comm,
                        create_gloo_communicator(options_for(port, rank, 3, milliseconds(30000))));
    for (int64_t n : kSizes) {
      Tensor t = rank_tensor(rank, n, DType::kF32);
      ES_RETURN_IF_ERROR(comm->all_reduce_sum(t));
      ES_RETURN_IF_ERROR(check_sum(t, 3, n));
    }
    Tensor in = rank_tensor(rank, 5, DType::kI32).view({1, 5});
    Tensor out;
    ES_RETURN_IF_ERROR(comm->all_gather(in, out));
    for (int r = 0; r < 3; ++r) {
      for (int i = 0; i < 5; ++i) {
        if (out.data<int32_t>()[r * 5 + i] != static_cast<int32_t>(value_at(r, i))) {
          return internal_error("all_gather wrong");
        }
      }
    }
    Tensor b = rank_tensor(rank, 9, DType::kBF16);
    ES_RETURN_IF_ERROR(comm->broadcast(b, 2));
    for (int i = 0; i < 9; ++i) {
      if (b.item_as_float(i) != value_at(2, i)) return internal_error("broadcast wrong");
    }
    return comm->barrier();
  });
  for (int r = 0; r < world_size; ++r) {
    EXPECT_TRUE(WIFEXITED(statuses[r]) && WEXITSTATUS(statuses[r]) == 0)
        << "rank " << r << " wait status " << statuses[r];
  }
}

TEST(GlooCommunicatorProcessTest, RankKilledMidCollectiveGivesAnErrorNotAHang) {
  // Ranks 0 and 1 enter an all-reduce that needs rank 2; rank 2 is killed instead. The timeout
  // is long, so UNAVAILABLE shows the survivors noticed the lost peer rather than waited it out.
  auto statuses = run_processes(3, [](int rank, int port) -> Status {
    ES_ASSIGN_OR_RETURN(auto comm,
                        create_gloo_communicator(options_for(port, rank, 3, milliseconds(60000))));
    Tensor t = rank_tensor(rank, 1 << 16, DType::kF32);
    ES_RETURN_IF_ERROR(comm->all_reduce_sum(t));  // one collective that works
    if (rank == 2) {
      std::this_thread::sleep_for(milliseconds(200));
      raise(SIGKILL);
    }
    Status s = comm->all_reduce_sum(t);
    if (s.code() != StatusCode::kUnavailable) {
      return internal_error("expected UNAVAILABLE, got " + s.to_string());
    }
    return Status::Ok();
  });
  EXPECT_TRUE(WIFEXITED(statuses[0]) && WEXITSTATUS(statuses[0]) == 0) << statuses[0];
  EXPECT_TRUE(WIFEXITED(statuses[1]) && WEXITSTATUS(statuses[1]) == 0) << statuses[1];
  EXPECT_TRUE(WIFSIGNALED(statuses[2]) && WTERMSIG(statuses[2]) == SIGKILL);
}

}  // namespace
}  // namespace earnserve
