// The "speculative" request field of /v1/completions and /v1/recommendations, usage.speculative,
// and the --draft-model family of engine options. Real tokenizer and catalogue of tiny-rec.
#include "api/protocol/speculative_protocol.h"

#include <gtest/gtest.h>

#include "api/cli/engine_args.h"
#include "model/tokenizer/tokenizer.h"
#include "tiny_rec_protocol_test.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

class SpeculativeProtocolTest : public TinyRecProtocolTest {
 protected:
  // A server with `models/rec-draft/` loaded as its draft (N 40, gamma 3), or none.
  ProtocolContext context(bool with_draft = true) const {
    ProtocolContext ctx = base_context();
    if (with_draft) {
      ctx.speculative = SpeculativeParams{};
      ctx.speculative->draft_model = "models/rec-draft/";
    }
    return ctx;
  }

  static json beam_completion(json speculative) {
    json body = {{"prompt", "Once upon"},
                 {"use_beam_search", true},
                 {"n", 2},
                 {"best_of", 4},
                 {"max_tokens", 4}};
    if (!speculative.is_null()) body["speculative"] = std::move(speculative);
    return body;
  }
};

TEST_F(SpeculativeProtocolTest, CompletionSpeculatesOnlyWhenAsked) {
  ApiOr<CompletionRequest> plain = parse_completion_request(beam_completion(nullptr), context());
  ASSERT_TRUE(plain.ok()) << plain.error().message;
  EXPECT_FALSE(plain->params.speculative);

  json spec = {{"draft_model", "rec-draft"},
               {"num_draft_beams", 8},
               {"num_speculative_steps", 2},
               {"verification", "strict"}};
  ApiOr<CompletionRequest> r = parse_completion_request(beam_completion(spec), context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->params.speculative);
  EXPECT_EQ(r->params.speculative->num_draft_beams, 8);
  EXPECT_EQ(r->params.speculative->num_speculative_steps, 2);
  EXPECT_EQ(r->params.speculative->draft_model, "models/rec-draft/");
  EXPECT_EQ(r->params.speculative->verification, SpeculativeParams::Verification::kStrict);
  for (const EngineRequest& e : r->engine_requests("c")) {
    ASSERT_TRUE(e.params.speculative);
    EXPECT_TRUE(e.params.validate().ok());
  }

  // true: the server's parameters (N = 40, gamma = 3); the full directory names the draft too.
  r = parse_completion_request(beam_completion(true), context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->params.speculative->num_draft_beams, 40);
  EXPECT_EQ(r->params.speculative->num_speculative_steps, 3);
  r = parse_completion_request(beam_completion({{"draft_model", "models/rec-draft/"}}), context());
  EXPECT_TRUE(r.ok()) << r.error().message;
  r = parse_completion_request(beam_completion(false), context());
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->params.speculative);
  r = parse_completion_request(beam_completion({{"verification", "relaxed"}}), context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->params.speculative->verification, SpeculativeParams::Verification::kRelaxed);
}

TEST_F(SpeculativeProtocolTest, RecommendationsSpeculateByDefaultWithADraft) {
  json body = {{"history", json::array({"0", "1"})}, {"top_k", 3}};
  ApiOr<ParsedRecommendation> r = parse_recommendation_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->request.params.speculative);
  EXPECT_EQ(r->request.params.speculative->num_draft_beams, 40);
  EXPECT_TRUE(r->request.params.validate().ok());

  // The server's N is raised to the beam width; a request's own N is not.
  body["top_k"] = 50;
  r = parse_recommendation_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->request.params.speculative->num_draft_beams, 50);
  body["speculative"] = {{"num_draft_beams", 45}};
  r = parse_recommendation_request(body, context());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().param, "speculative.num_draft_beams");

  body = {{"history", json::array({"0"})}, {"top_k", 3}, {"speculative", false}};
  r = parse_recommendation_request(body, context());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->request.params.speculative);

  body.erase("speculative");
  r = parse_recommendation_request(body, context(/*with_draft=*/false));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r->request.params.speculative);
}

struct BadSpeculative {
  const char* name;
  const char* endpoint;  // "completions" or "recommendations"
  json speculative;
  bool with_draft;
  const char* param;
  const char* message_part;
};

class SpeculativeBadFieldTest : public SpeculativeProtocolTest,
                                public ::testing::WithParamInterface<BadSpeculative> {};

TEST_P(SpeculativeBadFieldTest, AnswersFourHundredNamingTheField) {
  const BadSpeculative& c = GetParam();
  ProtocolContext ctx = context(c.with_draft);
  std::optional<ApiError> error;
  if (std::string(c.endpoint) == "completions") {
    ApiOr<CompletionRequest> r = parse_completion_request(beam_completion(c.speculative), ctx);
    if (!r.ok()) error = r.error();
  } else if (std::string(c.endpoint) == "completions-sampling") {
    json body = {{"prompt", "Once"}, {"speculative", c.speculative}};
    ApiOr<CompletionRequest> r = parse_completion_request(body, ctx);
    if (!r.ok()) error = r.error();
  } else {
    json body = {{"history", json::array({"0"})}, {"top_k", 3}, {"speculative", c.speculative}};
    ApiOr<ParsedRecommendation> r = parse_recommendation_request(body, ctx);
    if (!r.ok()) error = r.error();
  }
  ASSERT_TRUE(error) << c.name << " was accepted";
  EXPECT_EQ(error->http_status, 400) << c.name;
  EXPECT_EQ(error->type, "invalid_request_error") << c.name;
  EXPECT_EQ(error->param, c.param) << c.name << ": " << error->message;
  EXPECT_NE(error->message.find(c.message_part), std::string::npos)
      << c.name << ": " << error->message;
}

INSTANTIATE_TEST_SUITE_P(
    Table, SpeculativeBadFieldTest,
    ::testing::Values(BadSpeculative{"NoDraftLoaded", "completions", true, false, "speculative",
                                     "--draft-model"},
                      BadSpeculative{"NoDraftLoadedRec",
                                     "recommendations",
                                     {{"num_draft_beams", 5}},
                                     false,
                                     "speculative",
                                     "no draft model"},
                      BadSpeculative{"OtherDraft",
                                     "completions",
                                     {{"draft_model", "other-draft"}},
                                     true,
                                     "speculative.draft_model",
                                     "'other-draft' is not loaded"},
                      BadSpeculative{"DraftNotString",
                                     "recommendations",
                                     {{"draft_model", 7}},
                                     true,
                                     "speculative.draft_model",
                                     "must be a string"},
                      BadSpeculative{"NotBeamSearch", "completions-sampling", true, true,
                                     "speculative", "use_beam_search"},
                      BadSpeculative{"WrongType", "completions", "yes", true, "speculative",
                                     "an object or a boolean"},
                      BadSpeculative{"BeamsBelowWidth",
                                     "completions",
                                     {{"num_draft_beams", 3}},
                                     true,
                                     "speculative.num_draft_beams",
                                     "at least the beam width (4)"},
                      BadSpeculative{"BeamsNotInteger",
                                     "completions",
                                     {{"num_draft_beams", 8.5}},
                                     true,
                                     "speculative.num_draft_beams",
                                     "must be an integer"},
                      BadSpeculative{"BeamsBool",
                                     "completions",
                                     {{"num_draft_beams", true}},
                                     true,
                                     "speculative.num_draft_beams",
                                     "must be an integer"},
                      BadSpeculative{"BeamsTooMany",
                                     "recommendations",
                                     {{"num_draft_beams", 513}},
                                     true,
                                     "speculative.num_draft_beams",
                                     "[1, 512]"},
                      BadSpeculative{"StepsZero",
                                     "completions",
                                     {{"num_speculative_steps", 0}},
                                     true,
                                     "speculative.num_speculative_steps",
                                     "[1, 8]"},
                      BadSpeculative{"StepsNine",
                                     "recommendations",
                                     {{"num_speculative_steps", 9}},
                                     true,
                                     "speculative.num_speculative_steps",
                                     "[1, 8]"},
                      BadSpeculative{"StepsString",
                                     "recommendations",
                                     {{"num_speculative_steps", "3"}},
                                     true,
                                     "speculative.num_speculative_steps",
                                     "must be an integer"},
                      BadSpeculative{"UnknownVerification",
                                     "recommendations",
                                     {{"verification", "loose"}},
                                     true,
                                     "speculative.verification",
                                     "'strict' or 'relaxed'"},
                      BadSpeculative{"UnknownKey",
                                     "completions",
                                     {{"num_beams", 8}},
                                     true,
                                     "speculative.num_beams",
                                     "unknown field"}),
    [](const ::testing::TestParamInfo<BadSpeculative>& info) { return info.param.name; });

// A request's speculation counters (the rest zero).
SpeculativeStats spec_stats(int rounds, std::vector<int> accepted, int target_calls,
                            int draft_calls) {
  SpeculativeStats s;
  s.num_rounds = rounds;
  s.accepted_steps = std::move(accepted);
  s.num_target_calls = target_calls;
  s.num_draft_calls = draft_calls;
  return s;
}

TEST(SpeculativeUsageTest, ReportsTheRequestsStatsSummed) {
  RequestOutput a, b, plain;
  a.speculative = spec_stats(2, {3, 1}, 3, 8);
  b.speculative = spec_stats(1, {2}, 2, 3);
  EXPECT_FALSE(sum_speculative_stats({plain}));
  std::optional<SpeculativeStats> sum = sum_speculative_stats({a, plain, b});
  ASSERT_TRUE(sum);
  json j = speculative_json(*sum);
  EXPECT_EQ(j["rounds"], 3);
  EXPECT_EQ(j["accepted_steps"], 6);
  EXPECT_EQ(j["accepted_steps_per_round"], json::array({3, 1, 2}));
  EXPECT_EQ(j["target_calls"], 5);
  EXPECT_EQ(j["draft_calls"], 11);
  EXPECT_FALSE(usage_json(7, 3).contains("speculative"));
  EXPECT_EQ(usage_json(7, 3, {}, sum)["speculative"]["rounds"], 3);
  json rec = recommendation_response({"rec-1", 0, "tiny-rec"}, {}, 7, 3, {}, a.speculative);
  EXPECT_EQ(rec["usage"]["speculative"]["target_calls"], 3);
}

TEST(DraftNameTest, MatchesTheDirectoryOrItsLastComponent) {
  EXPECT_TRUE(names_draft_model("a/b/draft", "a/b/draft"));
  EXPECT_TRUE(names_draft_model("draft", "a/b/draft/"));
  EXPECT_TRUE(names_draft_model("draft", "draft"));
  EXPECT_FALSE(names_draft_model("b", "a/b/draft"));
  EXPECT_FALSE(names_draft_model("", "a/b/draft"));
}

StatusOr<std::optional<SpeculativeParams>> defaults(std::vector<std::string> args) {
  auto parsed = cli::CliArgs::parse(args, cli::engine_value_options(), cli::engine_flag_options());
  if (!parsed.ok()) return parsed.status();
  return cli::speculative_defaults_from_args(*parsed);
}

TEST(SpeculativeEngineArgsTest, DraftOptionsFillEngineOptionsAndServerDefaults) {
  auto parsed = cli::CliArgs::parse(
      {"--model", "m", "--draft-model", "d", "--draft-kv-cache-memory", "8MiB", "--num-draft-beams",
       "20", "--num-speculative-steps", "4", "--speculative-verification", "strict"},
      cli::engine_value_options(), cli::engine_flag_options());
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  StatusOr<EngineOptions> o = cli::engine_options_from_args(*parsed);
  ASSERT_TRUE(o.ok()) << o.status().to_string();
  EXPECT_EQ(o->draft_model_dir, "d");
  EXPECT_EQ(o->draft_kv_cache_memory_bytes, 8 << 20);
  auto d = cli::speculative_defaults_from_args(*parsed);
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->draft_model, "d");
  EXPECT_EQ((*d)->num_draft_beams, 20);
  EXPECT_EQ((*d)->num_speculative_steps, 4);

  d = defaults({"--model", "m", "--draft-model", "d"});
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->num_draft_beams, 40);
  EXPECT_EQ((*d)->num_speculative_steps, 3);
  EXPECT_EQ((*d)->verification, SpeculativeParams::Verification::kStrict);
  d = defaults({"--model", "m", "--draft-model", "d", "--speculative-verification", "relaxed"});
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->verification, SpeculativeParams::Verification::kRelaxed);
  d = defaults({"--model", "m"});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->has_value());
}

TEST(SpeculativeEngineArgsTest, BadOptionsNameTheOption) {
  struct Case {
    std::vector<std::string> args;
    const char* message_part;
  };
  for (const Case& c : std::vector<Case>{
           {{"--num-draft-beams", "20"}, "--num-draft-beams needs --draft-model"},
           {{"--draft-model", "d", "--num-draft-beams", "0"},
            "--num-draft-beams must be in [1, 512]"},
           {{"--draft-model", "d", "--num-speculative-steps", "9"},
            "--num-speculative-steps must be in [1, 8]"},
           {{"--draft-model", "d", "--num-speculative-steps", "x"}, "--num-speculative-steps"},
           {{"--draft-model", "d", "--speculative-verification", "lax"}, "strict or relaxed"}}) {
    std::vector<std::string> args = {"--model", "m"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto d = defaults(args);
    ASSERT_FALSE(d.ok()) << c.message_part;
    EXPECT_NE(d.status().message().find(c.message_part), std::string::npos) << d.status().message();
  }
  auto parsed = cli::CliArgs::parse({"--model", "m", "--draft-kv-cache-memory", "8MiB"},
                                    cli::engine_value_options(), cli::engine_flag_options());
  ASSERT_TRUE(parsed.ok());
  StatusOr<EngineOptions> o = cli::engine_options_from_args(*parsed);
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("needs --draft-model"), std::string::npos);
}

}  // namespace
}  // namespace earnserve::api

namespace earnserve::api {
namespace {

TEST(SpeculativeEngineArgsTest, PolicyIsAutoByDefaultAndAlwaysWhenAsked) {
  auto d = defaults({"--model", "m", "--draft-model", "d"});
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->policy, SpeculativeParams::Policy::kAuto);
  d = defaults({"--model", "m", "--draft-model", "d", "--speculative-policy", "always"});
  ASSERT_TRUE(d.ok() && d->has_value());
  EXPECT_EQ((*d)->policy, SpeculativeParams::Policy::kAlways);
  d = defaults({"--model", "m", "--draft-model", "d", "--speculative-policy", "sometimes"});
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("auto or always"), std::string::npos);
  d = defaults({"--model", "m", "--speculative-policy", "auto"});
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("--speculative-policy needs --draft-model"),
            std::string::npos);
}

TEST_F(SpeculativeProtocolTest, ARequestMayForceOrReleaseThePolicy) {
  ProtocolContext ctx = context();
  ctx.speculative->policy = SpeculativeParams::Policy::kAuto;
  ApiOr<CompletionRequest> server = parse_completion_request(beam_completion(true), ctx);
  ASSERT_TRUE(server.ok()) << server.error().message;
  EXPECT_EQ(server->params.speculative->policy, SpeculativeParams::Policy::kAuto);
  ApiOr<CompletionRequest> forced =
      parse_completion_request(beam_completion({{"policy", "always"}}), ctx);
  ASSERT_TRUE(forced.ok()) << forced.error().message;
  EXPECT_EQ(forced->params.speculative->policy, SpeculativeParams::Policy::kAlways);
  ctx.speculative->policy = SpeculativeParams::Policy::kAlways;
  ApiOr<CompletionRequest> released =
      parse_completion_request(beam_completion({{"policy", "auto"}}), ctx);
  ASSERT_TRUE(released.ok()) << released.error().message;
  EXPECT_EQ(released->params.speculative->policy, SpeculativeParams::Policy::kAuto);
  ApiOr<CompletionRequest> bad =
      parse_completion_request(beam_completion({{"policy", "never"}}), ctx);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().param, "speculative.policy");
}

TEST(SpeculativeUsageTest, ReportsPlainStepsByReasonAndTreesPerRound) {
  RequestOutput a, b;
  a.speculative = spec_stats(1, {2}, 4, 3);
  a.speculative->num_plain_steps_cost = 2;
  a.speculative->trees = {{20, 1}};
  b.speculative = spec_stats(0, {}, 5, 0);
  b.speculative->num_plain_steps_cost = 3;
  b.speculative->num_plain_steps_no_room = 1;
  const json j = speculative_json(*sum_speculative_stats({a, b}));
  EXPECT_EQ(j["plain_steps"], 6);
  EXPECT_EQ(j["plain_steps_by_reason"], json({{"cost", 5}, {"no_room", 1}}));
  EXPECT_EQ(j["trees"], json::array({json::array({20, 1})}));
}

}  // namespace
}  // namespace earnserve::api
