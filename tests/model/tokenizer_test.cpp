// Tokenizer against references: llama.cpp's Qwen2 vectors and the Hugging Face tokenizers
// fixtures of tools/make_tokenizer_fixtures.py, for qwen3, llama3 and tinystories.
#include "model/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/model/tokenizer_test_util.h"

namespace earnserve {
namespace {

using nlohmann::json;
using testing_util::load_fixture;
using testing_util::load_tokenizer;
using testing_util::read_text_file;
using testing_util::shared_path;

std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  int32_t id = 0;
  while (in >> id) ids.push_back(id);
  return ids;
}

TEST(TokenizerTest, MatchesAllQwen2VectorsFromLlamaCpp) {
  const std::string inp_path = shared_path("tokenizers/vectors/qwen2.inp");
  const std::string out_path = shared_path("tokenizers/vectors/qwen2.out");
  const std::string inp = read_text_file(inp_path);
  const std::string out = read_text_file(out_path);
  ASSERT_FALSE(inp.empty()) << "missing test vectors " << inp_path;
  ASSERT_FALSE(out.empty()) << "missing test vectors " << out_path;

  // Every input is followed by the marker line; the piece after the last marker is empty.
  const std::string marker = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  for (size_t next = inp.find(marker); next != std::string::npos; next = inp.find(marker, pos)) {
    inputs.push_back(inp.substr(pos, next - pos));
    pos = next + marker.size();
  }
  ASSERT_EQ(pos, inp.size()) << "text after the last marker in " << inp_path;
  std::vector<std::string> expected;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) expected.push_back(line);
  ASSERT_EQ(inputs.size(), 46u);
  ASSERT_EQ(expected.size(), inputs.size());

  const Tokenizer* tokenizer = load_tokenizer("qwen3");
  ASSERT_NE(tokenizer, nullptr);
  for (size_t i = 0; i < inputs.size(); ++i) {
    EXPECT_EQ(tokenizer->encode(inputs[i], false), parse_ids(expected[i]))
        << "vector " << i << ": '" << inputs[i] << "'";
  }
}

TEST(TokenizerTest, ReadsSpecialTokensAndTemplateFromConfig) {
  const Tokenizer* qwen = load_tokenizer("qwen3");
  const Tokenizer* llama = load_tokenizer("llama3");
  const Tokenizer* tiny = load_tokenizer("tinystories");
  ASSERT_TRUE(qwen && llama && tiny);
  EXPECT_EQ(qwen->bos_token_id(), std::nullopt);
  EXPECT_EQ(qwen->eos_token_id(), qwen->token_to_id("<|im_end|>"));
  EXPECT_EQ(qwen->eos_token_id(), 151645);
  EXPECT_NE(qwen->chat_template().find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(llama->bos_token_id(), 128000);
  EXPECT_EQ(llama->eos_token_id(), 128001);
  EXPECT_EQ(tiny->bos_token_id(), 1);
  EXPECT_EQ(tiny->eos_token_id(), 2);
  EXPECT_TRUE(tiny->chat_template().empty());
}

TEST(TokenizerTest, MapsTokensAndIds) {
  const Tokenizer* qwen = load_tokenizer("qwen3");
  ASSERT_NE(qwen, nullptr);
  EXPECT_EQ(qwen->token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(qwen->id_to_token(151644), "<|im_start|>");
  EXPECT_EQ(qwen->token_to_id("Hello"), 9707);
  EXPECT_EQ(qwen->id_to_token(21927), "\xC4\xA0Hello");  // "ĠHello"
  EXPECT_EQ(qwen->token_to_id("no such token in the vocabulary"), std::nullopt);
  EXPECT_EQ(qwen->id_to_token(-1), "");
  EXPECT_EQ(qwen->id_to_token(qwen->vocab_size()), "");
  EXPECT_TRUE(qwen->is_special(151644));
  EXPECT_FALSE(qwen->is_special(151667));  // <think> is added but not special
  EXPECT_FALSE(qwen->is_special(9707));
}

TEST(TokenizerTest, ReplacesInvalidUtf8BeforeEncoding) {
  const Tokenizer* qwen = load_tokenizer("qwen3");
  ASSERT_NE(qwen, nullptr);
  EXPECT_EQ(qwen->encode("a\xFF"
                         "b",
                         false),
            qwen->encode("a\xEF\xBF\xBD"
                         "b",
                         false));
  EXPECT_EQ(qwen->decode(qwen->encode("a\xC3", false), false), "a\xEF\xBF\xBD");
}

TEST(TokenizerTest, EncodesConcurrentlyLikeSerially) {
  const Tokenizer* llama = load_tokenizer("llama3");
  ASSERT_NE(llama, nullptr);
  json fixture = load_fixture("llama3");
  ASSERT_TRUE(fixture.is_object());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (const json& c : fixture["cases"]) {
          if (llama->encode(c["text"].get<std::string>(), false) !=
              c["ids"].get<std::vector<int32_t>>()) {
            ++mismatches[t];
          }
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// The reference fixtures, one instance per tokenizer.
class TokenizerFixtureTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tokenizer_ = load_tokenizer(GetParam());
    ASSERT_NE(tokenizer_, nullptr);
    fixture_ = load_fixture(GetParam());
    ASSERT_TRUE(fixture_.is_object());
    ASSERT_GE(fixture_["cases"].size(), 30u);
  }
  const Tokenizer* tokenizer_ = nullptr;
  json fixture_;
};

TEST_P(TokenizerFixtureTest, EncodeMatchesReference) {
  for (const json& c : fixture_["cases"]) {
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tokenizer_->encode(text, false), c["ids"].get<std::vector<int32_t>>())
        << "text: '" << text << "'";
    EXPECT_EQ(tokenizer_->encode(text, true), c["ids_with_special"].get<std::vector<int32_t>>())
        << "with special tokens, text: '" << text << "'";
  }
}

TEST_P(TokenizerFixtureTest, DecodeMatchesReference) {
  for (const json& c : fixture_["cases"]) {
    const auto ids = c["ids_with_special"].get<std::vector<int32_t>>();
    EXPECT_EQ(tokenizer_->decode(ids, false), c["decoded"].get<std::string>())
        << "text: '" << c["text"].get<std::string>() << "'";
    EXPECT_EQ(tokenizer_->decode(ids, true), c["decoded_skip_special"].get<std::string>())
        << "skipping special tokens, text: '" << c["text"].get<std::string>() << "'";
  }
}

TEST_P(TokenizerFixtureTest, RoundTripsWhereReferenceDoes) {
  int round_trips = 0;
  for (const json& c : fixture_["cases"]) {
    if (!c["round_trips"].get<bool>()) continue;
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(text, false), false), text);
    ++round_trips;
  }
  EXPECT_GT(round_trips, 10);
}

TEST_P(TokenizerFixtureTest, VocabSizeAndSpecialIdsMatchReference) {
  EXPECT_EQ(tokenizer_->vocab_size(), fixture_["vocab_size"].get<int32_t>());
  int num_special = 0;
  for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id)
    num_special += tokenizer_->is_special(id);
  EXPECT_EQ(num_special, static_cast<int>(fixture_["special_ids"].size()));
  for (const json& id : fixture_["special_ids"])
    EXPECT_TRUE(tokenizer_->is_special(id.get<int32_t>()));
}

INSTANTIATE_TEST_SUITE_P(SharedTokenizers, TokenizerFixtureTest,
                         ::testing::Values("qwen3", "llama3", "tinystories"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace earnserve
