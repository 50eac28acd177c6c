// The whole engine on a GPU (EngineOptions::device = kCUDA, `--device cuda`): TinyStories greedy
// generation and catalogue beam search give the CPU engine's tokens, and log-probabilities within
// 1e-3. Skipped where no GPU is visible (and in builds without CUDA).
#include <gtest/gtest.h>

#include <cmath>

#include "core/device.h"
#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"
#include "test_paths.h"

namespace earnserve {
namespace {

std::unique_ptr<Engine> make_engine(const std::string& dir, Device device) {
  EngineOptions o;
  o.model_dir = dir;
  o.device = device;
  o.kv_cache_memory_bytes = 64ll << 20;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

void expect_same(const std::vector<RequestOutput>& cpu, const std::vector<RequestOutput>& gpu) {
  ASSERT_EQ(cpu.size(), gpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    ASSERT_EQ(cpu[i].outputs.size(), gpu[i].outputs.size());
    for (size_t k = 0; k < cpu[i].outputs.size(); ++k) {
      EXPECT_EQ(cpu[i].outputs[k].token_ids, gpu[i].outputs[k].token_ids) << i << "/" << k;
      EXPECT_NEAR(cpu[i].outputs[k].cumulative_logprob, gpu[i].outputs[k].cumulative_logprob, 1e-3)
          << i << "/" << k;
    }
  }
}

TEST(EngineCudaTest, GreedyAndBeamSearchEqualTheCpuEngine) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  {
    auto cpu = make_engine(testing::tinystories_dir(), Device::kCPU);
    auto gpu = make_engine(testing::tinystories_dir(), Device::kCUDA);
    ASSERT_TRUE(cpu && gpu);
    EngineRequest r;
    r.request_id = "greedy";
    r.prompt_token_ids = {1};
    r.params.temperature = 0.0f;
    r.params.max_tokens = 48;
    auto a = cpu->generate({r});
    auto b = gpu->generate({r});
    ASSERT_TRUE(a.ok() && b.ok());
    expect_same(*a, *b);
  }
  const std::string rec = testing::tiny_rec_dir();
  auto cpu = make_engine(rec, Device::kCPU);
  auto gpu = make_engine(rec, Device::kCUDA);
  ASSERT_TRUE(cpu && gpu);
  auto spec = RecommendationSpec::load(rec, cpu->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  RecommendationQuery q;
  q.history = {(*spec)->catalogue().item(0).id, (*spec)->catalogue().item(1).id};
  q.top_k = 8;
  auto r = (*spec)->make_request(q, cpu->tokenizer(), "beam");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  auto a = cpu->generate({*r});
  auto b = gpu->generate({*r});
  ASSERT_TRUE(a.ok() && b.ok());
  expect_same(*a, *b);
}

TEST(EngineCudaTest, ABadDeviceIndexIsAnError) {
  EngineOptions o;
  o.model_dir = testing::tinystories_dir();
  o.device = Device::kCUDA;
  o.cuda_device = 99;
  auto e = Engine::create(o);
  ASSERT_FALSE(e.ok());
  const std::string m = e.status().message();
  EXPECT_TRUE(m.find("without CUDA") != std::string::npos ||
              m.find("does not exist") != std::string::npos)
      << m;
}

}  // namespace
}  // namespace earnserve
