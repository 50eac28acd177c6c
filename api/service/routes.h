// The route table of the API, written once: which POST path (or GET path answered from its query
// string) reaches which endpoint, how a body is parsed for it (ApiCall) and how its response is
// built. The HTTP server installs these routes
// and `earnserve batch` routes each line's url through them; both then run an engine call through
// api/service/submission.h.
// Free functions and immutable data; thread-safe as long as the context's pointees are.
#pragma once

#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "api/protocol/openai_protocol.h"

namespace earnserve::api {

enum class Endpoint {
  kCompletions,
  kChatCompletions,
  kRecommendations,
  kTokenize,
  kDetokenize,
  kItems
};

struct Route {
  const char* path;  // the POST (or GET) path
  Endpoint endpoint;
  const char* id_prefix;  // response ids are "<id_prefix>-<unique suffix>"
  bool in_batch;          // whether `earnserve batch` lines may name it
};

// Every POST route, in the order the server installs them.
std::span<const Route> post_routes();
// Every GET route whose query string is parsed as a body (an object of string values): /v1/items.
std::span<const Route> get_routes();
// The POST route at `path`, or null.
const Route* find_route(std::string_view path);
// "/v1/completions, /v1/chat/completions or /v1/recommendations": the paths batch lines may name.
std::string batch_paths();

struct DetokenizeRequest {
  std::vector<int32_t> tokens;
};

// A request body parsed for its endpoint.
struct ApiCall {
  Endpoint endpoint = Endpoint::kCompletions;
  std::variant<CompletionRequest, ParsedRecommendation, TokenizeRequest, DetokenizeRequest,
               ItemsRequest>
      request;

  // Whether the answer needs the engine (completions, chat and recommendations do).
  bool needs_engine() const;
  // The engine requests of an engine call: a completion's "<base_id>-<prompt index>", a
  // recommendation's "<base_id>". REQUIRES: needs_engine().
  std::vector<EngineRequest> engine_requests(const std::string& base_id) const;
  // The body field an engine refusal is blamed on ("prompt", "messages" or "history").
  const char* prompt_param() const;
  // Whether the client asked for server-sent events (completions and chat with stream=true).
  bool stream() const;
  // Answer with one response even when the body asked for a stream (batch lines).
  void disable_stream();
};

// Parses `body` for `endpoint`: every bad field is its ApiError.
ApiOr<ApiCall> parse_call(Endpoint endpoint, const nlohmann::json& body,
                          const ProtocolContext& ctx);

// The response body of a call that needs no engine (tokenize, detokenize, items).
// REQUIRES: !call.needs_engine().
nlohmann::json immediate_response(const ApiCall& call, const ProtocolContext& ctx);
// The response body of an engine call from the final output of each of its engine requests (in
// the order of call.engine_requests()). REQUIRES: call.needs_engine().
nlohmann::json final_response(const ApiCall& call, const ResponseMeta& meta,
                              const std::vector<RequestOutput>& outputs,
                              const ProtocolContext& ctx);

}  // namespace earnserve::api
