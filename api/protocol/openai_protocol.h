// The OpenAI-compatible wire protocol: JSON request bodies -> validated engine requests, engine
// outputs -> JSON responses and stream chunks, and every failure -> an OpenAI-style error
// `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
//
// Parsing needs no engine: what it must know about the model (name, context length, vocabulary
// size, tokenizer, catalogue, chat template) comes in a ProtocolContext, so the fuzzer and the
// unit tests drive it with a real tokenizer and plain limits.
//
// HTTP status policy:
//   400 a field has a bad value or a bad type, malformed JSON, invalid UTF-8, empty prompt,
//       prompt or max_tokens past the context, n or best_of past the limits, unknown item id;
//   404 unknown model or route;   413 body over --max-body-bytes;
//   422 well-formed JSON of the wrong shape (the body is not a JSON object);
//   429 the queue of in-flight requests is full;   503 shutting down or the engine failed.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/status.h"
#include "scheduler/recommendation/recommendation.h"
#include "scheduler/request.h"

namespace earnserve {
class ChatTemplate;
class Tokenizer;
}  // namespace earnserve

namespace earnserve::api {

struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // empty: null
  std::string code;   // empty: null

  nlohmann::json to_json() const;
};

ApiError bad_request(std::string message, std::string param = "");
// Maps an engine Status: InvalidArgument/ResourceExhausted/OutOfRange -> 400, NotFound -> 404,
// Unavailable -> 503, Aborted -> 499-style 400 never reaches a client, anything else -> 500.
ApiError error_from_status(const Status& status, std::string param = "");

// Either a T or an ApiError.
template <typename T>
class ApiOr {
 public:
  ApiOr(ApiError error) : value_(std::move(error)) {}  // NOLINT: implicit by design
  ApiOr(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  bool ok() const { return value_.index() == 0; }
  const ApiError& error() const { return std::get<1>(value_); }
  // REQUIRES: ok().
  T& operator*() { return std::get<0>(value_); }
  const T& operator*() const { return std::get<0>(value_); }
  T* operator->() { return &std::get<0>(value_); }
  const T* operator->() const { return &std::get<0>(value_); }

 private:
  std::variant<T, ApiError> value_;
};

// What parsing must know about the served model. Pointees are borrowed and outlive the parse.
struct ProtocolContext {
  std::string served_model_name;
  const Tokenizer* tokenizer = nullptr;  // required
  int max_model_len = 0;
  int vocab_size = 0;  // the model's; token ids must lie in [0, vocab_size)
  // The model's recommendation spec and catalogue; null when the model has none.
  std::shared_ptr<const RecommendationSpec> recommendation;
  std::shared_ptr<const ChatTemplate> chat_template;  // null: the model has none
  nlohmann::ordered_json chat_template_context;       // bos_token, eos_token, ... for the template
  // The loaded draft model of speculative beam search (draft_model = its directory) and the
  // server's defaults for N, gamma and verification; absent when the server has no draft.
  // Recommendations speculate by default; completions when their body has "speculative".
  std::optional<SpeculativeParams> speculative;
};

// A parsed /v1/completions or /v1/chat/completions request: one engine request per prompt.
struct CompletionRequest {
  bool chat = false;
  std::vector<std::vector<int32_t>> prompts;  // token ids of each prompt
  std::vector<std::string> prompt_texts;      // the text of each prompt (decoded for id prompts)
  SamplingParams params;
  int num_returned = 1;  // n: choices per prompt (best_of sampling asks the engine for more)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;
  bool chat_logprobs = false;                  // chat: logprobs=true
  std::shared_ptr<const Catalogue> catalogue;  // constrain_to_catalogue
  std::vector<int64_t> exclude_items;

  // The engine requests, with ids `<base_id>-<prompt index>`.
  std::vector<EngineRequest> engine_requests(const std::string& base_id) const;
};

// The body as a JSON object: 400 for invalid UTF-8 or malformed JSON, 422 for a non-object.
ApiOr<nlohmann::json> parse_json_body(const std::string& body);

// 404 unless `model` is absent, null or the served model name.
std::optional<ApiError> check_model(const nlohmann::json& body, const ProtocolContext& ctx);

ApiOr<CompletionRequest> parse_completion_request(const nlohmann::json& body,
                                                  const ProtocolContext& ctx);
ApiOr<CompletionRequest> parse_chat_request(const nlohmann::json& body, const ProtocolContext& ctx);

struct ParsedRecommendation {
  RecommendationQuery query;
  EngineRequest request;  // request_id left empty
};
ApiOr<ParsedRecommendation> parse_recommendation_request(const nlohmann::json& body,
                                                         const ProtocolContext& ctx);

struct TokenizeRequest {
  std::vector<int32_t> tokens;
  bool return_token_strs = false;
};
ApiOr<TokenizeRequest> parse_tokenize_request(const nlohmann::json& body,
                                              const ProtocolContext& ctx);
ApiOr<std::vector<int32_t>> parse_detokenize_request(const nlohmann::json& body,
                                                     const ProtocolContext& ctx);

// --- Responses. ---

struct ResponseMeta {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// Final outputs of every prompt of `request` (parallel to request.prompts) as one response.
nlohmann::json completion_response(const ResponseMeta& meta, const CompletionRequest& request,
                                   const std::vector<RequestOutput>& outputs,
                                   const Tokenizer& tokenizer);
// One streamed delta of prompt `prompt_index` as a chunk (choices may be empty).
nlohmann::json completion_chunk(const ResponseMeta& meta, const CompletionRequest& request,
                                int prompt_index, const RequestOutput& delta,
                                const Tokenizer& tokenizer);
// The chat stream's first chunk: role "assistant" for each choice.
nlohmann::json chat_role_chunk(const ResponseMeta& meta, int num_choices);
// The last chunk with usage only (stream_options.include_usage).
nlohmann::json usage_chunk(const ResponseMeta& meta, bool chat, int64_t prompt_tokens,
                           int64_t completion_tokens);
// Token counts; with kv_blocks (per KV group, the most pages the request held: EARN models have
// two groups, the layers below the split and the register/generated-token layers above it) also
// "kv_blocks".
// With `speculative` also "speculative": {"rounds", "accepted_steps", ...} (speculative_json in
// api/protocol/speculative_protocol.h).
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens,
                          std::span<const int> kv_blocks = {},
                          const std::optional<SpeculativeStats>& speculative = std::nullopt);
nlohmann::json recommendation_response(
    const ResponseMeta& meta, const std::vector<RecommendedItem>& items, int64_t prompt_tokens,
    int64_t completion_tokens, std::span<const int> kv_blocks,
    const std::optional<SpeculativeStats>& speculative = std::nullopt);

// Whether `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view text);

}  // namespace earnserve::api
