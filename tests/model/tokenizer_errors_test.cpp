// Bad tokenizer files give a Status whose message names the file and the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "model/tokenizer/tokenizer.h"

namespace earnserve {
namespace {

class TokenizerErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("tokenizer_errors_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  // A valid minimal byte-level tokenizer.json with `model` and `extra` spliced in.
  static std::string tokenizer_json(const std::string& model, const std::string& extra = "") {
    return R"({"version": "1.0", "added_tokens": [], )" + extra + R"("model": )" + model + "}";
  }

  std::filesystem::path dir_;
};

constexpr const char* kGoodModel =
    R"({"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";

void expect_error(const StatusOr<std::unique_ptr<Tokenizer>>& result, const std::string& path,
                  const std::string& problem) {
  ASSERT_FALSE(result.ok());
  const std::string& message = result.status().message();
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(problem), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "not one line: " << message;
}

TEST_F(TokenizerErrorsTest, AcceptsMinimalTokenizer) {
  std::string path = write("tokenizer.json", tokenizer_json(kGoodModel));
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::from_file(path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().to_string();
  EXPECT_EQ((*tokenizer)->encode("abba", false), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ((*tokenizer)->vocab_size(), 3);
}

TEST_F(TokenizerErrorsTest, MissingFile) {
  std::string path = (dir_ / "nope.json").string();
  expect_error(Tokenizer::from_file(path), path, "no such file");
  expect_error(Tokenizer::from_dir(dir_.string()), (dir_ / "tokenizer.json").string(),
               "no such file");
  expect_error(Tokenizer::from_dir((dir_ / "missing_dir").string()), "missing_dir",
               "no such directory");
}

TEST_F(TokenizerErrorsTest, InvalidJson) {
  std::string path = write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": )");
  expect_error(Tokenizer::from_file(path), path, "invalid JSON");
}

TEST_F(TokenizerErrorsTest, UnknownModelType) {
  std::string path = write("tokenizer.json", tokenizer_json(R"({"type": "Unigram", "vocab": []})"));
  expect_error(Tokenizer::from_file(path), path, "unsupported model type 'Unigram'");
}

TEST_F(TokenizerErrorsTest, UnknownComponentTypes) {
  std::string path =
      write("a.json", tokenizer_json(kGoodModel, R"("normalizer": {"type": "BertNormalizer"}, )"));
  expect_error(Tokenizer::from_file(path), path, "unsupported normalizer type 'BertNormalizer'");
  path =
      write("b.json", tokenizer_json(kGoodModel, R"("pre_tokenizer": {"type": "Whitespace"}, )"));
  expect_error(Tokenizer::from_file(path), path, "unsupported pre_tokenizer type 'Whitespace'");
  path = write("c.json", tokenizer_json(kGoodModel, R"("decoder": {"type": "WordPiece"}, )"));
  expect_error(Tokenizer::from_file(path), path, "unsupported decoder type 'WordPiece'");
  path = write("d.json", tokenizer_json(kGoodModel, R"("post_processor": {"type": "Foo"}, )"));
  expect_error(Tokenizer::from_file(path), path, "unsupported post_processor type 'Foo'");
}

TEST_F(TokenizerErrorsTest, BadModelContents) {
  std::string path = write(
      "a.json", tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]})"));
  expect_error(Tokenizer::from_file(path), path, "not in the vocabulary");
  path = write("b.json", tokenizer_json(R"({"type": "BPE", "vocab": {"a": 0}})"));
  expect_error(Tokenizer::from_file(path), path, "merges");
  path = write(
      "c.json",
      tokenizer_json(
          kGoodModel,
          R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}, )"));
  expect_error(Tokenizer::from_file(path), path, "bad regex");
  path = write("d.json", R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})");
  expect_error(Tokenizer::from_file(path), path, "vocab entry 'a'");
  path = write("e.json", "[1, 2]");
  expect_error(Tokenizer::from_file(path), path, "not a JSON object");
}

TEST_F(TokenizerErrorsTest, BadConfigNamesConfigFile) {
  write("tokenizer.json", tokenizer_json(kGoodModel));
  std::string config = write("tokenizer_config.json", R"({"bos_token": "<s>"})");
  expect_error(Tokenizer::from_dir(dir_.string()), config,
               "bos_token '<s>' is not in the vocabulary");
  write("tokenizer_config.json", "{not json");
  expect_error(Tokenizer::from_dir(dir_.string()), config, "invalid JSON");
}

}  // namespace
}  // namespace earnserve
