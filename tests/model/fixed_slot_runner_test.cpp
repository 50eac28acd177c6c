#include "model/fixed_slot_runner.h"

#include <gtest/gtest.h>

#include "model/registry.h"
#include "tests/model/model_test_util.h"

namespace earnserve {
namespace {

class FixedSlotRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = load_causal_lm(testing::fixture_model_dir("tiny-qwen2"), LoadOptions());
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    model_ = std::move(model).value();
    for (int32_t i = 0; i < 19; ++i) prompt_a_.push_back((i * 53 + 7) % 300);
    for (int32_t i = 0; i < 11; ++i) prompt_b_.push_back((i * 29 + 3) % 300);
  }

  std::unique_ptr<CausalLM> model_;
  std::vector<int32_t> prompt_a_, prompt_b_;
};

TEST_F(FixedSlotRunnerTest, ResetSequenceGivesTheSameLogitsAgain) {
  FixedSlotRunner runner(*model_, 1, 64, /*block_size=*/4);
  auto first = runner.prefill(0, prompt_a_);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_EQ(runner.seq_len(0), 19);
  runner.reset(0);
  EXPECT_EQ(runner.seq_len(0), 0);
  auto second = runner.prefill(0, prompt_a_);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*first, *second);
}

// Interleaved decode steps of two sequences see only their own KV pages.
TEST_F(FixedSlotRunnerTest, SequencesAreIsolated) {
  FixedSlotRunner alone(*model_, 1, 64, 4);
  auto a_alone = alone.run_token_by_token(0, prompt_a_);
  ASSERT_TRUE(a_alone.ok());

  FixedSlotRunner shared(*model_, 2, 64, 4);
  ASSERT_TRUE(shared.prefill(1, prompt_b_).ok());
  for (size_t i = 0; i < prompt_a_.size(); ++i) {
    auto a = shared.decode(0, prompt_a_[i]);
    ASSERT_TRUE(a.ok());
    EXPECT_TRUE(testing::logits_close(a->data(), (*a_alone)[i], 1e-5, "step " + std::to_string(i)));
    ASSERT_TRUE(shared.decode(1, prompt_b_[i % prompt_b_.size()]).ok());
  }
}

TEST_F(FixedSlotRunnerTest, PrefillEqualsTokenByTokenAcrossBlockBoundaries) {
  FixedSlotRunner runner(*model_, 2, 64, /*block_size=*/3);
  auto prefill = runner.prefill_all_logits(0, prompt_a_);
  auto steps = runner.run_token_by_token(1, prompt_a_);
  ASSERT_TRUE(prefill.ok() && steps.ok());
  const int64_t vocab = prefill->dim(1);
  for (size_t i = 0; i < prompt_a_.size(); ++i) {
    EXPECT_TRUE(testing::logits_close(prefill->data<float>() + static_cast<int64_t>(i) * vocab,
                                      (*steps)[i], 1e-5, "position " + std::to_string(i)));
  }
}

TEST_F(FixedSlotRunnerTest, GreedyStopsAtAStopToken) {
  FixedSlotRunner runner(*model_, 1, 64);
  auto free_run = runner.generate_greedy(0, prompt_b_, 8);
  ASSERT_TRUE(free_run.ok());
  ASSERT_EQ(free_run->size(), 8u);
  runner.reset(0);
  const int32_t stop[] = {(*free_run)[2]};
  auto stopped = runner.generate_greedy(0, prompt_b_, 8, stop);
  ASSERT_TRUE(stopped.ok());
  // Stops at the first occurrence of the stop token, which it includes.
  size_t first = std::find(free_run->begin(), free_run->end(), stop[0]) - free_run->begin();
  EXPECT_EQ(*stopped, std::vector<int32_t>(free_run->begin(), free_run->begin() + first + 1));
}

TEST_F(FixedSlotRunnerTest, BadRequestsAreErrors) {
  FixedSlotRunner runner(*model_, 2, 16, 4);
  EXPECT_EQ(runner.prefill(2, prompt_b_).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.prefill(-1, prompt_b_).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.prefill(0, {}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.prefill(0, prompt_a_).status().code(), StatusCode::kOutOfRange);  // 19 > 16
  EXPECT_EQ(runner.seq_len(0), 0);
  const int32_t bad_token = 300;
  EXPECT_EQ(runner.decode(0, bad_token).status().code(), StatusCode::kInvalidArgument);
  const FixedSlotRunner::SeqChunk twice[] = {{1, prompt_b_}, {1, prompt_b_}};
  EXPECT_EQ(runner.step(twice).status().code(), StatusCode::kInvalidArgument);
  // Capacity: 11 fit, 5 more fit exactly, one more does not.
  ASSERT_TRUE(runner.prefill(0, prompt_b_).ok());
  ASSERT_TRUE(runner.prefill(0, std::span(prompt_b_).first(5)).ok());
  EXPECT_EQ(runner.decode(0, 1).status().code(), StatusCode::kOutOfRange);
}

}  // namespace
}  // namespace earnserve
