// openai_protocol: request bodies -> engine requests, and every bad body -> its HTTP status,
// error type and param. Runs with the real tokenizer and catalogue of the tiny-rec fixture.
#include "api/protocol/openai_protocol.h"

#include <gtest/gtest.h>

#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"
#include "tiny_rec_protocol_test.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

class OpenAiProtocolTest : public TinyRecProtocolTest {
 protected:
  ProtocolContext context() const { return base_context(); }
};

TEST_F(OpenAiProtocolTest, ParsesACompletionIntoEngineRequests) {
  json body = {{"model", "tiny-rec"},
               {"prompt", json::array({"Hello", "Once upon"})},
               {"max_tokens", 7},
               {"temperature", 0.5},
               {"top_k", 4},
               {"stop", "x"},
               {"seed", 3},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  ApiOr<CompletionRequest> r = parse_completion_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->prompts.size(), 2u);
  EXPECT_EQ(r->prompts[0], tokenizer_->encode("Hello", true));
  EXPECT_EQ(r->params.max_tokens, 7);
  EXPECT_FLOAT_EQ(r->params.temperature, 0.5f);
  EXPECT_EQ(r->params.stop, std::vector<std::string>{"x"});
  EXPECT_EQ(r->params.seed, 3u);
  EXPECT_TRUE(r->include_usage);
  std::vector<EngineRequest> reqs = r->engine_requests("cmpl-1");
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].request_id, "cmpl-1-1");
  EXPECT_TRUE(reqs[1].stream);
}

TEST_F(OpenAiProtocolTest, TokenIdPromptsAndBeamSearch) {
  json body = {{"prompt", json::array({json::array({5, 6, 7}), json::array({8})})},
               {"use_beam_search", true},
               {"n", 2},
               {"best_of", 4},
               {"max_tokens", 3}};
  ApiOr<CompletionRequest> r = parse_completion_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->prompts[0], (std::vector<int32_t>{5, 6, 7}));
  EXPECT_TRUE(r->params.use_beam_search);
  EXPECT_EQ(r->params.beam_width, 4);
  EXPECT_EQ(r->params.n, 2);
}

TEST_F(OpenAiProtocolTest, DefaultMaxTokensIsSixteenForCompletions) {
  ApiOr<CompletionRequest> r = parse_completion_request({{"prompt", "Hi"}}, context());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->params.max_tokens, 16);
}

TEST_F(OpenAiProtocolTest, CatalogueConstraintResolvesExcludedItems) {
  json body = {{"prompt", "Hi"},
               {"constrain_to_catalogue", true},
               {"exclude_items", json::array({"0", 1})},
               {"max_tokens", 5}};
  ApiOr<CompletionRequest> r = parse_completion_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->catalogue);
  EXPECT_EQ(r->exclude_items.size(), 2u);
}

TEST_F(OpenAiProtocolTest, RecommendationBuildsACatalogueBeamSearch) {
  json body = {{"history", json::array({"0", "1"})}, {"top_k", 3}, {"exclude_history", true}};
  ApiOr<ParsedRecommendation> r = parse_recommendation_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->request.params.n, 3);
  EXPECT_TRUE(r->request.params.use_beam_search);
  EXPECT_EQ(r->request.exclude_items.size(), 2u);
}

TEST_F(OpenAiProtocolTest, RecommendationScoresOverTheVocabularyUnlessAskedForTheCatalogue) {
  json body = {{"history", json::array({"0", "1"})}, {"top_k", 3}};
  ApiOr<ParsedRecommendation> r = parse_recommendation_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->request.score_over, ScoreOver::kVocabulary);
  body["score_over"] = "catalogue";
  r = parse_recommendation_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->request.score_over, ScoreOver::kCatalogue);
}

struct BadCase {
  const char* name;
  std::string body;      // raw request body
  const char* endpoint;  // "completions", "chat", "recommendations", "detokenize"
  int status;
  const char* type;
  const char* param;  // "" for null
};

class OpenAiProtocolBadInputTest : public OpenAiProtocolTest,
                                   public ::testing::WithParamInterface<BadCase> {};

TEST_P(OpenAiProtocolBadInputTest, AnswersWithStatusTypeAndParam) {
  const BadCase& c = GetParam();
  ProtocolContext ctx = context();
  ApiError error;
  bool failed = false;
  ApiOr<json> body = parse_json_body(c.body);
  if (!body.ok()) {
    error = body.error();
    failed = true;
  } else {
    const std::string endpoint = c.endpoint;
    auto take = [&](const auto& r) {
      if (!r.ok()) {
        error = r.error();
        failed = true;
      }
    };
    if (endpoint == "completions") take(parse_completion_request(*body, ctx));
    if (endpoint == "chat") take(parse_chat_request(*body, ctx));
    if (endpoint == "recommendations") take(parse_recommendation_request(*body, ctx));
    if (endpoint == "detokenize") take(parse_detokenize_request(*body, ctx));
  }
  ASSERT_TRUE(failed) << c.name << " was accepted";
  EXPECT_EQ(error.http_status, c.status) << c.name << ": " << error.message;
  EXPECT_EQ(error.type, c.type) << c.name;
  EXPECT_EQ(error.param, c.param) << c.name << ": " << error.message;
  EXPECT_FALSE(error.message.empty());
  json j = error.to_json();
  EXPECT_TRUE(j["error"].contains("message") && j["error"].contains("code"));
}

const std::string kLongPrompt(3000, 'a');

INSTANTIATE_TEST_SUITE_P(
    Table, OpenAiProtocolBadInputTest,
    ::testing::Values(
        BadCase{"MalformedJson", "{\"prompt\": ", "completions", 400, "invalid_request_error", ""},
        BadCase{"InvalidUtf8Body", "{\"prompt\": \"a\xff\"}", "completions", 400,
                "invalid_request_error", ""},
        BadCase{"ArrayBody", "[1, 2]", "completions", 422, "invalid_request_error", ""},
        BadCase{"NumberBody", "3", "completions", 422, "invalid_request_error", ""},
        BadCase{"UnknownModel", R"({"model": "gpt-9", "prompt": "a"})", "completions", 404,
                "invalid_request_error", "model"},
        BadCase{"ModelNotString", R"({"model": 3, "prompt": "a"})", "completions", 400,
                "invalid_request_error", "model"},
        BadCase{"MissingPrompt", R"({"max_tokens": 3})", "completions", 400,
                "invalid_request_error", "prompt"},
        BadCase{"EmptyPrompt", R"({"prompt": ""})", "completions", 400, "invalid_request_error",
                "prompt"},
        BadCase{"EmptyPromptList", R"({"prompt": []})", "completions", 400, "invalid_request_error",
                "prompt"},
        BadCase{"PromptNumber", R"({"prompt": 5})", "completions", 400, "invalid_request_error",
                "prompt"},
        BadCase{"MixedPromptList", R"({"prompt": ["a", 5]})", "completions", 400,
                "invalid_request_error", "prompt"},
        BadCase{"TokenOutsideVocab", R"({"prompt": [1, 99999]})", "completions", 400,
                "invalid_request_error", "prompt"},
        BadCase{"NegativeToken", R"({"prompt": [-1]})", "completions", 400, "invalid_request_error",
                "prompt"},
        BadCase{"PromptLongerThanContext", "{\"prompt\": \"" + kLongPrompt + "\"}", "completions",
                400, "invalid_request_error", "prompt"},
        BadCase{"MaxTokensString", R"({"prompt": "a", "max_tokens": "5"})", "completions", 400,
                "invalid_request_error", "max_tokens"},
        BadCase{"MaxTokensNegative", R"({"prompt": "a", "max_tokens": -1})", "completions", 400,
                "invalid_request_error", "max_tokens"},
        BadCase{"MaxTokensHuge", R"({"prompt": "a", "max_tokens": 100000000000})", "completions",
                400, "invalid_request_error", "max_tokens"},
        BadCase{"MaxTokensPastContext", R"({"prompt": "a", "max_tokens": 300})", "completions", 400,
                "invalid_request_error", "max_tokens"},
        BadCase{"MaxTokensFraction", R"({"prompt": "a", "max_tokens": 2.5})", "completions", 400,
                "invalid_request_error", "max_tokens"},
        BadCase{"TemperatureString", R"({"prompt": "a", "temperature": "hot"})", "completions", 400,
                "invalid_request_error", "temperature"},
        BadCase{"TemperatureNegative", R"({"prompt": "a", "temperature": -0.5})", "completions",
                400, "invalid_request_error", "temperature"},
        BadCase{"TopPZero", R"({"prompt": "a", "top_p": 0})", "completions", 400,
                "invalid_request_error", "top_p"},
        BadCase{"TopKBelowMinusOne", R"({"prompt": "a", "top_k": -2})", "completions", 400,
                "invalid_request_error", "top_k"},
        BadCase{"MinPAboveOne", R"({"prompt": "a", "min_p": 1.5})", "completions", 400,
                "invalid_request_error", "min_p"},
        BadCase{"NOverLimit", R"({"prompt": "a", "n": 100000})", "completions", 400,
                "invalid_request_error", "n"},
        BadCase{"NZero", R"({"prompt": "a", "n": 0})", "completions", 400, "invalid_request_error",
                "n"},
        BadCase{"BestOfBelowN", R"({"prompt": "a", "n": 3, "best_of": 2})", "completions", 400,
                "invalid_request_error", "best_of"},
        BadCase{"StreamBool", R"({"prompt": "a", "stream": "yes"})", "completions", 400,
                "invalid_request_error", "stream"},
        BadCase{"StreamOptionsWithoutStream",
                R"({"prompt": "a", "stream_options": {"include_usage": true}})", "completions", 400,
                "invalid_request_error", "stream_options"},
        BadCase{"StopNumber", R"({"prompt": "a", "stop": 3})", "completions", 400,
                "invalid_request_error", "stop"},
        BadCase{"StopEmpty", R"({"prompt": "a", "stop": [""]})", "completions", 400,
                "invalid_request_error", "stop"},
        BadCase{"LogprobsTooMany", R"({"prompt": "a", "logprobs": 50})", "completions", 400,
                "invalid_request_error", "logprobs"},
        BadCase{"PresencePenaltyRange", R"({"prompt": "a", "presence_penalty": 3})", "completions",
                400, "invalid_request_error", "presence_penalty"},
        BadCase{"RepetitionPenaltyZero", R"({"prompt": "a", "repetition_penalty": 0})",
                "completions", 400, "invalid_request_error", "repetition_penalty"},
        BadCase{"SeedString", R"({"prompt": "a", "seed": "x"})", "completions", 400,
                "invalid_request_error", "seed"},
        BadCase{"UnknownExcludedItem",
                R"({"prompt": "a", "constrain_to_catalogue": true, "exclude_items": ["no"]})",
                "completions", 400, "invalid_request_error", "exclude_items"},
        BadCase{"ChatWithoutTemplate", R"({"messages": [{"role": "user", "content": "hi"}]})",
                "chat", 400, "invalid_request_error", "messages"},
        BadCase{"ChatMessagesNotList", R"({"messages": "hi"})", "chat", 400,
                "invalid_request_error", "messages"},
        BadCase{"ChatMessageWithoutRole", R"({"messages": [{"content": "hi"}]})", "chat", 400,
                "invalid_request_error", "messages"},
        BadCase{"RecommendationUnknownItem", R"({"history": ["0", "no-such-item"]})",
                "recommendations", 400, "invalid_request_error", "history"},
        BadCase{"RecommendationEmptyHistory", R"({"history": []})", "recommendations", 400,
                "invalid_request_error", "history"},
        BadCase{"RecommendationTopKZero", R"({"history": ["0"], "top_k": 0})", "recommendations",
                400, "invalid_request_error", "top_k"},
        BadCase{"RecommendationBeamBelowTopK", R"({"history": ["0"], "top_k": 5, "beam_width": 2})",
                "recommendations", 400, "invalid_request_error", "beam_width"},
        BadCase{"RecommendationHistoryNotList", R"({"history": "0"})", "recommendations", 400,
                "invalid_request_error", "history"},
        BadCase{"RecommendationScoreOverUnknown", R"({"history": ["0"], "score_over": "items"})",
                "recommendations", 400, "invalid_request_error", "score_over"},
        BadCase{"RecommendationScoreOverNotAString", R"({"history": ["0"], "score_over": 1})",
                "recommendations", 400, "invalid_request_error", "score_over"},
        BadCase{"DetokenizeBadId", R"({"tokens": [1, "a"]})", "detokenize", 400,
                "invalid_request_error", "tokens"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST(Utf8Test, RejectsOverlongsSurrogatesAndTruncation) {
  EXPECT_TRUE(is_valid_utf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // UTF-16 surrogate
  EXPECT_FALSE(is_valid_utf8("\xE2\x82"));          // truncated
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
}

TEST(ApiErrorTest, MapsEngineStatusesToHttpStatuses) {
  EXPECT_EQ(error_from_status(invalid_argument("x")).http_status, 400);
  EXPECT_EQ(error_from_status(resource_exhausted("x")).http_status, 400);
  EXPECT_EQ(error_from_status(not_found("x")).http_status, 404);
  EXPECT_EQ(error_from_status(unavailable("x")).http_status, 503);
  EXPECT_EQ(error_from_status(internal_error("x")).http_status, 500);
  json j = bad_request("bad", "n").to_json();
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_TRUE(j["error"]["code"].is_null());
}

TEST(UsageTest, ReportsKvBlocksPerGroupWhenGiven) {
  EXPECT_FALSE(usage_json(7, 3).contains("kv_blocks"));
  const std::vector<int> earn_blocks = {9, 1};  // below the split; registers and generated
  nlohmann::json u = usage_json(7, 3, earn_blocks);
  EXPECT_EQ(u["total_tokens"], 10);
  EXPECT_EQ(u["kv_blocks"], nlohmann::json::array({9, 1}));
}

}  // namespace
}  // namespace earnserve::api
