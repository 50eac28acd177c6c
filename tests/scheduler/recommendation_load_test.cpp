// RecommendationSpec::load on bad recommendation.json files: each is an error naming the file,
// never a crash (found while writing tests/fuzz/recommendation_fuzzer).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "model/tokenizer/tokenizer.h"
#include "scheduler/recommendation/recommendation.h"
#include "test_paths.h"

namespace earnserve {
namespace {

// A history_limit too large for an int was converted (undefined behaviour); it is an error naming
// the file, as are other values that are not a positive int.
TEST(RecommendationLoadTest, RejectsHistoryLimitsThatAreNotPositiveInts) {
  auto tokenizer = Tokenizer::from_dir(testing::tiny_rec_dir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "earnserve_recommendation_load_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "catalogue.json") << R"({"0": ["<a_47>", "<b_103>", "<c_234>", "<d_99>"]})";
  const std::string head = R"({"catalogue": "catalogue.json", "prompt_template": "{history}", )";
  for (const char* limit : {"1e300", "-1e300", "2.5", "0", "-3", "4294967296", "\"20\""}) {
    std::ofstream(dir / "recommendation.json") << head << R"("history_limit": )" << limit << "}";
    auto spec = RecommendationSpec::load(dir.string(), **tokenizer);
    ASSERT_FALSE(spec.ok()) << limit;
    EXPECT_NE(spec.status().message().find("recommendation.json: history_limit"), std::string::npos)
        << spec.status().message();
  }
  std::ofstream(dir / "recommendation.json") << head << R"("history_limit": 3})";
  auto spec = RecommendationSpec::load(dir.string(), **tokenizer);
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  EXPECT_EQ((*spec)->history_limit(), 3);
  std::filesystem::remove_all(dir);
}

// "item_format" says how each history item reads: identifiers and titles, in any order.
TEST(RecommendationLoadTest, ItemFormatPutsIdentifiersAndTitlesIntoThePrompt) {
  auto tokenizer = Tokenizer::from_dir(testing::tiny_rec_dir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "earnserve_recommendation_item_format_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "catalogue.json")
      << R"({"0": ["<a_47>", "<b_103>", "<c_234>", "<d_99>"], "1": ["<a_130>", "<b_66>"]})";
  std::ofstream(dir / "titles.tsv") << "0\tRose Water Toner\n1\tClay Mask\n";
  const std::string head = R"({"catalogue": "catalogue.json", "titles": "titles.tsv", )"
                           R"("prompt_template": "user: {history}", "item_separator": "; ", )";
  std::ofstream(dir / "recommendation.json") << head << R"("item_format": "{identifier} {title}"})";
  auto spec = RecommendationSpec::load(dir.string(), **tokenizer);
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  auto prompt = (*spec)->build_prompt({"0", "1"});
  ASSERT_TRUE(prompt.ok()) << prompt.status().to_string();
  EXPECT_EQ(*prompt, "user: <a_47><b_103><c_234><d_99> Rose Water Toner; <a_130><b_66> Clay Mask");

  std::ofstream(dir / "recommendation.json") << head << R"("item_format": "[no slot]"})";
  auto bad = RecommendationSpec::load(dir.string(), **tokenizer);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("item_format"), std::string::npos)
      << bad.status().message();
  std::filesystem::remove_all(dir);
}

// The catalogue and titles are files of the model directory: an absolute or empty path is an
// error naming recommendation.json and the field (the fuzzer found "/atalxgue.json" opened
// outside the directory).
TEST(RecommendationLoadTest, RejectsCatalogueAndTitlesPathsOutsideTheModelDirectory) {
  auto tokenizer = Tokenizer::from_dir(testing::tiny_rec_dir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / "earnserve_recommendation_paths_test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "catalogue.json") << R"({"0": ["<a_47>", "<b_103>", "<c_234>", "<d_99>"]})";
  const std::string absolute = (dir / "catalogue.json").string();
  for (const std::string& fields :
       {R"("catalogue": ")" + absolute + '"', std::string(R"("catalogue": "")"),
        std::string(R"("catalogue": "catalogue.json", "titles": "/etc/hostname")")}) {
    std::ofstream(dir / "recommendation.json")
        << "{" << fields << R"(, "prompt_template": "{history}"})";
    auto spec = RecommendationSpec::load(dir.string(), **tokenizer);
    ASSERT_FALSE(spec.ok()) << fields;
    EXPECT_NE(spec.status().message().find("recommendation.json: \""), std::string::npos)
        << spec.status().message();
    EXPECT_NE(spec.status().message().find("relative to the model directory"), std::string::npos)
        << spec.status().message();
  }
  // A relative path that climbs out (a draft sharing its target's catalogue) still loads.
  std::filesystem::create_directories(dir / "draft");
  std::ofstream(dir / "draft" / "recommendation.json")
      << R"({"catalogue": "../catalogue.json", "prompt_template": "{history}"})";
  auto draft = RecommendationSpec::load((dir / "draft").string(), **tokenizer);
  EXPECT_TRUE(draft.ok()) << draft.status().to_string();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace earnserve
