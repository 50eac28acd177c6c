// Recommendation requests end to end on the stand-in model with the Beauty vocabulary: every
// recommended item is a real catalogue item, over the whole Beauty test set.
#include "scheduler/recommendation.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "scheduler/engine.h"
#include "test_paths.h"

namespace earnserve {
namespace {

// (history item keys, target keys) per test user, by the protocol of ../shared/datasets/README.md.
std::vector<std::vector<std::string>> beauty_test_histories() {
  auto read = [](const std::string& name) {
    std::ifstream in(testing::shared_path("datasets/beauty/" + name));
    EXPECT_TRUE(in.good()) << "missing " << name << ": the Beauty data set must be at ../shared";
    std::map<int, std::vector<int>> users;
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      int user;
      if (!(ls >> user)) continue;
      int item;
      while (ls >> item) users[user].push_back(item);
    }
    return users;
  };
  auto train = read("sequential_train.txt");
  auto valid = read("sequential_valid.txt");
  auto test = read("sequential_test.txt");
  std::vector<std::vector<std::string>> histories;
  for (auto& [user, targets] : test) {
    if (targets.empty()) continue;
    std::vector<int> h = train[user];
    h.insert(h.end(), valid[user].begin(), valid[user].end());
    if (h.size() > 20) h.erase(h.begin(), h.end() - 20);
    std::vector<std::string> keys;
    for (int i : h) keys.push_back(std::to_string(i - 1));
    histories.push_back(keys);
  }
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
  EXPECT_EQ((*spec)->catalogue().item((*spec)->catalogue().find_item("0")).title.rfind("Eucerin", 0),
            0u);
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
