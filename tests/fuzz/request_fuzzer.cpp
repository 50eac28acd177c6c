// libFuzzer target over request parsing and validation: arbitrary bytes as the body of a POST
// route of the route table (api/service/routes.h: /v1/completions, /v1/chat/completions,
// /v1/recommendations, /tokenize, /detokenize; the first byte picks the route), parsed and, for
// the tokenizer endpoints, answered as the server does. Uses the real tokenizer and catalogue of
// the tiny-rec fixture; no engine. Any crash, sanitizer report or an accepted request that breaks
// the engine's limits is a bug.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "api/protocol/openai_protocol.h"
#include "api/service/routes.h"
#include "core/logging.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using earnserve::api::ApiOr;
using earnserve::api::ProtocolContext;

// What an accepted request promises the engine.
void check_request(const earnserve::EngineRequest& r, const ProtocolContext& ctx) {
  ES_CHECK(!r.prompt_token_ids.empty());
  ES_CHECK(static_cast<int>(r.prompt_token_ids.size()) < ctx.max_model_len);
  for (int32_t t : r.prompt_token_ids) ES_CHECK(t >= 0 && t < ctx.vocab_size);
  ES_CHECK(r.params.validate().ok());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const ProtocolContext& ctx = earnserve::fuzz::tiny_rec_context();
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  ApiOr<nlohmann::json> json = earnserve::api::parse_json_body(body);
  if (!json.ok()) {
    ES_CHECK(json.error().http_status == 400 || json.error().http_status == 422);
    return 0;
  }
  const std::span<const earnserve::api::Route> routes = earnserve::api::post_routes();
  const earnserve::api::Route& route = routes[data[0] % routes.size()];
  ApiOr<earnserve::api::ApiCall> call = earnserve::api::parse_call(route.endpoint, *json, ctx);
  if (!call.ok()) {
    ES_CHECK(call.error().http_status >= 400 && call.error().http_status < 500);
    ES_CHECK(!call.error().message.empty());
    return 0;
  }
  if (call->needs_engine()) {
    for (const auto& e : call->engine_requests("fuzz")) check_request(e, ctx);
  } else {
    (void)earnserve::api::immediate_response(*call, ctx)
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  return 0;
}
