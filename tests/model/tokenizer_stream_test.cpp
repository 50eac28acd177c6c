// IncrementalDetokenizer: streamed pieces concatenate to decode(), never split a character.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer/incremental_detokenizer.h"
#include "model/tokenizer/utf8.h"
#include "tests/model/tokenizer_test_util.h"

namespace earnserve {
namespace {

using nlohmann::json;
using testing_util::load_fixture;
using testing_util::load_tokenizer;

// Streams `generated` after `prompt`; checks each piece is valid UTF-8 and returns the whole.
std::string stream(const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                   const std::vector<int32_t>& generated, bool skip_special_tokens) {
  IncrementalDetokenizer detokenizer(tokenizer, prompt, skip_special_tokens);
  std::string text;
  for (int32_t id : generated) {
    std::string piece = detokenizer.append(id);
    EXPECT_TRUE(is_valid_utf8(piece));
    EXPECT_FALSE(std::string_view(piece).ends_with(kReplacementChar))
        << "a piece ends in U+FFFD after id " << id;
    text += piece;
  }
  return text + detokenizer.flush();
}

TEST(IncrementalDetokenizerTest, HoldsBackSplitCharacterUntilComplete) {
  const Tokenizer* qwen = load_tokenizer("qwen3");
  ASSERT_NE(qwen, nullptr);
  // The llama emoji is three byte-level tokens in Qwen2: " " F0 9F + A6 + 99.
  std::vector<int32_t> ids = qwen->encode(" this is \xF0\x9F\xA6\x99.cpp", false);
  ASSERT_EQ(ids, (std::vector<int32_t>{419, 374, 11162, 99, 247, 13, 10821}));
  IncrementalDetokenizer detokenizer(*qwen);
  EXPECT_EQ(detokenizer.append(ids[0]), " this");
  EXPECT_EQ(detokenizer.append(ids[1]), " is");
  EXPECT_EQ(detokenizer.append(ids[2]), "");
  EXPECT_EQ(detokenizer.append(ids[3]), "");
  EXPECT_EQ(detokenizer.append(ids[4]), " \xF0\x9F\xA6\x99");
  EXPECT_EQ(detokenizer.append(ids[5]), ".");
  EXPECT_EQ(detokenizer.append(ids[6]), "cpp");
  EXPECT_EQ(detokenizer.flush(), "");
}

TEST(IncrementalDetokenizerTest, FlushReturnsIncompleteCharacterAsReplacement) {
  const Tokenizer* qwen = load_tokenizer("qwen3");
  ASSERT_NE(qwen, nullptr);
  IncrementalDetokenizer detokenizer(*qwen);
  EXPECT_EQ(detokenizer.append(11162), "");  // " " F0 9F: space and half of an emoji
  EXPECT_EQ(detokenizer.flush(), qwen->decode(std::vector<int32_t>{11162}, true));
  EXPECT_EQ(detokenizer.flush(), "");
}

TEST(IncrementalDetokenizerTest, UsesPromptAsContextOnly) {
  const Tokenizer* tiny = load_tokenizer("tinystories");
  ASSERT_NE(tiny, nullptr);
  std::vector<int32_t> prompt = tiny->encode("Once upon a time", true);
  std::vector<int32_t> rest = tiny->encode(" there was a dog", false);
  // SentencePiece: the space that starts " there" is a "▁" inside the next token.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), rest.begin(), rest.end());
  std::string full = tiny->decode(all, true);
  std::string head = tiny->decode(prompt, true);
  ASSERT_EQ(full.substr(0, head.size()), head);
  EXPECT_EQ(stream(*tiny, prompt, rest, true), full.substr(head.size()));
}

class IncrementalDetokenizerFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalDetokenizerFixtureTest, StreamingEqualsDecode) {
  const Tokenizer* tokenizer = load_tokenizer(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  json fixture = load_fixture(GetParam());
  ASSERT_TRUE(fixture.is_object());
  for (const json& c : fixture["cases"]) {
    const auto ids = c["ids_with_special"].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      EXPECT_EQ(stream(*tokenizer, {}, ids, skip), tokenizer->decode(ids, skip))
          << "skip_special_tokens=" << skip << ", text: '" << c["text"].get<std::string>() << "'";
    }
  }
}

TEST_P(IncrementalDetokenizerFixtureTest, StreamingAfterPromptEqualsDecodeOfTheRest) {
  const Tokenizer* tokenizer = load_tokenizer(GetParam());
  ASSERT_NE(tokenizer, nullptr);
  json fixture = load_fixture(GetParam());
  ASSERT_TRUE(fixture.is_object());
  int checked = 0;
  for (const json& c : fixture["cases"]) {
    const auto ids = c["ids_with_special"].get<std::vector<int32_t>>();
    for (size_t cut = 1; cut < ids.size(); cut += 3) {
      std::vector<int32_t> prompt(ids.begin(), ids.begin() + cut);
      std::vector<int32_t> rest(ids.begin() + cut, ids.end());
      const std::string full = tokenizer->decode(ids, false);
      const std::string head = tokenizer->decode(prompt, false);
      // Only meaningful where the prompt's text is a prefix of the whole text (not, e.g., when
      // the cut splits a character, which the prompt's own decode turns into U+FFFD).
      if (full.compare(0, head.size(), head) != 0) continue;
      EXPECT_EQ(stream(*tokenizer, prompt, rest, false), full.substr(head.size()))
          << "cut " << cut << ", text: '" << c["text"].get<std::string>() << "'";
      ++checked;
    }
  }
  EXPECT_GT(checked, 50);
}

INSTANTIATE_TEST_SUITE_P(SharedTokenizers, IncrementalDetokenizerFixtureTest,
                         ::testing::Values("qwen3", "llama3", "tinystories"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace earnserve
