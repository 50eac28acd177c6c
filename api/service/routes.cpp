#include "api/service/routes.h"

#include <array>

namespace earnserve::api {

using nlohmann::json;

namespace {

// The fuzzer (tests/fuzz/request_fuzzer.cpp) picks an endpoint by its index here.
constexpr std::array<Route, 5> kPostRoutes = {{
    {"/v1/completions", Endpoint::kCompletions, "cmpl", true},
    {"/v1/chat/completions", Endpoint::kChatCompletions, "chatcmpl", true},
    {"/v1/recommendations", Endpoint::kRecommendations, "rec", true},
    {"/tokenize", Endpoint::kTokenize, "tok", false},
    {"/detokenize", Endpoint::kDetokenize, "detok", false},
}};

constexpr std::array<Route, 1> kGetRoutes = {{
    {"/v1/items", Endpoint::kItems, "items", false},
}};

}  // namespace

std::span<const Route> post_routes() { return kPostRoutes; }

std::span<const Route> get_routes() { return kGetRoutes; }

const Route* find_route(std::string_view path) {
  for (const Route& r : kPostRoutes) {
    if (path == r.path) return &r;
  }
  return nullptr;
}

std::string batch_paths() {
  std::vector<const char*> paths;
  for (const Route& r : kPostRoutes) {
    if (r.in_batch) paths.push_back(r.path);
  }
  std::string out;
  for (size_t i = 0; i < paths.size(); ++i) {
    if (i > 0) out += i + 1 == paths.size() ? " or " : ", ";
    out += paths[i];
  }
  return out;
}

bool ApiCall::needs_engine() const {
  return std::holds_alternative<CompletionRequest>(request) ||
         std::holds_alternative<ParsedRecommendation>(request);
}

std::vector<EngineRequest> ApiCall::engine_requests(const std::string& base_id) const {
  if (const auto* c = std::get_if<CompletionRequest>(&request)) return c->engine_requests(base_id);
  EngineRequest r = std::get<ParsedRecommendation>(request).request;
  r.request_id = base_id;
  std::vector<EngineRequest> out;
  out.push_back(std::move(r));
  return out;
}

const char* ApiCall::prompt_param() const {
  if (const auto* c = std::get_if<CompletionRequest>(&request)) {
    return c->chat ? "messages" : "prompt";
  }
  return std::holds_alternative<ParsedRecommendation>(request) ? "history" : "prompt";
}

bool ApiCall::stream() const {
  const auto* c = std::get_if<CompletionRequest>(&request);
  return c && c->stream;
}

void ApiCall::disable_stream() {
  if (auto* c = std::get_if<CompletionRequest>(&request)) c->stream = false;
}

ApiOr<ApiCall> parse_call(Endpoint endpoint, const json& body, const ProtocolContext& ctx) {
  auto wrap = [endpoint](auto parsed) -> ApiOr<ApiCall> {
    if (!parsed.ok()) return parsed.error();
    return ApiCall{endpoint, std::move(*parsed)};
  };
  switch (endpoint) {
    case Endpoint::kCompletions:
      return wrap(parse_completion_request(body, ctx));
    case Endpoint::kChatCompletions:
      return wrap(parse_chat_request(body, ctx));
    case Endpoint::kRecommendations:
      return wrap(parse_recommendation_request(body, ctx));
    case Endpoint::kTokenize:
      return wrap(parse_tokenize_request(body, ctx));
    case Endpoint::kItems:
      return wrap(parse_items_request(body, ctx));
    case Endpoint::kDetokenize: {
      ApiOr<std::vector<int32_t>> ids = parse_detokenize_request(body, ctx);
      if (!ids.ok()) return ids.error();
      return ApiCall{endpoint, DetokenizeRequest{std::move(*ids)}};
    }
  }
  return ApiError{500, "server_error", "unknown endpoint", "", "internal_error"};
}

json immediate_response(const ApiCall& call, const ProtocolContext& ctx) {
  if (const auto* t = std::get_if<TokenizeRequest>(&call.request)) {
    return tokenize_response(*t, ctx);
  }
  if (const auto* items = std::get_if<ItemsRequest>(&call.request)) {
    return items_response(*items, ctx);
  }
  return detokenize_response(std::get<DetokenizeRequest>(call.request).tokens, ctx);
}

json final_response(const ApiCall& call, const ResponseMeta& meta,
                    const std::vector<RequestOutput>& outputs, const ProtocolContext& ctx) {
  if (const auto* c = std::get_if<CompletionRequest>(&call.request)) {
    return completion_response(meta, *c, outputs, *ctx.tokenizer);
  }
  const ParsedRecommendation& rec = std::get<ParsedRecommendation>(call.request);
  const RequestOutput& out = outputs.front();
  int64_t completion_tokens = 0;
  for (const SequenceOutput& o : out.outputs) completion_tokens += o.token_ids.size();
  return recommendation_response(meta, ctx.recommendation->items(out),
                                 static_cast<int64_t>(rec.request.prompt_token_ids.size()),
                                 completion_tokens, out.metrics.peak_kv_blocks, out.speculative);
}

}  // namespace earnserve::api
