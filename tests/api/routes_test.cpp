// The route table and the batch file lines: which path reaches which endpoint, what an ApiCall
// submits and answers, and how batch lines are read and written. Real tokenizer and catalogue of
// the tiny-rec fixture; no engine.
#include "api/service/routes.h"

#include <gtest/gtest.h>

#include <sstream>

#include "api/protocol/batch_lines.h"
#include "model/tokenizer/tokenizer.h"
#include "tiny_rec_protocol_test.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

class RoutesTest : public TinyRecProtocolTest {};

TEST_F(RoutesTest, FindsEveryPostRouteAndNothingElse) {
  ASSERT_NE(find_route("/v1/completions"), nullptr);
  EXPECT_EQ(find_route("/v1/completions")->endpoint, Endpoint::kCompletions);
  EXPECT_EQ(find_route("/v1/chat/completions")->endpoint, Endpoint::kChatCompletions);
  EXPECT_EQ(find_route("/v1/recommendations")->endpoint, Endpoint::kRecommendations);
  EXPECT_EQ(find_route("/tokenize")->endpoint, Endpoint::kTokenize);
  EXPECT_EQ(find_route("/detokenize")->endpoint, Endpoint::kDetokenize);
  EXPECT_EQ(find_route("/v1/embeddings"), nullptr);
  EXPECT_EQ(find_route(""), nullptr);
  EXPECT_EQ(post_routes().size(), 5u);
}

TEST_F(RoutesTest, BatchLinesNameTheEngineEndpointsOnly) {
  EXPECT_EQ(batch_paths(), "/v1/completions, /v1/chat/completions or /v1/recommendations");
  EXPECT_FALSE(find_route("/tokenize")->in_batch);
  EXPECT_TRUE(find_route("/v1/recommendations")->in_batch);
}

TEST_F(RoutesTest, CompletionCallSubmitsOneRequestPerPrompt) {
  ApiOr<ApiCall> call =
      parse_call(Endpoint::kCompletions,
                 {{"prompt", json::array({"Hello", "Once"})}, {"max_tokens", 3}, {"stream", true}},
                 base_context());
  ASSERT_TRUE(call.ok()) << call.error().message;
  EXPECT_TRUE(call->needs_engine());
  EXPECT_TRUE(call->stream());
  EXPECT_STREQ(call->prompt_param(), "prompt");
  call->disable_stream();
  EXPECT_FALSE(call->stream());
  std::vector<EngineRequest> requests = call->engine_requests("cmpl-7");
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[0].request_id, "cmpl-7-0");
  EXPECT_EQ(requests[1].request_id, "cmpl-7-1");
  EXPECT_FALSE(requests[1].stream);
}

TEST_F(RoutesTest, RecommendationCallSubmitsOneRequestWithTheBaseId) {
  ApiOr<ApiCall> call =
      parse_call(Endpoint::kRecommendations, {{"history", json::array({"0", "1"})}, {"top_k", 3}},
                 base_context());
  ASSERT_TRUE(call.ok()) << call.error().message;
  EXPECT_STREQ(call->prompt_param(), "history");
  std::vector<EngineRequest> requests = call->engine_requests("rec-1");
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].request_id, "rec-1");
}

TEST_F(RoutesTest, TokenizerCallsAreAnsweredWithoutTheEngine) {
  ApiOr<ApiCall> tok = parse_call(Endpoint::kTokenize, {{"prompt", "Hello"}}, base_context());
  ASSERT_TRUE(tok.ok()) << tok.error().message;
  EXPECT_FALSE(tok->needs_engine());
  const json answer = immediate_response(*tok, base_context());
  EXPECT_EQ(answer["tokens"], json(tokenizer_->encode("Hello", true)));
  EXPECT_EQ(answer["max_model_len"], 256);

  ApiOr<ApiCall> detok =
      parse_call(Endpoint::kDetokenize, {{"tokens", answer["tokens"]}}, base_context());
  ASSERT_TRUE(detok.ok()) << detok.error().message;
  EXPECT_EQ(immediate_response(*detok, base_context())["prompt"],
            tokenizer_->decode(tokenizer_->encode("Hello", true), false));
}

TEST_F(RoutesTest, ParseErrorsKeepTheirEndpointsStatus) {
  ApiOr<ApiCall> call = parse_call(Endpoint::kChatCompletions, {{"messages", 3}}, base_context());
  ASSERT_FALSE(call.ok());
  EXPECT_EQ(call.error().http_status, 400);
  EXPECT_EQ(call.error().param, "messages");
  call = parse_call(Endpoint::kDetokenize, {{"model", "other"}, {"tokens", json::array()}},
                    base_context());
  ASSERT_FALSE(call.ok());
  EXPECT_EQ(call.error().http_status, 404);
}

TEST_F(RoutesTest, BatchLineErrorsNameTheLineAndKeepTheCustomId) {
  BatchLine line = parse_batch_line(
      R"({"custom_id": "a", "method": "GET", "url": "/v1/completions", "body": {}})", 4,
      base_context());
  EXPECT_EQ(line.custom_id, "a");
  ASSERT_TRUE(line.error);
  EXPECT_EQ(line.error->message, "line 4: method must be POST");
  EXPECT_EQ(line.error->param, "method");

  line = parse_batch_line("not json", 1, base_context());
  ASSERT_TRUE(line.error);
  EXPECT_EQ(line.error->http_status, 400);
  EXPECT_TRUE(line.custom_id.empty());

  line = parse_batch_line(R"({"custom_id": "b", "url": "/v1/completions", "body": [1]})", 2,
                          base_context());
  ASSERT_TRUE(line.error);
  EXPECT_EQ(line.error->param, "body");

  line = parse_batch_line(
      R"({"custom_id": "c", "url": "/v1/completions", "body": {"model": "x", "prompt": "a"}})", 3,
      base_context());
  ASSERT_TRUE(line.error);
  EXPECT_EQ(line.error->http_status, 404);

  line =
      parse_batch_line(R"({"custom_id": "d", "url": "/v1/completions", "body": {"prompt": "a"}})",
                       5, base_context());
  EXPECT_FALSE(line.error);
  EXPECT_EQ(line.url, "/v1/completions");
  EXPECT_EQ(line.body["prompt"], "a");
}

TEST_F(RoutesTest, BatchLineFieldsOfTheWrongTypeAreErrorsNotExceptions) {
  struct Case {
    const char* text;
    const char* param;
  };
  const Case cases[] = {
      {R"({"custom_id": "a", "method": "POST", "url": 7, "body": {}})", "url"},
      {R"({"custom_id": "a", "method": "POST", "url": ["/v1/completions"], "body": {}})", "url"},
      {R"({"custom_id": "a", "method": 1, "url": "/v1/completions", "body": {}})", "method"},
      {R"({"custom_id": "a", "method": {"m": "POST"}, "url": "/v1/completions", "body": {}})",
       "method"},
      {R"({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": "text"})", "body"},
      {R"({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": 3.5})", "body"},
      {R"({"custom_id": "a", "method": "POST", "url": "/v1/completions"})", "body"},
      {R"({"custom_id": 12, "method": "POST", "url": "/v1/completions", "body": {}})", "custom_id"},
  };
  for (const Case& c : cases) {
    BatchLine line;
    ASSERT_NO_THROW(line = parse_batch_line(c.text, 6, base_context())) << c.text;
    ASSERT_TRUE(line.error) << c.text;
    EXPECT_EQ(line.error->http_status, 400) << c.text;
    EXPECT_EQ(line.error->param, c.param) << c.text;
    EXPECT_EQ(line.error->message.rfind("line 6: ", 0), 0u) << line.error->message;
  }
  // A null method is an absent one (POST); a null url is an absent one (routed nowhere).
  BatchLine line = parse_batch_line(
      R"({"custom_id": "a", "method": null, "url": null, "body": {"prompt": "a"}})", 1,
      base_context());
  EXPECT_FALSE(line.error);
  EXPECT_EQ(line.url, "");
}

TEST_F(RoutesTest, BatchOutputLineCarriesTheStatusAndBody) {
  const json ok = batch_output_line("batch_req_0", "a", json{{"x", 1}});
  EXPECT_EQ(ok["id"], "batch_req_0");
  EXPECT_EQ(ok["custom_id"], "a");
  EXPECT_EQ(ok["response"]["status_code"], 200);
  EXPECT_EQ(ok["response"]["request_id"], "batch_req_0");
  EXPECT_EQ(ok["response"]["body"]["x"], 1);
  EXPECT_TRUE(ok["error"].is_null());

  const json bad = batch_output_line("batch_req_1", "", bad_request("no", "prompt"));
  EXPECT_TRUE(bad["custom_id"].is_null());
  EXPECT_EQ(bad["response"]["status_code"], 400);
  EXPECT_EQ(bad["response"]["body"]["error"]["param"], "prompt");
}

TEST_F(RoutesTest, BatchProgressCountsCompleteLinesAndLeavesTheTornOne) {
  const std::string a = batch_output_line("batch_req_0", "a", json{{"x", 1}}).dump() + "\n";
  const std::string nameless =
      batch_output_line("batch_req_1", "", bad_request("no", "custom_id")).dump() + "\n";
  const std::string b = batch_output_line("batch_req_2", "b", json{{"x", 2}}).dump() + "\n";
  std::istringstream in(a + nameless + b + b.substr(0, 20));
  StatusOr<BatchProgress> progress = scan_batch_output(in);
  ASSERT_TRUE(progress.ok()) << progress.status().message();
  EXPECT_EQ(progress->num_lines, 3);
  EXPECT_EQ(progress->complete_bytes, static_cast<int64_t>(a.size() + nameless.size() + b.size()));
  EXPECT_TRUE(progress->answered("a", "batch_req_0"));
  EXPECT_TRUE(progress->answered("b", "batch_req_9"));
  EXPECT_FALSE(progress->answered("c", "batch_req_0"));
  // A line without a custom_id is known by its index.
  EXPECT_TRUE(progress->answered("", "batch_req_1"));
  EXPECT_FALSE(progress->answered("", "batch_req_3"));

  std::istringstream whole(a + b);
  progress = scan_batch_output(whole);
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->complete_bytes, static_cast<int64_t>(a.size() + b.size()));

  std::istringstream empty("");
  progress = scan_batch_output(empty);
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->num_lines, 0);
  EXPECT_EQ(progress->complete_bytes, 0);
}

TEST_F(RoutesTest, BatchProgressRefusesAFileOfSomethingElse) {
  for (const std::string text : {"hello\n", "{\"custom_id\": \"a\"}\n", "[1, 2]\n"}) {
    std::istringstream in(batch_output_line("batch_req_0", "a", json{}).dump() + "\n" + text);
    StatusOr<BatchProgress> progress = scan_batch_output(in);
    ASSERT_FALSE(progress.ok()) << text;
    EXPECT_NE(progress.status().message().find("line 2"), std::string::npos);
  }
}

}  // namespace
}  // namespace earnserve::api
