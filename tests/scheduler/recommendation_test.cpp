// Recommendation requests end to end on the stand-in model with the Beauty vocabulary: every
// recommended item is a real catalogue item, over the whole Beauty test set.
#include "scheduler/recommendation/recommendation.h"

#include <gtest/gtest.h>

#include "scheduler/engine.h"
#include "scheduler/recommendation/sequential_data.h"
#include "test_paths.h"

namespace earnserve {
namespace {

std::vector<std::vector<std::string>> beauty_test_histories() {
  std::vector<std::vector<std::string>> histories;
  for (const data::TestUser& u : data::test_users(testing::shared_path("datasets/beauty"))) {
    histories.push_back(u.history);
  }
  EXPECT_FALSE(histories.empty()) << "the Beauty data set must be at ../shared/datasets/beauty";
  return histories;
}

std::unique_ptr<Engine> make_engine() {
  EngineOptions o;
  o.model_dir = testing::tiny_rec_dir();
  o.max_num_seqs = 256;
  o.max_num_batched_tokens = 4096;
  o.kv_cache_memory_bytes = 64ll << 20;
  auto e = Engine::create(o);
  EXPECT_TRUE(e.ok()) << e.status().to_string();
  return std::move(e).value();
}

TEST(RecommendationTest, EveryItemOverTheBeautyTestSetIsInTheCatalogue) {
  auto engine = make_engine();
  auto spec = RecommendationSpec::load(testing::tiny_rec_dir(), engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec) << spec.status().to_string();
  const auto histories = beauty_test_histories();
  ASSERT_EQ(histories.size(), 3553u);  // the README's count of test users with targets
  std::vector<EngineRequest> requests;
  for (size_t i = 0; i < histories.size(); ++i) {
    RecommendationQuery q;
    q.history = histories[i];
    q.top_k = 10;
    q.exclude_history = true;
    auto r = (*spec)->make_request(q, engine->tokenizer(), "u" + std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    requests.push_back(std::move(r).value());
  }
  auto outputs = engine->generate(std::move(requests));
  ASSERT_TRUE(outputs.ok()) << outputs.status().to_string();
  int invalid = 0, total = 0, excluded_returned = 0;
  for (size_t i = 0; i < outputs->size(); ++i) {
    std::vector<RecommendedItem> items = (*spec)->items((*outputs)[i]);
    // Exactly top_k sequences came back and each reached an item.
    EXPECT_EQ(items.size(), (*outputs)[i].outputs.size());
    EXPECT_EQ(items.size(), 10u);
    for (const RecommendedItem& item : items) {
      ++total;
      int64_t index = (*spec)->catalogue().find_item(item.item_id);
      if (index < 0 || (*spec)->catalogue().item(index).identifier != item.identifier) ++invalid;
      for (const std::string& h : histories[i]) excluded_returned += h == item.item_id;
    }
  }
  EXPECT_EQ(total, 35530);
  EXPECT_EQ(invalid, 0);
  EXPECT_EQ(excluded_returned, 0);
}

TEST(RecommendationTest, BuildsTheLcRecPromptAndRejectsUnknownItems) {
  auto engine = make_engine();
  auto spec = RecommendationSpec::load(testing::tiny_rec_dir(), engine->tokenizer());
  ASSERT_TRUE(spec.ok() && *spec);
  auto prompt = (*spec)->build_prompt({"0", "1"});
  ASSERT_TRUE(prompt.ok());
  const std::string a = (*spec)->catalogue().item((*spec)->catalogue().find_item("0")).identifier;
  const std::string b = (*spec)->catalogue().item((*spec)->catalogue().find_item("1")).identifier;
  EXPECT_NE(prompt->find("interacted with items " + a + ", " + b + " in chronological order"),
            std::string::npos);
  EXPECT_EQ(
      (*spec)->catalogue().item((*spec)->catalogue().find_item("0")).title.rfind("Eucerin", 0), 0u);
  RecommendationQuery q;
  q.history = {"0", "no-such-item"};
  auto r = (*spec)->make_request(q, engine->tokenizer(), "x");
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no-such-item"), std::string::npos);
  q.history = {"0"};
  q.top_k = 5;
  q.beam_width = 3;
  EXPECT_FALSE((*spec)->make_request(q, engine->tokenizer(), "x").ok());
}

}  // namespace
}  // namespace earnserve
