// The access log line of a request, as text and as JSON, and which client request ids are kept.
#include "api/server/access_log.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

namespace earnserve::api {
namespace {

AccessEntry recommendation_entry() {
  return AccessEntry{"POST", "/v1/recommendations", 200, 0.0123, 38, 40, "rec-abc", "127.0.0.1"};
}

TEST(AccessLogTest, JsonLineHasEveryField) {
  const nlohmann::json j =
      nlohmann::json::parse(format_access_line(recommendation_entry(), LogFormat::kJson));
  EXPECT_EQ(j["method"], "POST");
  EXPECT_EQ(j["path"], "/v1/recommendations");
  EXPECT_EQ(j["status"], 200);
  EXPECT_DOUBLE_EQ(j["latency_ms"].get<double>(), 12.3);
  EXPECT_EQ(j["prompt_tokens"], 38);
  EXPECT_EQ(j["completion_tokens"], 40);
  EXPECT_EQ(j["request_id"], "rec-abc");
  EXPECT_EQ(j["remote_addr"], "127.0.0.1");
  EXPECT_EQ(j["time"].get<std::string>().size(), std::string("2026-12-03T13:05:01.042Z").size());
}

TEST(AccessLogTest, JsonTokensAreNullWithoutAnEngineCall) {
  AccessEntry e{"GET", "/health", 200, 0.0001, -1, -1, "req-1", "::1"};
  const nlohmann::json j = nlohmann::json::parse(format_access_line(e, LogFormat::kJson));
  EXPECT_TRUE(j["prompt_tokens"].is_null());
  EXPECT_TRUE(j["completion_tokens"].is_null());
}

TEST(AccessLogTest, TextLineIsOneLineWithTheFields) {
  const std::string line = format_access_line(recommendation_entry(), LogFormat::kText);
  EXPECT_NE(line.find(" 127.0.0.1 \"POST /v1/recommendations\" 200 12.3ms prompt_tokens=38 "
                      "completion_tokens=40 request_id=rec-abc"),
            std::string::npos)
      << line;
  AccessEntry odd{"GET", "/a\nb\"c", 404, 0, -1, -1, "req-2", "127.0.0.1"};
  const std::string escaped = format_access_line(odd, LogFormat::kText);
  EXPECT_EQ(escaped.find('\n'), std::string::npos);
  EXPECT_NE(escaped.find("/a\\x0ab\\x22c"), std::string::npos) << escaped;
  EXPECT_EQ(escaped.find("tokens="), std::string::npos);
}

TEST(AccessLogTest, WritesOneLinePerEntry) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  AccessLog log(LogFormat::kJson, out);
  log.write(recommendation_entry());
  log.write(recommendation_entry());
  std::rewind(out);
  char buf[1024];
  int num_lines = 0;
  while (std::fgets(buf, sizeof(buf), out)) {
    EXPECT_EQ(nlohmann::json::parse(buf)["request_id"], "rec-abc");
    ++num_lines;
  }
  EXPECT_EQ(num_lines, 2);
  std::fclose(out);
}

TEST(AccessLogTest, KeepsOnlyPlainClientRequestIds) {
  EXPECT_TRUE(is_valid_request_id("3f2c-11ef.a:b_c"));
  EXPECT_TRUE(is_valid_request_id(std::string(128, 'a')));
  EXPECT_FALSE(is_valid_request_id(""));
  EXPECT_FALSE(is_valid_request_id(std::string(129, 'a')));
  EXPECT_FALSE(is_valid_request_id("a b"));
  EXPECT_FALSE(is_valid_request_id("a\r\nSet-Cookie: x"));
}

TEST(AccessLogTest, ParsesTheFormatOption) {
  EXPECT_EQ(*parse_log_format("json"), LogFormat::kJson);
  EXPECT_EQ(*parse_log_format("text"), LogFormat::kText);
  EXPECT_FALSE(parse_log_format("xml").ok());
}

}  // namespace
}  // namespace earnserve::api
