// The NCCL communicator: one rank per GPU, rendezvous over the real TcpStore on loopback. GPU
// cases skip without enough GPUs; without CUDA the factory must fail with a clear error.
#include <gtest/gtest.h>

#include <functional>
#include <thread>

#include "core/device.h"
#include "model/parallel/communicator.h"
#include "tests/parallel/test_ports.h"

namespace earnserve {
namespace {

using std::chrono::milliseconds;

RendezvousOptions options_for(int port, int rank, int world_size) {
  RendezvousOptions o;
  o.master_addr = "127.0.0.1";
  o.master_port = port;
  o.rank = rank;
  o.world_size = world_size;
  o.hostname = "127.0.0.1";
  o.timeout = milliseconds(60000);
  return o;
}

Tensor on_gpu(const std::vector<float>& values, const Shape& shape) {
  auto t = Tensor::from_vector(values, shape).to(Device::kCUDA);
  ES_CHECK(t.ok()) << t.status().to_string();
  return std::move(t).value();
}

std::vector<float> on_host(const Tensor& t) {
  auto h = t.to(Device::kCPU);
  ES_CHECK(h.ok()) << h.status().to_string();
  return h->to_float_vector();
}

// Rank r (on GPU r) runs every collective against a directly computed reference.
Status exercise(Communicator& comm) {
  const int rank = comm.rank();
  const int world = comm.world_size();
  for (int64_t n : {0, 1, 7, 100003}) {
    std::vector<float> mine(n);
    for (int64_t i = 0; i < n; ++i) mine[i] = static_cast<float>(i % 31 + 10 * rank);
    Tensor t = on_gpu(mine, {n});
    ES_RETURN_IF_ERROR(comm.all_reduce_sum(t));
    std::vector<float> got = on_host(t);
    for (int64_t i = 0; i < n; ++i) {
      float expected = 0;
      for (int r = 0; r < world; ++r) expected += static_cast<float>(i % 31 + 10 * r);
      if (got[i] != expected) return internal_error("all_reduce_sum wrong at " + std::to_string(i));
    }
  }
  Tensor in = on_gpu({1.0f * rank, 2.0f * rank, 3.0f}, {1, 3});
  Tensor out;
  ES_RETURN_IF_ERROR(comm.all_gather(in, out));
  std::vector<float> gathered = on_host(out);
  for (int r = 0; r < world; ++r) {
    if (gathered[3 * r] != 1.0f * r || gathered[3 * r + 1] != 2.0f * r) {
      return internal_error("all_gather wrong for rank " + std::to_string(r));
    }
  }
  Tensor b = on_gpu({5.0f + rank, 6.0f + rank, 7.0f + rank}, {3});
  ES_RETURN_IF_ERROR(comm.broadcast(b, world - 1));
  if (on_host(b) != std::vector<float>{4.0f + world, 5.0f + world, 6.0f + world}) {
    return internal_error("broadcast wrong");
  }
  Tensor cpu = Tensor::from_vector(std::vector<float>{1});
  if (comm.all_reduce_sum(cpu).code() != StatusCode::kInvalidArgument) {
    return internal_error("a CPU tensor was accepted");
  }
  return comm.barrier();
}

void run_gpus(int world_size) {
  const int port = free_loopback_port();
  std::vector<Status> results(world_size);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world_size; ++rank) {
    threads.emplace_back([&, rank] {
      auto comm = create_nccl_communicator(options_for(port, rank, world_size), rank);
      results[rank] = comm.ok() ? exercise(**comm) : comm.status();
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < world_size; ++r) {
    EXPECT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].to_string();
  }
}

TEST(NcclCommunicatorTest, OneGpuCollectivesEqualTheReference) {
  if (cuda_device_count() < 1) GTEST_SKIP() << "needs a GPU";
  run_gpus(1);
}

TEST(NcclCommunicatorTest, TwoGpusCollectivesEqualTheReference) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  run_gpus(2);
}

TEST(NcclCommunicatorTest, FailsWithAClearErrorWithoutAGpu) {
  if (cuda_device_count() > 0) GTEST_SKIP() << "a GPU is present";
  auto comm = create_nccl_communicator(options_for(free_loopback_port(), 0, 1), 0);
  ASSERT_FALSE(comm.ok());
  EXPECT_TRUE(comm.status().code() == StatusCode::kUnimplemented ||
              comm.status().code() == StatusCode::kUnavailable ||
              comm.status().code() == StatusCode::kInvalidArgument)
      << comm.status().to_string();
  EXPECT_NE(comm.status().message().find("nccl"), std::string::npos) << comm.status().message();
}

}  // namespace
}  // namespace earnserve
