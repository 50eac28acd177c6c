// Tokenizer building blocks: UTF-8 repair, the byte-level alphabet, split behaviours, BPE merges,
// added-token splitting and the decoders, each on small hand-checked inputs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer/added_tokens.h"
#include "model/tokenizer/bpe.h"
#include "model/tokenizer/normalizer.h"
#include "model/tokenizer/pre_tokenizer.h"
#include "model/tokenizer/token_decoder.h"
#include "model/tokenizer/unicode_bytes.h"
#include "model/tokenizer/utf8.h"

namespace earnserve {
namespace {

using nlohmann::json;

TEST(TokenizerUtf8Test, RepairsLikeRustFromUtf8Lossy) {
  EXPECT_EQ(utf8_lossy("plain"), "plain");
  EXPECT_EQ(utf8_lossy("\xC3\xA9"), "\xC3\xA9");
  // One U+FFFD per maximal ill-formed subpart.
  EXPECT_EQ(utf8_lossy("a\xF0\x9F\xA6"
                       "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(utf8_lossy("\xE0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(utf8_lossy("\xFF\xC3"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));  // overlong
  EXPECT_TRUE(is_valid_utf8("\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
}

TEST(UnicodeBytesTest, MapsEveryByteReversibly) {
  EXPECT_EQ(bytes_to_unicode("Hi \n"), "Hi\xC4\xA0\xC4\x8A");  // "HiĠĊ"
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::optional<std::string> back = unicode_to_bytes(bytes_to_unicode(all));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, all);
  EXPECT_EQ(unicode_to_bytes("\xE4\xB8\xAD"), std::nullopt);  // U+4E2D is not in the alphabet
}

TEST(PreTokenizerTest, AppliesSplitBehaviours) {
  // "a-b--c" split on "-": pieces a | - | b | - | - | c.
  std::vector<SplitPiece> pieces = {{0, 1, false}, {1, 2, true}, {2, 3, false},
                                    {3, 4, true},  {4, 5, true}, {5, 6, false}};
  using Ranges = std::vector<std::pair<size_t, size_t>>;
  EXPECT_EQ(apply_split_behavior(pieces, SplitBehavior::kRemoved),
            (Ranges{{0, 1}, {2, 3}, {5, 6}}));
  EXPECT_EQ(apply_split_behavior(pieces, SplitBehavior::kIsolated).size(), 6u);
  EXPECT_EQ(apply_split_behavior(pieces, SplitBehavior::kMergedWithPrevious),
            (Ranges{{0, 2}, {2, 4}, {4, 5}, {5, 6}}));
  EXPECT_EQ(apply_split_behavior(pieces, SplitBehavior::kMergedWithNext),
            (Ranges{{0, 1}, {1, 3}, {3, 4}, {4, 6}}));
  EXPECT_EQ(apply_split_behavior(pieces, SplitBehavior::kContiguous),
            (Ranges{{0, 1}, {1, 2}, {2, 3}, {3, 5}, {5, 6}}));
}

TEST(PreTokenizerTest, SplitsWithUnicodeRegexAndMetaspace) {
  auto split = make_pre_tokenizer(json::parse(
      R"({"type": "Split", "pattern": {"Regex": "\\p{L}+|\\p{N}"}, "behavior": "Isolated"})"));
  ASSERT_TRUE(split.ok()) << split.status().to_string();
  std::vector<std::string> pieces = {"Größe 42!"};
  (*split)->pre_tokenize(&pieces, true);
  EXPECT_EQ(pieces, (std::vector<std::string>{"Größe", " ", "4", "2", "!"}));

  auto metaspace = make_pre_tokenizer(
      json::parse(R"({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"})"));
  ASSERT_TRUE(metaspace.ok()) << metaspace.status().to_string();
  pieces = {"Hey  you"};
  (*metaspace)->pre_tokenize(&pieces, true);
  EXPECT_EQ(pieces, (std::vector<std::string>{"▁Hey", "▁", "▁you"}));
  pieces = {"Hey"};
  (*metaspace)->pre_tokenize(&pieces, false);
  EXPECT_EQ(pieces, (std::vector<std::string>{"Hey"}));
}

TEST(NormalizerTest, ComposesAndReplaces) {
  auto nfc = make_normalizer(json::parse(R"({"type": "NFC"})"));
  ASSERT_TRUE(nfc.ok());
  EXPECT_EQ((*nfc)->normalize("cafe\xCC\x81"), "caf\xC3\xA9");
  auto sequence = make_normalizer(json::parse(
      R"({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
          {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]})"));
  ASSERT_TRUE(sequence.ok());
  EXPECT_EQ((*sequence)->normalize("a b"), "▁a▁b");
  EXPECT_EQ((*sequence)->normalize(""), "");
}

TEST(BpeModelTest, MergesByRankLeftmostFirst) {
  auto model = BpeModel::from_json(json::parse(R"({"type": "BPE",
      "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "aa": 6},
      "merges": [["b", "c"], ["a", "b"], ["a", "bc"], ["a", "a"]]})"));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::vector<int32_t> ids;
  (*model)->tokenize("abc", &ids);  // b+c (rank 0) first, then a+bc
  EXPECT_EQ(ids, (std::vector<int32_t>{5}));
  ids.clear();
  (*model)->tokenize("aaa", &ids);  // leftmost pair merges first
  EXPECT_EQ(ids, (std::vector<int32_t>{6, 0}));
  ids.clear();
  (*model)->tokenize("xab", &ids);  // no unk_token: unknown characters vanish
  EXPECT_EQ(ids, (std::vector<int32_t>{3}));
}

TEST(BpeModelTest, FallsBackToBytesThenFusedUnk) {
  auto model = BpeModel::from_json(json::parse(R"({"type": "BPE", "unk_token": "<unk>",
      "fuse_unk": true, "byte_fallback": true,
      "vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "a": 3}, "merges": []})"));
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::vector<int32_t> ids;
  (*model)->tokenize(
      "a\xC3\xA9"
      "a\xE4\xB8\xAD\xE4\xB8\xAD"
      "a",
      &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 1, 2, 3, 0, 3}));
}

TEST(BpeModelTest, IgnoreMergesTakesWholeVocabularyWords) {
  auto model = BpeModel::from_json(json::parse(R"({"type": "BPE", "ignore_merges": true,
      "vocab": {"a": 0, "b": 1, "ab": 2, "abb": 3}, "merges": [["a", "b"]]})"));
  ASSERT_TRUE(model.ok());
  std::vector<int32_t> ids;
  (*model)->tokenize("abb", &ids);  // merges alone would give ab + b
  EXPECT_EQ(ids, (std::vector<int32_t>{3}));
}

TEST(AddedTokenSplitterTest, FindsLeftmostLongestWithStripRules) {
  std::vector<AddedToken> tokens(3);
  tokens[0].content = "<a>";
  tokens[1].content = "<a><b>";
  tokens[2].content = "<m>";
  tokens[2].lstrip = true;
  tokens[2].rstrip = true;
  AddedTokenSplitter splitter(&tokens, {"<a>", "<a><b>", "<m>"}, {0, 1, 2});
  std::vector<TextSegment> segments = splitter.split("x<a><b><a>y  <m> z");
  ASSERT_EQ(segments.size(), 6u);
  EXPECT_EQ(segments[0].token_index, -1);
  EXPECT_EQ(segments[1].token_index, 1);  // longest
  EXPECT_EQ(segments[2].token_index, 0);
  EXPECT_EQ(segments[3].end - segments[3].begin, 1u);  // "y": the spaces go to <m>
  EXPECT_EQ(segments[4].token_index, 2);
  EXPECT_EQ(segments[4].end - segments[4].begin, 6u);  // "  <m> "
  EXPECT_EQ(segments[5].end - segments[5].begin, 1u);  // "z"
  EXPECT_EQ(splitter.split("").size(), 1u);
}

TEST(TokenDecoderTest, ByteFallbackFuseStrip) {
  auto decoder = make_token_decoder(json::parse(R"({"type": "Sequence", "decoders": [
      {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
      {"type": "ByteFallback"}, {"type": "Fuse"},
      {"type": "Strip", "content": " ", "start": 1, "stop": 0}]})"));
  ASSERT_TRUE(decoder.ok()) << decoder.status().to_string();
  std::vector<std::string> tokens = {"▁caf", "<0xC3>", "<0xA9>", "▁", "<0xC3>", "▁x"};
  (*decoder)->decode_chain(&tokens);
  ASSERT_EQ(tokens.size(), 1u);
  // The valid run becomes "é"; the lone lead byte one U+FFFD.
  EXPECT_EQ(tokens[0], "caf\xC3\xA9 \xEF\xBF\xBD x");
}

}  // namespace
}  // namespace earnserve
