#include "scheduler/executor/model_input.h"

#include <gtest/gtest.h>

#include "cache/kv_group_spec.h"

namespace earnserve {
namespace {

// Four beams forked from a 40-token prompt, each decoding its first token.
TEST(ModelInputTest, BeamsOfOneRequestShareTheirPromptPages) {
  BlockManager bm(single_group_layout(2), {64}, 16, /*enable_prefix_caching=*/false);
  SequenceGroup group;
  std::vector<int32_t> prompt(40);
  for (int i = 0; i < 40; ++i) prompt[i] = i + 3;
  ASSERT_TRUE(bm.allocate(0, prompt).has_value());
  bm.mark_computed(0, 40, prompt);
  for (int b = 1; b < 4; ++b) bm.fork(0, b);
  std::vector<std::unique_ptr<Sequence>> beams;
  for (int b = 0; b < 4; ++b) {
    auto s = std::make_unique<Sequence>();
    s->kv_id = b;
    s->tokens = prompt;
    s->append(100 + b);
    s->num_prompt_tokens = 40;
    s->num_computed_tokens = 40;
    ASSERT_TRUE(bm.append_slots(b, std::vector<int32_t>{100 + b}));
    beams.push_back(std::move(s));
  }
  // A second, unrelated request decoding alone gets no prefix.
  SequenceGroup other;
  auto lone = std::make_unique<Sequence>();
  lone->kv_id = 10;
  lone->tokens = prompt;
  lone->append(7);
  lone->num_prompt_tokens = 40;
  lone->num_computed_tokens = 40;
  ASSERT_TRUE(bm.allocate(10, lone->tokens).has_value());

  SchedulerStep step;
  for (auto& b : beams) step.seqs.push_back({&group, b.get(), 40, 1, true});
  step.seqs.push_back({&other, lone.get(), 40, 1, true});
  step.num_tokens = 5;
  ModelInput input = build_model_input(step, bm, 2, Device::kCPU);
  const AttentionMetadata& meta = input.batch.groups.at(0);
  ASSERT_TRUE(meta.seq_prefix.defined());
  EXPECT_EQ(meta.seq_prefix.to_float_vector(), (std::vector<float>{0, 0, 0, 0, -1}));
  // Two full prompt pages are shared; the partly filled third was copied on write per beam.
  EXPECT_EQ(meta.prefix_lens.to_float_vector(), (std::vector<float>{32}));
  EXPECT_EQ(input.num_logits, 5);
}

}  // namespace
}  // namespace earnserve
