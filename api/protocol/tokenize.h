// The tokenizer family of the protocol (vLLM's /tokenize and /detokenize): a text, a prompt or
// chat messages -> token ids (with their token strings on request), and token ids -> text.
// Answered from the tokenizer alone, without the engine.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "api/protocol/fields.h"
#include "api/protocol/protocol_context.h"

namespace earnserve::api {

struct TokenizeRequest {
  std::vector<int32_t> tokens;
  bool return_token_strs = false;
};
ApiOr<TokenizeRequest> parse_tokenize_request(const nlohmann::json& body,
                                              const ProtocolContext& ctx);
// {"count", "max_model_len", "tokens"} and, with return_token_strs, "token_strs".
nlohmann::json tokenize_response(const TokenizeRequest& request, const ProtocolContext& ctx);

// The token ids of a /detokenize body.
ApiOr<std::vector<int32_t>> parse_detokenize_request(const nlohmann::json& body,
                                                     const ProtocolContext& ctx);
// {"prompt": the ids decoded, special tokens kept}.
nlohmann::json detokenize_response(const std::vector<int32_t>& tokens, const ProtocolContext& ctx);

}  // namespace earnserve::api
