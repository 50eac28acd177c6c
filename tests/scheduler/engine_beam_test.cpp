// Beam search through the engine equals transformers' beam search (num_beams = K,
// num_return_sequences = K), constrained by the catalogue trie and unconstrained.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"
#include "test_paths.h"

namespace earnserve {
namespace {

using testing::source_path;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing fixture " << path;
  return nlohmann::json::parse(in);
}

std::unique_ptr<Engine> make_engine(const std::string& dir, int max_num_seqs = 64) {
  EngineOptions o;
  o.model_dir = dir;
  o.max_num_seqs = max_num_seqs;
  o.kv_cache_memory_bytes = 64ll << 20;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return std::move(e).value();
}

void check_cases(Engine& engine, const nlohmann::json& fixture,
                 std::shared_ptr<const Catalogue> catalogue) {
  std::vector<EngineRequest> requests;
  for (const auto& c : fixture["cases"]) {
    EngineRequest r;
    r.request_id = "case-" + std::to_string(requests.size());
    r.prompt_token_ids = c["prompt_token_ids"].get<std::vector<int32_t>>();
    r.params.use_beam_search = true;
    r.params.beam_width = c["num_beams"].get<int>();
    r.params.n = r.params.beam_width;
    r.params.length_penalty = c["length_penalty"].get<float>();
    r.params.max_tokens = c["max_new_tokens"].get<int>();
    if (c["constrained"].get<bool>()) r.catalogue = catalogue;
    requests.push_back(std::move(r));
  }
  // All cases at once: beam searches of different widths batched together.
  auto outputs = engine.generate(requests);
  ASSERT_TRUE(outputs.ok()) << outputs.status().to_string();
  size_t i = 0;
  for (const auto& c : fixture["cases"]) {
    const RequestOutput& out = (*outputs)[i++];
    auto sequences = c["sequences"].get<std::vector<std::vector<int32_t>>>();
    auto scores = c["scores"].get<std::vector<float>>();
    ASSERT_EQ(out.outputs.size(), sequences.size()) << "case " << i - 1;
    for (size_t k = 0; k < sequences.size(); ++k) {
      EXPECT_EQ(out.outputs[k].token_ids, sequences[k]) << "case " << i - 1 << " beam " << k;
      EXPECT_NEAR(out.outputs[k].score, scores[k], 1e-4) << "case " << i - 1 << " beam " << k;
    }
  }
}

TEST(EngineBeamTest, CatalogueConstrainedBeamSearchMatchesTransformers) {
  auto engine = make_engine(testing::tiny_rec_dir());
  auto spec = RecommendationSpec::load(testing::tiny_rec_dir(), engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  check_cases(*engine, read_json(source_path("tests/fixtures/beam/tiny-rec.json")),
              (*spec)->catalogue_ptr());
}

TEST(EngineBeamTest, UnconstrainedBeamSearchWithLengthPenaltyMatchesTransformers) {
  auto engine = make_engine(testing::tinystories_dir());
  check_cases(*engine, read_json(source_path("tests/fixtures/beam/tinystories.json")), nullptr);
}

TEST(EngineBeamTest, WideBeamsShareThePromptPages) {
  // 64 beams over a 150-token prompt: the prompt's full pages are held once, not per beam.
  auto engine = make_engine(testing::tiny_rec_dir(), 256);
  auto fixture = read_json(source_path("tests/fixtures/beam/tiny-rec.json"));
  auto spec = RecommendationSpec::load(testing::tiny_rec_dir(), engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec);
  EngineRequest r;
  r.request_id = "wide";
  r.prompt_token_ids = fixture["cases"][0]["prompt_token_ids"].get<std::vector<int32_t>>();
  r.params.use_beam_search = true;
  r.params.beam_width = 64;
  r.params.n = 64;
  r.params.max_tokens = 5;
  r.catalogue = (*spec)->catalogue_ptr();
  auto outputs = engine->generate({r});
  ASSERT_TRUE(outputs.ok());
  const RequestOutput& out = outputs->front();
  EXPECT_EQ(out.outputs.size(), 64u);
  const int bs = engine->options().block_size;
  const int prompt_blocks = (static_cast<int>(r.prompt_token_ids.size()) + bs - 1) / bs;
  ASSERT_FALSE(out.metrics.peak_kv_blocks.empty());
  // Each beam owns at most its partial prompt block (copied on write) and its generated tokens.
  EXPECT_LE(out.metrics.peak_kv_blocks[0], prompt_blocks + 64 * 2);
  EXPECT_LT(out.metrics.peak_kv_blocks[0], 64 * prompt_blocks / 4);
  // Every item is a real catalogue item, and the list has no duplicates.
  std::set<int64_t> seen;
  for (const SequenceOutput& o : out.outputs) {
    EXPECT_GE(o.item_index, 0);
    EXPECT_TRUE(seen.insert(o.item_index).second);
  }
}

}  // namespace
}  // namespace earnserve
