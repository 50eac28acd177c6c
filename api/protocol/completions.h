// The completions family of the OpenAI-compatible protocol: /v1/completions and
// /v1/chat/completions bodies -> a CompletionRequest (one engine request per prompt; chat renders
// its messages through the model's chat template), and the engine's outputs -> the response, or
// the server-sent-event chunks of a streamed request.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/protocol/fields.h"
#include "api/protocol/protocol_context.h"
#include "scheduler/request.h"

namespace earnserve {
class Catalogue;
class Tokenizer;
}  // namespace earnserve

namespace earnserve::api {

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

ApiOr<CompletionRequest> parse_completion_request(const nlohmann::json& body,
                                                  const ProtocolContext& ctx);
ApiOr<CompletionRequest> parse_chat_request(const nlohmann::json& body, const ProtocolContext& ctx);

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
// The echoed prompts of a streamed completion with echo=true: one choice per returned sequence.
nlohmann::json echo_chunk(const ResponseMeta& meta, const CompletionRequest& request);
// The last chunk with usage only (stream_options.include_usage).
nlohmann::json usage_chunk(const ResponseMeta& meta, bool chat, int64_t prompt_tokens,
                           int64_t completion_tokens);

}  // namespace earnserve::api
