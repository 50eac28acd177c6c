// EARN in the engine: register tokens wrap the prompt, layers from the split up compute and cache
// only register and generated tokens, and the results equal the PyTorch reference that masks
// attention on the full model (tools/earn_model.py; fixtures by tools/make_earn_fixtures.py).
// Every test runs on three 4-layer fixtures: split layer 1 with 4 + 4 registers, split layer
// L/2 = 2 with 2 + 2, split layer L - 1 = 3 with 3 suffix registers and no prefix registers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"
#include "scheduler/sampler.h"
#include "test_paths.h"

namespace earnserve {
namespace {

class EngineEarnTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::string earn_dir() const {
    return testing::source_path("tests/fixtures/models/" + GetParam());
  }

  nlohmann::json fixture() const {
    const std::string path = "tests/fixtures/earn/" + GetParam() + ".json";
    std::ifstream in(testing::source_path(path));
    EXPECT_TRUE(in.good()) << "missing " << path;
    return nlohmann::json::parse(in);
  }

  // `earn_block_size`: tokens per page of the register layers (-1: the engine's default).
  std::unique_ptr<Engine> make_engine(int max_batched_tokens = 4096, bool prefix_caching = true,
                                      int earn_block_size = -1) const;
};

std::unique_ptr<Engine> EngineEarnTest::make_engine(int max_batched_tokens, bool prefix_caching,
                                                    int earn_block_size) const {
  EngineOptions o;
  if (earn_block_size >= 0) o.earn_block_size = earn_block_size;
  o.model_dir = earn_dir();
  o.max_num_batched_tokens = max_batched_tokens;
  o.kv_cache_memory_bytes = 32ll << 20;
  o.enable_prefix_caching = prefix_caching;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return std::move(e).value();
}

std::vector<EngineRequest> greedy_requests(const nlohmann::json& fx) {
  std::vector<EngineRequest> out;
  for (const auto& c : fx["cases"]) {
    EngineRequest r;
    r.request_id = "greedy-" + std::to_string(out.size());
    r.prompt_token_ids = c["prompt_token_ids"].get<std::vector<int32_t>>();
    r.params.temperature = 0.0f;
    r.params.max_tokens = static_cast<int>(c["greedy"].size());
    r.params.ignore_eos = true;
    r.params.logprobs = 20;
    out.push_back(std::move(r));
  }
  return out;
}

void expect_greedy_matches(const nlohmann::json& fx, const std::vector<RequestOutput>& outs) {
  size_t i = 0;
  for (const auto& c : fx["cases"]) {
    const SequenceOutput& o = outs[i++].outputs.at(0);
    EXPECT_EQ(o.token_ids, c["greedy"].get<std::vector<int32_t>>()) << "case " << i - 1;
    // The first token's top-20 log-probabilities equal the reference's last prompt position.
    std::vector<float> ref = c["last_logits"].get<std::vector<float>>();
    const float lse = log_sum_exp(ref);
    ASSERT_FALSE(o.logprobs.empty());
    for (const auto& [token, lp] : o.logprobs[0].top) {
      EXPECT_NEAR(lp, ref[token] - lse, 2e-4) << "case " << i - 1 << " token " << token;
    }
  }
}

TEST_P(EngineEarnTest, GreedyAndLogprobsMatchTheMaskedReference) {
  auto engine = make_engine();
  auto fx = fixture();
  auto outs = engine->generate(greedy_requests(fx));
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  expect_greedy_matches(fx, *outs);
}

TEST_P(EngineEarnTest, ChunkedPrefillWithRegistersInAnyChunkGivesTheSameResult) {
  // 24 tokens per step: the prefix registers, the prompt and the suffix registers land in
  // different chunks, and several requests share steps.
  auto engine = make_engine(24);
  auto fx = fixture();
  auto outs = engine->generate(greedy_requests(fx));
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  expect_greedy_matches(fx, *outs);
}

// Constrained beam search at widths 5 and 10 equals the reference's beams and scores.
void expect_beams_match(Engine& engine, const std::string& model_dir, const nlohmann::json& fx) {
  auto spec = RecommendationSpec::load(model_dir, engine.tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  std::vector<EngineRequest> requests;
  std::vector<std::pair<const nlohmann::json*, int>> expected;
  for (const auto& c : fx["cases"]) {
    for (int k : {5, 10}) {
      EngineRequest r;
      r.request_id = "beam-" + std::to_string(requests.size());
      r.prompt_token_ids = c["prompt_token_ids"].get<std::vector<int32_t>>();
      r.params.use_beam_search = true;
      r.params.beam_width = k;
      r.params.n = k;
      r.params.max_tokens = 5;
      r.catalogue = (*spec)->catalogue_ptr();
      requests.push_back(std::move(r));
      expected.emplace_back(&c["beams"][std::to_string(k)], k);
    }
  }
  auto outs = engine.generate(requests);
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  for (size_t i = 0; i < outs->size(); ++i) {
    const auto& exp = *expected[i].first;
    auto seqs = exp["sequences"].get<std::vector<std::vector<int32_t>>>();
    auto scores = exp["scores"].get<std::vector<float>>();
    const RequestOutput& out = (*outs)[i];
    ASSERT_EQ(out.outputs.size(), seqs.size());
    for (size_t k = 0; k < seqs.size(); ++k) {
      EXPECT_EQ(out.outputs[k].token_ids, seqs[k]) << "request " << i << " beam " << k;
      EXPECT_NEAR(out.outputs[k].score, scores[k], 1e-4) << "request " << i << " beam " << k;
    }
  }
}

TEST_P(EngineEarnTest, ConstrainedBeamSearchMatchesTheMaskedReference) {
  auto engine = make_engine();
  expect_beams_match(*engine, earn_dir(), fixture());
}

TEST_P(EngineEarnTest, RegisterPagesOfAnySizeGiveTheSameResults) {
  // 1-token pages, 3 (registers and items straddle pages), 16 (one page per beam, the old layout).
  for (int earn_block_size : {1, 3, 16}) {
    SCOPED_TRACE("earn_block_size " + std::to_string(earn_block_size));
    auto engine = make_engine(24, true, earn_block_size);
    ASSERT_EQ(engine->options().earn_block_size, earn_block_size);
    auto fx = fixture();
    auto outs = engine->generate(greedy_requests(fx));
    ASSERT_TRUE(outs.ok()) << outs.status().to_string();
    expect_greedy_matches(fx, *outs);
    expect_beams_match(*engine, earn_dir(), fx);
    EXPECT_EQ(engine->stats().kv_usage, 0.0);
  }
}

TEST_P(EngineEarnTest, UpperLayersHoldPagesOnlyForRegistersAndGeneratedTokens) {
  auto engine = make_engine();
  auto fx = fixture();
  auto outs = engine->generate({greedy_requests(fx)[0]});
  ASSERT_TRUE(outs.ok());
  const RequestMetrics& m = outs->front().metrics;
  ASSERT_EQ(m.peak_kv_blocks.size(), 2u);
  // Each group's own page size: the register layers have smaller pages by default.
  const int bs = engine->options().block_size;
  const int marked_bs = engine->options().earn_block_size;
  ASSERT_GT(marked_bs, 0);
  ASSERT_LT(marked_bs, bs);
  const int wrapped = static_cast<int>(fx["cases"][0]["wrapped_token_ids"].size());
  const int generated = static_cast<int>(fx["cases"][0]["greedy"].size());
  const int registers = static_cast<int>(fx["earn"]["prefix_register_ids"].size() +
                                         fx["earn"]["suffix_register_ids"].size());
  // Layers below the split: every token. From the split up: the registers and the generated
  // tokens (the last generated token is never fed back, so it has no KV).
  EXPECT_EQ(m.peak_kv_blocks[0], (wrapped + generated - 1 + bs - 1) / bs);
  EXPECT_EQ(m.peak_kv_blocks[1], (registers + generated - 1 + marked_bs - 1) / marked_bs);
}

TEST_P(EngineEarnTest, PrefixCacheHitsGiveTheSameResult) {
  auto engine = make_engine();
  auto fx = fixture();
  auto first = engine->generate({greedy_requests(fx)[1]});
  auto second = engine->generate({greedy_requests(fx)[1]});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_GT(second->front().metrics.num_cached_tokens, 0);
  EXPECT_EQ(first->front().outputs[0].token_ids, second->front().outputs[0].token_ids);
  EXPECT_EQ(engine->stats().kv_usage, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineEarnTest,
                         ::testing::Values("tiny-earn", "tiny-earn-half", "tiny-earn-suffix"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace earnserve
