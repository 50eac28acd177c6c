// Access control of the HTTP server: which paths need a key, which Authorization headers are
// accepted, and the OpenAI-shaped 401.
#include "api/server/api_keys.h"

#include <gtest/gtest.h>

namespace earnserve::api {
namespace {

TEST(ApiKeysTest, WithoutKeysEverythingIsAccepted) {
  ApiKeys keys;
  EXPECT_FALSE(keys.enabled());
  EXPECT_TRUE(keys.accepts(""));
  EXPECT_TRUE(keys.accepts("Bearer anything"));
}

TEST(ApiKeysTest, AcceptsOnlyBearerWithOneOfTheKeys) {
  ApiKeys keys({"sk-first", "second-key"});
  EXPECT_TRUE(keys.enabled());
  EXPECT_TRUE(keys.accepts("Bearer sk-first"));
  EXPECT_TRUE(keys.accepts("Bearer second-key"));
  EXPECT_TRUE(keys.accepts("bearer sk-first"));
  EXPECT_TRUE(keys.accepts("BEARER   sk-first  "));
  EXPECT_FALSE(keys.accepts(""));
  EXPECT_FALSE(keys.accepts("Bearer"));
  EXPECT_FALSE(keys.accepts("Bearer "));
  EXPECT_FALSE(keys.accepts("Bearer sk-firs"));
  EXPECT_FALSE(keys.accepts("Bearer sk-first2"));
  EXPECT_FALSE(keys.accepts("Bearer sk-firstsk-first"));
  EXPECT_FALSE(keys.accepts("Bearer SK-FIRST"));
  EXPECT_FALSE(keys.accepts("Basic sk-first"));
  EXPECT_FALSE(keys.accepts("sk-first"));
  EXPECT_FALSE(keys.accepts("Bearer sk-first second-key"));
}

TEST(ApiKeysTest, ProtectsEveryPathButHealthAndOptionallyMetrics) {
  for (const char* path :
       {"/v1/completions", "/v1/chat/completions", "/v1/recommendations", "/v1/models",
        "/v1/unknown", "/tokenize", "/detokenize", "/other", "/v1/items", "/index.html"}) {
    EXPECT_TRUE(ApiKeys::protects(path, false)) << path;
  }
  EXPECT_FALSE(ApiKeys::protects("/health", false));
  EXPECT_FALSE(ApiKeys::protects("/health", true));
  EXPECT_FALSE(ApiKeys::protects("/metrics", false));
  EXPECT_TRUE(ApiKeys::protects("/metrics", true));
  EXPECT_FALSE(ApiKeys::protects("/", false));  // the playground page; its API calls need keys
}

TEST(ApiKeysTest, UnauthorizedIsAnOpenAiStyle401) {
  const ApiError missing = ApiKeys::unauthorized("");
  EXPECT_EQ(missing.http_status, 401);
  EXPECT_EQ(missing.code, "invalid_api_key");
  EXPECT_NE(missing.message.find("didn't provide an API key"), std::string::npos);
  const nlohmann::json body = ApiKeys::unauthorized("Bearer wrong").to_json();
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], "invalid_api_key");
  EXPECT_TRUE(body["error"]["param"].is_null());
  EXPECT_EQ(body["error"]["message"], "Incorrect API key provided.");
  // The key sent is never echoed back.
  EXPECT_EQ(ApiKeys::unauthorized("Token secret").message.find("secret"), std::string::npos);
}

}  // namespace
}  // namespace earnserve::api
