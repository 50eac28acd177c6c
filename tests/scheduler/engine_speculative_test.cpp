// Speculative beam search (AtSpeed) in the engine: with strict verification the results are
// exactly the target's own beam search (same sequences in the same order, same scores), whatever
// the draft proposes: the target itself (every drafted step accepted), a perturbed copy of it
// (some accepted), a random model (almost none). Speculative requests batch with ordinary ones,
// survive chunked prefill, work on EARN targets, and leave no KV pages behind on either model.
// Relaxed sampling verification returns target-scored catalogue items reproducibly per seed,
// accepts every level with a self-draft, and with one beam samples as the target does.
//
// Drafts are written into the test's temporary directory from the committed fixtures: the same
// tokenizer and config, the target's weights perturbed or replaced by deterministic noise.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"
#include "test_paths.h"

namespace earnserve {
namespace {

namespace fs = std::filesystem;

std::string earn_dir() { return testing::source_path("tests/fixtures/models/tiny-earn"); }

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

enum class DraftKind {
  kPerturbed,  // target weights + noise of `scale` times each tensor's RMS
  kRandom,     // noise only, with each tensor's RMS
};

struct DraftRecipe {
  DraftKind kind = DraftKind::kPerturbed;
  double scale = 0.1;
  uint64_t seed = 1;
  bool strip_earn = false;  // a plain Llama draft of an EARN target
};

// A draft checkpoint directory, removed with this object.
struct DraftDir {
  std::string path;
  DraftDir() = default;
  explicit DraftDir(std::string p) : path(std::move(p)) {}
  DraftDir(const DraftDir&) = delete;
  DraftDir& operator=(const DraftDir&) = delete;
  ~DraftDir() {
    std::error_code ignored;
    if (!path.empty()) fs::remove_all(path, ignored);
  }
};

// Writes a draft checkpoint next to the test: the target's tokenizer and config, its F32
// safetensors with every tensor perturbed or replaced as the recipe says.
std::unique_ptr<DraftDir> make_draft(const std::string& target_dir, const std::string& name,
                                     const DraftRecipe& recipe) {
  // Per process: test runners may run the cases of this file concurrently.
  const fs::path dir = fs::path(::testing::TempDir()) /
                       ("earnserve-draft-" + name + "-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto out = std::make_unique<DraftDir>(dir.string());
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    if (fs::exists(fs::path(target_dir) / f)) {
      fs::copy_file(fs::path(target_dir) / f, dir / f, fs::copy_options::overwrite_existing);
    }
  }
  nlohmann::json config = nlohmann::json::parse(read_file(fs::path(target_dir) / "config.json"));
  if (recipe.strip_earn) config.erase("earn");
  write_file(dir / "config.json", config.dump(2));

  std::string st = read_file(fs::path(target_dir) / "model.safetensors");
  uint64_t header_len = 0;
  std::memcpy(&header_len, st.data(), 8);
  const nlohmann::json header = nlohmann::json::parse(st.substr(8, header_len));
  char* data = st.data() + 8 + header_len;
  uint64_t rng = recipe.seed;
  for (const auto& [tensor, info] : header.items()) {
    if (tensor == "__metadata__") continue;
    EXPECT_EQ(info["dtype"], "F32") << tensor;
    const size_t begin = info["data_offsets"][0].get<size_t>();
    const size_t end = info["data_offsets"][1].get<size_t>();
    float* w = reinterpret_cast<float*>(data + begin);
    const size_t n = (end - begin) / sizeof(float);
    double sum_sq = 0.0;
    for (size_t i = 0; i < n; ++i) sum_sq += static_cast<double>(w[i]) * w[i];
    const double rms = std::sqrt(sum_sq / std::max<size_t>(n, 1));
    for (size_t i = 0; i < n; ++i) {
      // Uniform in [-sqrt(3), sqrt(3)): unit variance.
      const double u =
          (static_cast<double>(splitmix64(rng) >> 11) * 0x1.0p-53 * 2.0 - 1.0) * std::sqrt(3.0);
      const double noise = u * rms;
      w[i] = static_cast<float>(recipe.kind == DraftKind::kRandom ? noise
                                                                  : w[i] + recipe.scale * noise);
    }
  }
  write_file(dir / "model.safetensors", st);
  return out;
}

std::unique_ptr<Engine> make_engine(const std::string& model_dir, const std::string& draft_dir,
                                    int max_num_batched_tokens = 2048,
                                    int64_t draft_kv_cache_memory_bytes = 16ll << 20) {
  EngineOptions o;
  o.model_dir = model_dir;
  o.draft_model_dir = draft_dir;
  o.kv_cache_memory_bytes = 32ll << 20;
  o.draft_kv_cache_memory_bytes = draft_kv_cache_memory_bytes;
  o.max_num_batched_tokens = max_num_batched_tokens;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return e.ok() ? std::move(e).value() : nullptr;
}

std::vector<std::vector<int32_t>> fixture_prompts() {
  std::ifstream in(testing::source_path("tests/fixtures/beam/tiny-rec.json"));
  EXPECT_TRUE(in.good());
  const nlohmann::json fixture = nlohmann::json::parse(in);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& c : fixture["cases"]) {
    auto p = c["prompt_token_ids"].get<std::vector<int32_t>>();
    if (std::find(prompts.begin(), prompts.end(), p) == prompts.end()) prompts.push_back(p);
  }
  EXPECT_GE(prompts.size(), 2u);
  return prompts;
}

EngineRequest beam_request(const std::string& id, std::vector<int32_t> prompt, int width,
                           int max_tokens, std::shared_ptr<const Catalogue> catalogue) {
  EngineRequest r;
  r.request_id = id;
  r.prompt_token_ids = std::move(prompt);
  r.params.use_beam_search = true;
  r.params.beam_width = width;
  r.params.n = width;
  r.params.max_tokens = max_tokens;
  r.catalogue = std::move(catalogue);
  return r;
}

EngineRequest speculative(EngineRequest r, int num_draft_beams, int gamma) {
  SpeculativeParams s;
  s.num_draft_beams = num_draft_beams;
  s.num_speculative_steps = gamma;
  r.params.speculative = s;
  return r;
}

// Same sequences in the same order, scores within 1e-4.
void expect_same_results(const RequestOutput& got, const RequestOutput& want) {
  ASSERT_TRUE(got.error.ok()) << got.request_id << ": " << got.error.to_string();
  ASSERT_EQ(got.outputs.size(), want.outputs.size()) << got.request_id;
  for (size_t k = 0; k < want.outputs.size(); ++k) {
    const SequenceOutput& g = got.outputs[k];
    const SequenceOutput& w = want.outputs[k];
    EXPECT_EQ(g.token_ids, w.token_ids) << got.request_id << " beam " << k;
    EXPECT_NEAR(g.score, w.score, 1e-4) << got.request_id << " beam " << k;
    EXPECT_NEAR(g.cumulative_logprob, w.cumulative_logprob, 1e-4) << got.request_id;
    EXPECT_EQ(g.item_index, w.item_index) << got.request_id << " beam " << k;
    EXPECT_EQ(g.finish_reason, w.finish_reason) << got.request_id << " beam " << k;
  }
}

void expect_no_pages_held(const Engine& engine) {
  EXPECT_FALSE(engine.has_unfinished());
  EXPECT_EQ(engine.stats().kv_usage, 0.0);
  ASSERT_NE(engine.drafter(), nullptr);
  EXPECT_EQ(engine.drafter()->num_sequences(), 0);
  EXPECT_EQ(engine.drafter()->kv_usage(), 0.0);
  EXPECT_EQ(engine.stats().draft_kv_usage, 0.0);  // what GET /metrics reports
}

// Runs `requests` speculatively on `engine` and without speculation on `plain`; every output
// must be the same.
std::vector<RequestOutput> run_and_compare(Engine& engine, Engine& plain,
                                           const std::vector<EngineRequest>& requests) {
  std::vector<EngineRequest> ordinary = requests;
  for (EngineRequest& r : ordinary) r.params.speculative.reset();
  auto want = plain.generate(ordinary);
  EXPECT_TRUE(want.ok()) << want.status().to_string();
  auto got = engine.generate(requests);
  EXPECT_TRUE(got.ok()) << got.status().to_string();
  if (!want.ok() || !got.ok()) return {};
  for (size_t i = 0; i < requests.size(); ++i) expect_same_results((*got)[i], (*want)[i]);
  expect_no_pages_held(engine);
  return std::move(got).value();
}

// Every round but the last drafted min(gamma, steps left - 1) levels and accepted them all (the
// prefill's step comes first, outside the rounds).
void expect_every_drafted_level_accepted(const SpeculativeStats& stats, int gamma, int max_tokens) {
  ASSERT_GE(stats.num_rounds, 2);
  int generated = 1;
  for (int r = 0; r + 1 < stats.num_rounds; ++r) {
    const int depth = std::min(gamma, max_tokens - generated - 1);
    EXPECT_EQ(stats.accepted_steps[r], depth) << "round " << r;
    generated += depth + 1;
  }
}

TEST(EngineSpeculativeTest, SelfDraftAcceptsEveryDraftedStep) {
  const std::string target = testing::tiny_rec_dir();
  auto engine = make_engine(target, target);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(engine && plain);
  auto spec = RecommendationSpec::load(target, engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  const auto prompts = fixture_prompts();
  const int gamma = 3;
  const int max_tokens = 12;
  std::vector<EngineRequest> requests = {
      speculative(beam_request("free", prompts[0], 5, max_tokens, nullptr), 10, gamma),
      speculative(beam_request("items", prompts[1], 5, 8, (*spec)->catalogue_ptr()), 10, gamma)};
  auto outs = run_and_compare(*engine, *plain, requests);
  ASSERT_EQ(outs.size(), 2u);

  // Unconstrained: rounds draft min(gamma, steps left - 1) levels and accept them all, applying
  // one more step from the deepest nodes' own logits; the prefill takes one target call.
  const SpeculativeStats& stats = outs[0].speculative.value();
  expect_every_drafted_level_accepted(stats, gamma, max_tokens);
  EXPECT_EQ(stats.num_target_calls, 1 + stats.num_rounds);
  EXPECT_GE(stats.num_draft_calls, stats.num_rounds);
  EXPECT_LT(stats.num_target_calls, max_tokens);
  const EngineStats es = engine->stats();
  EXPECT_GE(es.num_spec_rounds, stats.num_rounds);
  EXPECT_GE(es.num_spec_accepted_steps, stats.num_rounds);
  EXPECT_GT(es.num_draft_calls, 0);
  EXPECT_GT(es.num_target_calls, 0);
  EXPECT_FALSE(outs[0].outputs.empty());
  EXPECT_GE(outs[1].speculative->num_rounds, 1);
}

struct Combo {
  int width;
  int gamma;
  DraftKind kind;
};

class EngineSpeculativeComboTest : public ::testing::TestWithParam<Combo> {};

TEST_P(EngineSpeculativeComboTest, StrictVerificationGivesTheTargetsBeamSearch) {
  const Combo c = GetParam();
  const std::string target = testing::tiny_rec_dir();
  DraftRecipe recipe;
  recipe.kind = c.kind;
  recipe.scale = 0.01;  // close enough to the target that some drafted steps are accepted
  recipe.seed = 7;
  const auto draft =
      make_draft(target, c.kind == DraftKind::kRandom ? "rec-random" : "rec-perturbed", recipe);
  // A small token budget: prompts prefill in chunks, and beams' tokens wait for room.
  auto engine = make_engine(target, draft->path, 192);
  auto plain = make_engine(target, "", 192);
  ASSERT_TRUE(engine && plain);
  auto spec = RecommendationSpec::load(target, engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  const auto catalogue = (*spec)->catalogue_ptr();
  const auto prompts = fixture_prompts();
  const int n = 2 * c.width;
  std::vector<EngineRequest> requests = {
      speculative(beam_request("items-0", prompts[0], c.width, 6, catalogue), n, c.gamma),
      beam_request("plain-beam", prompts[1], 3, 6, catalogue),
      speculative(beam_request("free", prompts[1], c.width, 9, nullptr), n, c.gamma),
      speculative(beam_request("items-1", prompts[1], c.width, 6, catalogue), n, c.gamma)};
  // Length penalty and early stopping are the target's BeamSearch's business: replayed as is.
  requests[2].params.length_penalty = 0.7f;
  requests[3].params.early_stopping = true;
  EngineRequest greedy;
  greedy.request_id = "greedy";
  greedy.prompt_token_ids = prompts[0];
  greedy.params.temperature = 0.0f;
  greedy.params.max_tokens = 7;
  requests.push_back(greedy);
  requests.back().prompt_token_ids.resize(40);
  auto outs = run_and_compare(*engine, *plain, requests);
  ASSERT_EQ(outs.size(), requests.size());
  for (size_t i : {0u, 2u, 3u}) {
    ASSERT_TRUE(outs[i].speculative.has_value()) << i;
    EXPECT_GE(outs[i].speculative->num_rounds, 1) << i;
    EXPECT_EQ(outs[i].speculative->accepted_steps.size(),
              static_cast<size_t>(outs[i].speculative->num_rounds));
  }
  EXPECT_FALSE(outs[1].speculative.has_value());
  if (c.kind == DraftKind::kPerturbed) {
    // The unconstrained search takes fewer target calls than its 9 steps.
    const SpeculativeStats& free_stats = *outs[2].speculative;
    int accepted = 0;
    for (int a : free_stats.accepted_steps) accepted += a;
    EXPECT_GT(accepted, 0);
    EXPECT_LT(free_stats.num_target_calls, 9 + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Drafts, EngineSpeculativeComboTest,
    ::testing::Values(Combo{5, 2, DraftKind::kRandom}, Combo{5, 3, DraftKind::kPerturbed},
                      Combo{5, 4, DraftKind::kRandom}, Combo{10, 2, DraftKind::kPerturbed},
                      Combo{10, 3, DraftKind::kRandom}, Combo{10, 4, DraftKind::kPerturbed}),
    [](const ::testing::TestParamInfo<Combo>& info) {
      return "K" + std::to_string(info.param.width) + "Gamma" + std::to_string(info.param.gamma) +
             (info.param.kind == DraftKind::kRandom ? "Random" : "Perturbed");
    });

TEST(EngineSpeculativeTest, EarnTargetWithPlainAndEarnDrafts) {
  const std::string target = earn_dir();
  DraftRecipe plain_recipe;
  plain_recipe.strip_earn = true;
  plain_recipe.scale = 0.01;
  DraftRecipe earn_recipe;
  earn_recipe.scale = 0.01;
  earn_recipe.seed = 3;
  auto plain = make_engine(target, "", 128);
  ASSERT_TRUE(plain);
  for (const auto& [name, recipe] :
       {std::pair{"earn-stripped", plain_recipe}, std::pair{"earn-perturbed", earn_recipe}}) {
    SCOPED_TRACE(name);
    const auto draft = make_draft(target, name, recipe);
    auto engine = make_engine(target, draft->path, 128);
    ASSERT_TRUE(engine);
    auto spec = RecommendationSpec::load(target, engine->tokenizer());
    ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
    const auto prompts = fixture_prompts();
    std::vector<EngineRequest> requests = {
        speculative(beam_request("items", prompts[0], 5, 6, (*spec)->catalogue_ptr()), 10, 3),
        speculative(beam_request("free", prompts[1], 5, 8, nullptr), 10, 2),
        beam_request("plain-beam", prompts[1], 4, 6, (*spec)->catalogue_ptr())};
    auto outs = run_and_compare(*engine, *plain, requests);
    ASSERT_EQ(outs.size(), requests.size());
    EXPECT_GE(outs[0].speculative->num_rounds, 1);
  }
}

TEST(EngineSpeculativeTest, SelfDraftOfAnEarnTargetAcceptsEveryDraftedStep) {
  auto engine = make_engine(earn_dir(), earn_dir());
  auto plain = make_engine(earn_dir(), "");
  ASSERT_TRUE(engine && plain);
  const int max_tokens = 10;
  std::vector<EngineRequest> requests = {
      speculative(beam_request("free", fixture_prompts()[0], 5, max_tokens, nullptr), 10, 4)};
  auto outs = run_and_compare(*engine, *plain, requests);
  ASSERT_EQ(outs.size(), 1u);
  expect_every_drafted_level_accepted(outs[0].speculative.value(), 4, max_tokens);
}

TEST(EngineSpeculativeTest, DraftOutOfPagesStillGivesTheTargetsBeamSearch) {
  // Room for a handful of draft blocks only: drafting stops early or does not start, and rounds
  // fall back to the target's own steps.
  const std::string target = testing::tiny_rec_dir();
  // 14 blocks of 16 tokens, 2 layers, 2 x 16 dims.
  auto engine = make_engine(target, target, 2048, 14 * 8192);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(engine && plain);
  const auto prompts = fixture_prompts();
  std::vector<EngineRequest> requests = {
      speculative(beam_request("a", prompts[0], 5, 9, nullptr), 10, 3),
      speculative(beam_request("b", prompts[1], 5, 9, nullptr), 10, 3)};
  auto outs = run_and_compare(*engine, *plain, requests);
  ASSERT_EQ(outs.size(), 2u);
  // A self draft with room accepts every drafted level; here rounds fall back to single steps.
  for (const RequestOutput& out : outs) {
    int accepted = 0;
    for (int a : out.speculative->accepted_steps) accepted += a;
    EXPECT_LT(accepted, 3 * out.speculative->num_rounds) << out.request_id;
  }
}

TEST(EngineSpeculativeTest, PreemptedSpeculativeRequestsRestartAndGiveTheSameResult) {
  // A target KV pool too small for all requests at once: the newest are preempted (their draft
  // pages freed with them) and recomputed later.
  const std::string target = testing::tiny_rec_dir();
  EngineOptions o;
  o.model_dir = target;
  o.draft_model_dir = target;
  o.kv_cache_memory_bytes = 48 * 8192;
  o.draft_kv_cache_memory_bytes = 8ll << 20;
  auto created = Engine::create(o);
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  auto engine = std::move(created).value();
  auto plain = make_engine(target, "");
  ASSERT_TRUE(plain);
  const auto prompts = fixture_prompts();
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 4; ++i) {
    requests.push_back(
        speculative(beam_request("r" + std::to_string(i), prompts[i % 2], 5, 10, nullptr), 10, 3));
  }
  auto outs = run_and_compare(*engine, *plain, requests);
  ASSERT_EQ(outs.size(), requests.size());
  EXPECT_GT(engine->stats().num_preemptions, 0);
}

TEST(EngineSpeculativeTest, RejectsInvalidSpeculativeRequests) {
  const std::string target = testing::tiny_rec_dir();
  auto engine = make_engine(target, target);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(engine && plain);
  const auto prompt = fixture_prompts()[0];
  auto check = [&](Engine& e, EngineRequest r, StatusCode code, const std::string& words) {
    Status s = e.validate(r);
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.message().find(words), std::string::npos) << s.to_string();
  };
  const EngineRequest ok = speculative(beam_request("ok", prompt, 5, 6, nullptr), 10, 3);
  EXPECT_TRUE(engine->validate(ok).ok());
  check(*plain, ok, StatusCode::kInvalidArgument, "needs a draft model");
  EngineRequest r = ok;
  r.params.speculative->draft_model = "some-other-model";
  check(*engine, r, StatusCode::kInvalidArgument, "is not loaded");
  r.params.speculative->draft_model = "tiny-rec";
  EXPECT_TRUE(engine->validate(r).ok());
  r = ok;
  r.params.speculative->num_draft_beams = 4;
  check(*engine, r, StatusCode::kInvalidArgument, "num_draft_beams");
  r = ok;
  r.params.speculative->num_speculative_steps = 0;
  check(*engine, r, StatusCode::kInvalidArgument, "num_speculative_steps");
  r.params.speculative->num_speculative_steps = 9;
  check(*engine, r, StatusCode::kInvalidArgument, "num_speculative_steps");
  r = ok;
  r.params.use_beam_search = false;
  r.params.beam_width = 1;
  r.params.n = 1;
  check(*engine, r, StatusCode::kInvalidArgument, "requires beam search");
  r = ok;
  r.params.speculative->verification = SpeculativeParams::Verification::kRelaxed;
  EXPECT_TRUE(engine->validate(r).ok());
}

TEST(EngineSpeculativeTest, DraftWithAnotherVocabularyIsALoadError) {
  EngineOptions o;
  o.model_dir = testing::tiny_rec_dir();
  o.draft_model_dir = earn_dir();
  o.kv_cache_memory_bytes = 16ll << 20;
  auto e = Engine::create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("draft model " + earn_dir()), std::string::npos)
      << e.status().to_string();
  EXPECT_NE(e.status().message().find("tokenizer"), std::string::npos) << e.status().to_string();
  o.draft_model_dir = "/nonexistent/draft";
  e = Engine::create(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("/nonexistent/draft"), std::string::npos)
      << e.status().to_string();
}

TEST(EngineSpeculativeTest, AbortFreesTargetAndDraftPages) {
  const std::string target = testing::tiny_rec_dir();
  auto engine = make_engine(target, target);
  ASSERT_TRUE(engine);
  auto stream = engine->add_request(
      speculative(beam_request("a", fixture_prompts()[0], 5, 12, nullptr), 10, 2));
  ASSERT_TRUE(stream.ok());
  // Prefill, then a round: the draft holds the beams' pages.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(engine->step().ok());
  EXPECT_GT(engine->drafter()->num_sequences(), 0);
  EXPECT_GT(engine->stats().draft_kv_usage, 0.0);
  engine->abort_request("a");
  expect_no_pages_held(*engine);
}

// --- Relaxed sampling verification: a sample, not the target's beam search. ---

EngineRequest relaxed(EngineRequest r, int num_draft_beams, int gamma, uint64_t seed) {
  r = speculative(std::move(r), num_draft_beams, gamma);
  r.params.speculative->verification = SpeculativeParams::Verification::kRelaxed;
  r.params.seed = seed;
  return r;
}

// `o` holds `width` distinct catalogue items, best first, each scored with the target's
// cumulative log-probability: that of a width-1 search of `plain` (no draft) over a catalogue of
// that one item.
void expect_target_scored_items(Engine& plain, const EngineRequest& request, const RequestOutput& o,
                                const Catalogue& catalogue, int width) {
  ASSERT_TRUE(o.error.ok()) << o.request_id << ": " << o.error.to_string();
  ASSERT_EQ(o.outputs.size(), static_cast<size_t>(width)) << o.request_id;
  std::set<int64_t> items;
  for (const SequenceOutput& so : o.outputs) {
    ASSERT_GE(so.item_index, 0) << o.request_id;
    items.insert(so.item_index);
    auto one = Catalogue::from_items({catalogue.item(static_cast<size_t>(so.item_index))});
    ASSERT_TRUE(one.ok());
    auto want = plain.generate(
        {beam_request("one", request.prompt_token_ids, 1, request.params.max_tokens, *one)});
    ASSERT_TRUE(want.ok());
    EXPECT_EQ((*want)[0].outputs.at(0).token_ids, so.token_ids) << o.request_id;
    EXPECT_NEAR((*want)[0].outputs.at(0).cumulative_logprob, so.cumulative_logprob, 1e-4)
        << o.request_id;
  }
  EXPECT_EQ(items.size(), static_cast<size_t>(width)) << o.request_id << ": repeated items";
  for (size_t k = 1; k < o.outputs.size(); ++k) {
    EXPECT_GE(o.outputs[k - 1].score, o.outputs[k].score) << o.request_id;
  }
}

TEST(EngineRelaxedTest, SelfDraftWithOneBeamAcceptsEveryDraftedLevel) {
  // K = N = 1 and q = p: the one draw per level always passes u < p / q, so each round accepts
  // every drafted level and samples one more from the deepest node's own logits.
  const std::string target = testing::tiny_rec_dir();
  auto engine = make_engine(target, target);
  ASSERT_TRUE(engine);
  const int gamma = 3;
  const int max_tokens = 12;
  EngineRequest r =
      relaxed(beam_request("free", fixture_prompts()[0], 1, max_tokens, nullptr), 1, gamma, 11);
  r.params.ignore_eos = true;  // all 12 steps
  auto outs = engine->generate({r});
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  expect_every_drafted_level_accepted((*outs)[0].speculative.value(), gamma, max_tokens);
  EXPECT_EQ((*outs)[0].outputs.at(0).token_ids.size(), static_cast<size_t>(max_tokens));
  expect_no_pages_held(*engine);
}

TEST(EngineRelaxedTest, ResultsAreCatalogueItemsScoredByTheTargetAndFollowTheSeed) {
  const std::string target = testing::tiny_rec_dir();
  DraftRecipe recipe;
  recipe.scale = 0.3;
  const auto draft = make_draft(target, "rec-relaxed", recipe);
  auto engine = make_engine(target, draft->path, 192);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(engine && plain);
  auto spec = RecommendationSpec::load(target, engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  const auto catalogue = (*spec)->catalogue_ptr();
  const auto prompts = fixture_prompts();
  const int width = 5;
  const int max_tokens = catalogue->max_depth() + 1;
  std::vector<EngineRequest> requests;
  for (uint64_t seed = 0; seed < 6; ++seed) {
    requests.push_back(relaxed(
        beam_request("r" + std::to_string(seed), prompts[seed % 2], width, max_tokens, catalogue),
        10, 2 + static_cast<int>(seed % 3), seed));
  }
  // Mixed in: strict speculative and ordinary beam searches of the same prompt.
  requests.push_back(
      speculative(beam_request("strict", prompts[0], width, max_tokens, catalogue), 10, 3));
  requests.push_back(beam_request("plain", prompts[0], width, max_tokens, catalogue));
  auto outs = engine->generate(requests);
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  expect_no_pages_held(*engine);
  expect_same_results((*outs)[6], (*outs)[7]);

  std::set<std::vector<int32_t>> distinct_firsts;
  for (size_t i = 0; i < 6; ++i) {
    const RequestOutput& o = (*outs)[i];
    ASSERT_TRUE(o.error.ok()) << o.error.to_string();
    ASSERT_EQ(o.outputs.size(), static_cast<size_t>(width)) << o.request_id;
    ASSERT_TRUE(o.speculative.has_value());
    EXPECT_GE(o.speculative->num_rounds, 1);
    expect_target_scored_items(*plain, requests[i], o, *catalogue, width);
    distinct_firsts.insert(o.outputs[0].token_ids);
  }
  // The same seeds and the same batch on a fresh engine give the same samples (a round's depth
  // depends on the step's token budget, so a sample also depends on what it was batched with);
  // different seeds differ somewhere.
  auto fresh = make_engine(target, draft->path, 192);
  ASSERT_TRUE(fresh);
  auto again = fresh->generate(requests);
  ASSERT_TRUE(again.ok());
  for (size_t i = 0; i < 6; ++i) expect_same_results((*again)[i], (*outs)[i]);
  std::set<std::vector<std::vector<int32_t>>> samples;
  for (size_t i = 0; i < 6; i += 2) {
    std::vector<std::vector<int32_t>> seqs;
    for (const SequenceOutput& so : (*outs)[i].outputs) seqs.push_back(so.token_ids);
    samples.insert(seqs);
  }
  EXPECT_GT(samples.size(), 1u) << "three seeds of one prompt gave the same sample";
}

// With one beam (K = N = 1) relaxed verification is speculative sampling: the sampled item
// follows the target's catalogue-constrained distribution whatever the draft. Compared with the
// engine's ordinary sampling (temperature 1, same constraint) by a two-sample chi-square test.
TEST(EngineRelaxedTest, OneBeamSamplesItemsAsTheTargetDoes) {
  const std::string target = testing::tiny_rec_dir();
  DraftRecipe recipe;
  recipe.kind = DraftKind::kRandom;
  const auto random_draft = make_draft(target, "rec-relaxed-random", recipe);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(plain);
  auto spec = RecommendationSpec::load(target, plain->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec);
  const auto& full = *(*spec)->catalogue_ptr();
  // A small catalogue with shared prefixes: items whose first token is one of two.
  std::vector<CatalogueItem> items;
  std::set<int32_t> firsts;
  for (size_t i = 0; i < full.num_items() && items.size() < 8; ++i) {
    const CatalogueItem& it = full.item(i);
    if (firsts.size() < 2) firsts.insert(it.token_ids[0]);
    if (firsts.count(it.token_ids[0])) items.push_back(it);
  }
  ASSERT_GE(items.size(), 4u);
  auto small = Catalogue::from_items(items);
  ASSERT_TRUE(small.ok());
  const int max_tokens = (*small)->max_depth() + 1;
  const auto prompt = fixture_prompts()[0];
  constexpr int kSamples = 1500;

  auto frequencies = [&](Engine& engine, bool speculate) {
    std::vector<EngineRequest> requests;
    for (int i = 0; i < kSamples; ++i) {
      EngineRequest r;
      if (speculate) {
        r = relaxed(beam_request("s", prompt, 1, max_tokens, *small), 1, 3,
                    static_cast<uint64_t>(i));
      } else {
        r = beam_request("s", prompt, 1, max_tokens, *small);
        r.params.use_beam_search = false;
        r.params.seed = static_cast<uint64_t>(i) + 100000;
      }
      r.request_id = "s" + std::to_string(i);
      requests.push_back(std::move(r));
    }
    std::map<std::vector<int32_t>, int> counts;
    auto outs = engine.generate(requests);
    EXPECT_TRUE(outs.ok()) << outs.status().to_string();
    if (!outs.ok()) return counts;
    for (const RequestOutput& o : *outs) ++counts[o.outputs.at(0).token_ids];
    return counts;
  };
  const auto want = frequencies(*plain, false);
  for (const std::string& draft : {target, random_draft->path}) {
    auto engine = make_engine(target, draft);
    ASSERT_TRUE(engine);
    const auto got = frequencies(*engine, true);
    std::set<std::vector<int32_t>> keys;
    for (const auto& [k, v] : want) keys.insert(k);
    for (const auto& [k, v] : got) keys.insert(k);
    // Two equal-size samples: chi2 = sum (a - b)^2 / (a + b), df = categories - 1.
    double chi2 = 0.0;
    for (const auto& k : keys) {
      const double a = want.count(k) ? want.at(k) : 0;
      const double b = got.count(k) ? got.at(k) : 0;
      chi2 += (a - b) * (a - b) / (a + b);
    }
    const int df = static_cast<int>(keys.size()) - 1;
    // Far above the 0.999 quantile for df <= 8 (26.1) only when the distributions differ.
    EXPECT_LT(chi2, 30.0) << "draft " << draft << ", df " << df;
    EXPECT_GE(df, 2) << "too few distinct items sampled to test anything";
    expect_no_pages_held(*engine);
  }
}

TEST(EngineRelaxedTest, DraftOutOfPagesStillSamplesTargetScoredItems) {
  // Room for a handful of draft blocks only: rounds draft little or nothing, and a round without
  // a tree takes one relaxed level from the target's p alone.
  const std::string target = testing::tiny_rec_dir();
  // 14 blocks of 16 tokens, 2 layers, 2 x 16 dims.
  auto engine = make_engine(target, target, 2048, 14 * 8192);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(engine && plain);
  auto spec = RecommendationSpec::load(target, engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  const auto catalogue = (*spec)->catalogue_ptr();
  const auto prompts = fixture_prompts();
  const int width = 5;
  const int max_tokens = catalogue->max_depth() + 1;
  std::vector<EngineRequest> requests;
  for (uint64_t seed = 0; seed < 3; ++seed) {
    requests.push_back(relaxed(
        beam_request("r" + std::to_string(seed), prompts[seed % 2], width, max_tokens, catalogue),
        10, 3, seed));
  }
  auto outs = engine->generate(requests);
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  expect_no_pages_held(*engine);
  for (size_t i = 0; i < requests.size(); ++i) {
    expect_target_scored_items(*plain, requests[i], (*outs)[i], *catalogue, width);
  }
}

TEST(EngineRelaxedTest, AbortFreesTargetAndDraftPages) {
  const std::string target = testing::tiny_rec_dir();
  auto engine = make_engine(target, target);
  ASSERT_TRUE(engine);
  auto stream = engine->add_request(
      relaxed(beam_request("a", fixture_prompts()[0], 5, 12, nullptr), 10, 2, 7));
  ASSERT_TRUE(stream.ok());
  // Prefill, then a round: the draft holds the sampled beams' pages.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(engine->step().ok());
  EXPECT_GT(engine->drafter()->num_sequences(), 0);
  EXPECT_GT(engine->stats().draft_kv_usage, 0.0);
  engine->abort_request("a");
  expect_no_pages_held(*engine);
  // The engine goes on: a later relaxed request runs to its end and frees its pages too.
  auto outs =
      engine->generate({relaxed(beam_request("b", fixture_prompts()[1], 3, 8, nullptr), 6, 3, 8)});
  ASSERT_TRUE(outs.ok()) << outs.status().to_string();
  EXPECT_EQ((*outs)[0].outputs.size(), 3u);
  expect_no_pages_held(*engine);
}

}  // namespace
}  // namespace earnserve

namespace earnserve {
namespace {

// Policy auto: whatever the cost model decides step by step (trees of any shape or plain steps,
// mixed in one search), strict results are the target's beam search, and every target call after
// the prefill is either a round or a plain step with its reason.
TEST(EngineSpeculativeTest, PolicyAutoGivesTheTargetsBeamSearchAndCountsEveryStep) {
  const std::string target = testing::tiny_rec_dir();
  DraftRecipe recipe;
  recipe.scale = 0.01;
  recipe.seed = 11;
  const auto draft = make_draft(target, "rec-auto", recipe);
  auto engine = make_engine(target, draft->path);
  auto plain = make_engine(target, "");
  ASSERT_TRUE(engine && plain);
  // Start-up calibration timed both models.
  EXPECT_GT(engine->speculation_calibration().num_forwards, 2);
  EXPECT_GT(engine->speculation_calibration().max_rows, 0);
  EXPECT_FALSE(engine->speculative()->target_costs().empty());
  EXPECT_FALSE(engine->drafter()->step_costs().empty());
  auto spec = RecommendationSpec::load(target, engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  const auto prompts = fixture_prompts();
  std::vector<EngineRequest> requests;
  for (int i = 0; i < 6; ++i) {
    requests.push_back(speculative(beam_request("auto-" + std::to_string(i), prompts[i % 2], 4, 7,
                                                i % 3 ? (*spec)->catalogue_ptr() : nullptr),
                                   16, 3));
    requests.back().params.speculative->policy = SpeculativeParams::Policy::kAuto;
  }
  // The same prompts twice over: the policy's tables have measurements the second time.
  for (int pass = 0; pass < 2; ++pass) {
    auto outs = run_and_compare(*engine, *plain, requests);
    ASSERT_EQ(outs.size(), requests.size());
    for (const RequestOutput& o : outs) {
      ASSERT_TRUE(o.speculative.has_value());
      const SpeculativeStats& s = *o.speculative;
      EXPECT_EQ(s.num_target_calls,
                1 + s.num_rounds + s.num_plain_steps_cost + s.num_plain_steps_no_room)
          << o.request_id;
      EXPECT_EQ(s.trees.size(), static_cast<size_t>(s.num_rounds));
      for (const auto& t : s.trees) {
        EXPECT_GE(t[0], 4);   // N from K up
        EXPECT_LE(t[0], 16);  // to the request's N
        EXPECT_LE(t[1], 3);
      }
    }
  }
  const EngineStats es = engine->stats();
  EXPECT_GT(es.num_spec_plain_steps_cost + es.num_spec_plain_steps_no_room, 0);
  // The time spent deciding was measured (spec_bench reports it as a share of the run).
  EXPECT_GT(engine->speculative()->planning_seconds(), 0.0);
}

}  // namespace
}  // namespace earnserve
