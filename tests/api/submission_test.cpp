// The submit-and-collect path with a real engine on the tiny-rec fixture: results, a deadline
// that aborts the call and frees its pages, polling without waiting, and the 400 for beams that
// cannot fit the KV cache even alone.
#include "api/service/submission.h"

#include <gtest/gtest.h>

#include <thread>

#include "api/protocol/protocol_context.h"
#include "tiny_rec_protocol_test.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

class SubmissionTest : public TinyRecProtocolTest {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.model_dir = kModelDir;
    o.kv_cache_memory_bytes = 16 << 20;
    StatusOr<std::unique_ptr<Engine>> e = Engine::create(o);
    ASSERT_TRUE(e.ok()) << e.status().to_string();
    engine_ = std::move(*e);
    StatusOr<ProtocolContext> ctx = make_protocol_context(*engine_, kModelDir, "tiny-rec");
    ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
    context_ = std::move(*ctx);
    engine_->start();
  }
  void TearDown() override {
    if (engine_) engine_->stop();
  }

  ApiCall completion(const json& body) {
    ApiOr<ApiCall> call = parse_call(Endpoint::kCompletions, body, context_);
    EXPECT_TRUE(call.ok()) << call.error().message;
    if (!call.ok()) return ApiCall{};
    return std::move(*call);
  }

  // Whether the engine is idle with every page free within a few seconds.
  bool drained() {
    for (int i = 0; i < 200; ++i) {
      const EngineStats s = engine_->stats();
      if (s.num_running == 0 && s.num_waiting == 0 && s.kv_usage == 0.0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::unique_ptr<Engine> engine_;
  ProtocolContext context_;
};

TEST_F(SubmissionTest, CollectsTheFinalOutputOfEachPrompt) {
  const ApiCall call = completion(
      {{"prompt", json::array({"Once", "The cat"})}, {"max_tokens", 3}, {"temperature", 0}});
  ApiOr<std::unique_ptr<Submission>> sub = Submission::submit(*engine_, call, "c");
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  ApiOr<std::vector<RequestOutput>> outputs = (*sub)->collect();
  ASSERT_TRUE(outputs.ok()) << outputs.error().message;
  ASSERT_EQ(outputs->size(), 2u);
  for (const RequestOutput& o : *outputs) EXPECT_TRUE(o.finished);
  EXPECT_TRUE((*sub)->poll());
}

TEST_F(SubmissionTest, PollsWithoutWaitingUntilTheCallIsOver) {
  const ApiCall call = completion({{"prompt", "Once"}, {"max_tokens", 4}, {"temperature", 0}});
  ApiOr<std::unique_ptr<Submission>> sub = Submission::submit(*engine_, call, "p");
  ASSERT_TRUE(sub.ok());
  int polls = 0;
  while (!(*sub)->poll(std::chrono::milliseconds(10))) ASSERT_LT(++polls, 1000);
  ApiOr<std::vector<RequestOutput>> outputs = (*sub)->collect();
  ASSERT_TRUE(outputs.ok()) << outputs.error().message;
  EXPECT_EQ(outputs->size(), 1u);
}

TEST_F(SubmissionTest, DeadlineAbortsTheCallAndFreesItsPages) {
  const ApiCall call =
      completion({{"prompt", "Once"}, {"max_tokens", 1000}, {"ignore_eos", true}, {"n", 8}});
  ApiOr<std::unique_ptr<Submission>> sub = Submission::submit(*engine_, call, "t");
  ASSERT_TRUE(sub.ok());
  const Clock::time_point start = Clock::now();
  ApiOr<std::vector<RequestOutput>> outputs =
      (*sub)->collect(start + std::chrono::milliseconds(200));
  ASSERT_FALSE(outputs.ok());
  EXPECT_EQ(outputs.error().http_status, 408);
  EXPECT_EQ(outputs.error().code, "request_timeout");
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  // Aborted in the engine even while the submission lives on.
  EXPECT_TRUE(drained());
}

TEST_F(SubmissionTest, DroppingASubmissionAbortsIt) {
  const ApiCall call =
      completion({{"prompt", "Once"}, {"max_tokens", 1000}, {"ignore_eos", true}, {"n", 4}});
  ApiOr<std::unique_ptr<Submission>> sub = Submission::submit(*engine_, call, "d");
  ASSERT_TRUE(sub.ok());
  (*sub)->poll(std::chrono::milliseconds(50));
  sub = ApiError{};
  EXPECT_TRUE(drained());
}

TEST_F(SubmissionTest, BeamsThatCannotFitTheKvCacheAloneAre400) {
  const ApiCall call =
      completion({{"prompt", "Once"}, {"max_tokens", 1000}, {"n", 128}, {"temperature", 1.0}});
  ApiOr<std::unique_ptr<Submission>> sub = Submission::submit(*engine_, call, "k");
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(sub.error().http_status, 400);
  EXPECT_EQ(sub.error().code, "kv_cache_too_small");
  EXPECT_NE(sub.error().message.find("KV blocks"), std::string::npos) << sub.error().message;
  EXPECT_NE(sub.error().message.find("--kv-cache-memory"), std::string::npos);
  EXPECT_TRUE(drained());
}

}  // namespace
}  // namespace earnserve::api
