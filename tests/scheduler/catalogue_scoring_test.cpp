// Beam search that scores over the catalogue (ScoreOver::kCatalogue): each step's log-probabilities
// are renormalised over the tokens the item trie allows a beam, and steps whose rows all score so
// compute logits only for the union of those tokens (lm_head rows gathered). The reference runs
// the model over the whole vocabulary (FixedSlotRunner, one prefill per live beam and step),
// renormalises over the allowed tokens itself and feeds BeamSearch, the decision logic that
// tests/scheduler/engine_beam_test.cpp checks against transformers.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "model/fixed_slot_runner.h"
#include "model/registry.h"
#include "scheduler/beam_search.h"
#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"
#include "test_paths.h"

namespace earnserve {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing fixture " << path;
  return nlohmann::json::parse(in);
}

std::unique_ptr<Engine> make_engine(const std::string& dir, bool skip_forced_tokens = true) {
  EngineOptions o;
  o.model_dir = dir;
  o.skip_forced_tokens = skip_forced_tokens;
  o.max_num_seqs = 128;
  o.kv_cache_memory_bytes = 64ll << 20;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return std::move(e).value();
}

// The catalogue-renormalised beam search, computed the slow, obvious way.
std::vector<BeamHypothesis> reference_beams(CausalLM& model, const CatalogueConstraint& constraint,
                                            const std::vector<int32_t>& prompt, int width,
                                            int max_tokens, std::vector<int32_t> stop_tokens) {
  BeamSearchOptions o;
  o.width = width;
  o.max_tokens = max_tokens;
  o.stop_tokens = std::move(stop_tokens);
  BeamSearch search(o);
  FixedSlotRunner runner(model, 1, static_cast<int>(prompt.size()) + max_tokens + 1);
  const float kNegInf = -std::numeric_limits<float>::infinity();
  while (!search.done()) {
    const int live = search.num_live();
    std::vector<std::vector<float>> logprobs(live);
    std::vector<std::vector<int32_t>> allowed(live);
    std::vector<BeamStepInput> inputs(live);
    for (int b = 0; b < live; ++b) {
      std::vector<int32_t> tokens = prompt;
      const std::vector<int32_t>& generated = search.live_tokens(b);
      tokens.insert(tokens.end(), generated.begin(), generated.end());
      runner.reset(0);
      StatusOr<std::vector<float>> logits = runner.prefill(0, tokens);
      EXPECT_TRUE(logits.ok()) << logits.status().to_string();
      const int32_t node = constraint.catalogue().walk(generated);
      constraint.allowed_tokens(node, allowed[b]);
      float max_logit = kNegInf;
      for (int32_t t : allowed[b]) max_logit = std::max(max_logit, (*logits)[t]);
      double sum = 0;
      for (int32_t t : allowed[b]) sum += std::exp(static_cast<double>((*logits)[t] - max_logit));
      logprobs[b].assign(logits->size(), kNegInf);
      for (int32_t t : allowed[b]) {
        logprobs[b][t] = (*logits)[t] - max_logit - static_cast<float>(std::log(sum));
      }
      inputs[b] = BeamStepInput{logprobs[b], allowed[b], true, {}};
    }
    search.step(inputs);
  }
  return search.finished();
}

class CatalogueScoringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    engine_ = make_engine(testing::tiny_rec_dir());
    auto spec = RecommendationSpec::load(testing::tiny_rec_dir(), engine_->tokenizer());
    ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
    catalogue_ = (*spec)->catalogue_ptr();
    fixture_ = read_json(testing::source_path("tests/fixtures/beam/tiny-rec.json"));
    auto model = load_causal_lm(testing::tiny_rec_dir(), LoadOptions{});
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    model_ = std::move(model).value();
    for (int64_t id : engine_->model_config().eos_token_ids) {
      eos_.push_back(static_cast<int32_t>(id));
    }
    ASSERT_FALSE(eos_.empty());
  }

  EngineRequest request(const nlohmann::json& c, int width, ScoreOver score_over) const {
    EngineRequest r;
    r.request_id = "case-" + std::to_string(next_id_++);
    r.prompt_token_ids = c["prompt_token_ids"].get<std::vector<int32_t>>();
    r.params.use_beam_search = true;
    r.params.beam_width = width;
    r.params.n = width;
    r.params.max_tokens = catalogue_->max_depth() + 1;
    r.catalogue = catalogue_;
    r.score_over = score_over;
    return r;
  }

  void expect_matches_reference(const EngineRequest& r, const RequestOutput& out) {
    CatalogueConstraint constraint(catalogue_, {}, eos_.front());
    std::vector<BeamHypothesis> ref = reference_beams(
        *model_, constraint, r.prompt_token_ids, r.params.beam_width, r.params.max_tokens, eos_);
    ASSERT_EQ(out.outputs.size(), ref.size()) << r.request_id;
    double probability = 0;
    for (size_t k = 0; k < ref.size(); ++k) {
      EXPECT_EQ(out.outputs[k].token_ids, ref[k].tokens) << r.request_id << " beam " << k;
      EXPECT_NEAR(out.outputs[k].score, ref[k].score, 1e-4) << r.request_id << " beam " << k;
      EXPECT_GE(out.outputs[k].item_index, 0) << r.request_id << " beam " << k;
      probability += std::exp(out.outputs[k].cumulative_logprob);
    }
    // Probabilities among the catalogue's items: the returned ones sum to at most 1.
    EXPECT_LE(probability, 1.0 + 1e-4) << r.request_id;
  }

  std::unique_ptr<Engine> engine_;
  std::shared_ptr<const Catalogue> catalogue_;
  nlohmann::json fixture_;
  std::unique_ptr<CausalLM> model_;
  std::vector<int32_t> eos_;
  mutable int next_id_ = 0;
};

TEST_F(CatalogueScoringTest, BeamsEqualAReferenceThatRenormalisesOverCatalogueTokens) {
  // Every request scores over the catalogue: each step gathers only the allowed tokens' rows.
  std::vector<EngineRequest> requests;
  for (const auto& c : fixture_["cases"]) {
    if (c["num_beams"].get<int>() != 5) continue;  // each prompt once
    for (int width : {1, 5, 10}) requests.push_back(request(c, width, ScoreOver::kCatalogue));
  }
  ASSERT_GE(requests.size(), 3u);
  auto outs = engine_->generate(requests);
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  for (size_t i = 0; i < requests.size(); ++i) expect_matches_reference(requests[i], (*outs)[i]);
  EXPECT_EQ(engine_->stats().kv_usage, 0.0);
}

TEST_F(CatalogueScoringTest, BatchedWithVocabularyRequestsBothKeepTheirOwnScores) {
  // Mixed steps compute the whole vocabulary; catalogue requests still renormalise, vocabulary
  // requests still get transformers' scores (the fixture's).
  std::vector<EngineRequest> requests;
  for (const auto& c : fixture_["cases"]) {
    if (!c["constrained"].get<bool>()) continue;
    const int width = c["num_beams"].get<int>();
    requests.push_back(request(c, width, ScoreOver::kCatalogue));
    EngineRequest v = request(c, width, ScoreOver::kVocabulary);
    v.params.length_penalty = c["length_penalty"].get<float>();
    v.params.max_tokens = c["max_new_tokens"].get<int>();
    requests.push_back(std::move(v));
  }
  ASSERT_FALSE(requests.empty());
  auto outs = engine_->generate(requests);
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  size_t i = 0;
  bool some_score_differs = false;
  for (const auto& c : fixture_["cases"]) {
    if (!c["constrained"].get<bool>()) continue;
    expect_matches_reference(requests[i], (*outs)[i]);
    const RequestOutput& vocab = (*outs)[i + 1];
    auto sequences = c["sequences"].get<std::vector<std::vector<int32_t>>>();
    auto scores = c["scores"].get<std::vector<float>>();
    ASSERT_EQ(vocab.outputs.size(), sequences.size());
    for (size_t k = 0; k < sequences.size(); ++k) {
      EXPECT_EQ(vocab.outputs[k].token_ids, sequences[k]) << "case " << i << " beam " << k;
      EXPECT_NEAR(vocab.outputs[k].score, scores[k], 1e-4) << "case " << i << " beam " << k;
    }
    // Renormalising raises every item's log-probability (the vocabulary's mass off the trie
    // goes away), so the two scorings cannot agree.
    some_score_differs =
        some_score_differs || (*outs)[i].outputs[0].score > vocab.outputs[0].score + 1e-3f;
    i += 2;
  }
  EXPECT_TRUE(some_score_differs);
}

TEST_F(CatalogueScoringTest, ForcedTokensTakenWithoutAForwardGiveTheSameBeams) {
  // Beams whose remaining identifier is forced skip their rows (and the last step, where only the
  // end-of-item token is left, runs no forward at all); an engine that runs every row must give
  // the same items with the same scores, and it must have computed more.
  std::vector<EngineRequest> requests;
  for (const auto& c : fixture_["cases"]) {
    if (c["num_beams"].get<int>() != 5) continue;
    for (int width : {1, 5, 10, 40}) requests.push_back(request(c, width, ScoreOver::kCatalogue));
  }
  std::unique_ptr<Engine> computing = make_engine(testing::tiny_rec_dir(), false);
  auto skipped = engine_->generate(requests);
  auto computed = computing->generate(requests);
  ASSERT_TRUE(skipped.ok() && computed.ok());
  for (size_t i = 0; i < requests.size(); ++i) {
    const RequestOutput& a = (*skipped)[i];
    const RequestOutput& b = (*computed)[i];
    ASSERT_EQ(a.outputs.size(), b.outputs.size()) << requests[i].request_id;
    for (size_t k = 0; k < a.outputs.size(); ++k) {
      EXPECT_EQ(a.outputs[k].token_ids, b.outputs[k].token_ids) << requests[i].request_id;
      // The rows that do run meet other batches (other rows, another union of allowed tokens
      // for the lm_head), so their logits may differ in the last bits.
      EXPECT_NEAR(a.outputs[k].score, b.outputs[k].score, 1e-5) << requests[i].request_id;
      EXPECT_NEAR(a.outputs[k].cumulative_logprob, b.outputs[k].cumulative_logprob, 1e-5);
      EXPECT_EQ(a.outputs[k].item_index, b.outputs[k].item_index);
    }
  }
  const EngineStats s = engine_->stats();
  const EngineStats c = computing->stats();
  EXPECT_GT(s.num_forced_tokens, 0);
  EXPECT_EQ(c.num_forced_tokens, 0);
  EXPECT_EQ(s.num_generation_tokens, c.num_generation_tokens);
  EXPECT_LT(s.num_steps, c.num_steps);  // the end-of-item steps ran no forward
  EXPECT_EQ(s.kv_usage, 0.0);           // no page left behind by beams that stopped computing
  EXPECT_EQ(c.kv_usage, 0.0);
}

TEST_F(CatalogueScoringTest, VocabularyScoresNeverSkipForcedTokens) {
  // Over the vocabulary a forced token still has a probability below 1: every row runs.
  std::vector<EngineRequest> requests;
  for (const auto& c : fixture_["cases"]) {
    if (c["num_beams"].get<int>() == 5) requests.push_back(request(c, 5, ScoreOver::kVocabulary));
  }
  ASSERT_TRUE(engine_->generate(requests).ok());
  EXPECT_EQ(engine_->stats().num_forced_tokens, 0);
}

TEST_F(CatalogueScoringTest, NeedsACatalogueAndPlainBeamSearch) {
  EngineRequest no_catalogue = request(fixture_["cases"][0], 5, ScoreOver::kCatalogue);
  no_catalogue.catalogue = nullptr;
  Status s = engine_->validate(no_catalogue);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("score_over"), std::string::npos) << s.message();
  EngineRequest sampling = request(fixture_["cases"][0], 1, ScoreOver::kCatalogue);
  sampling.params.use_beam_search = false;
  EXPECT_EQ(engine_->validate(sampling).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(engine_->validate(request(fixture_["cases"][0], 5, ScoreOver::kCatalogue)).ok());
}

TEST(ScoreOverTest, ParsesItsTwoNames) {
  EXPECT_EQ(parse_score_over("vocabulary"), ScoreOver::kVocabulary);
  EXPECT_EQ(parse_score_over("catalogue"), ScoreOver::kCatalogue);
  EXPECT_FALSE(parse_score_over("catalog").has_value());
  EXPECT_STREQ(score_over_name(ScoreOver::kCatalogue), "catalogue");
}

}  // namespace
}  // namespace earnserve
