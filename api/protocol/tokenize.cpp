#include "api/protocol/tokenize.h"

#include "api/protocol/completions.h"
#include "model/tokenizer/tokenizer.h"

namespace earnserve::api {

using nlohmann::json;

ApiOr<TokenizeRequest> parse_tokenize_request(const json& body, const ProtocolContext& ctx) {
  ES_API_RETURN_IF(check_model(body, ctx));
  TokenizeRequest out;
  FieldReader f(body);
  bool add_special = true;
  ES_API_RETURN_IF(f.read_bool("add_special_tokens", add_special));
  ES_API_RETURN_IF(f.read_bool("return_token_strs", out.return_token_strs));
  if (f.present("messages")) {
    json chat = body;
    chat.erase("max_tokens");
    ApiOr<CompletionRequest> c = parse_chat_request(chat, ctx);
    if (!c.ok()) return c.error();
    out.tokens = c->prompts.front();
    return out;
  }
  if (!f.present("prompt") || !body["prompt"].is_string()) {
    return bad_request("prompt must be a string", "prompt");
  }
  const std::string text = body["prompt"].get<std::string>();
  ES_API_RETURN_IF(check_text(text, "prompt"));
  out.tokens = ctx.tokenizer->encode(text, add_special);
  return out;
}

ApiOr<std::vector<int32_t>> parse_detokenize_request(const json& body, const ProtocolContext& ctx) {
  ES_API_RETURN_IF(check_model(body, ctx));
  if (!body.contains("tokens") || !body["tokens"].is_array()) {
    return bad_request("tokens must be a list of token ids", "tokens");
  }
  std::vector<int32_t> ids;
  ES_API_RETURN_IF(check_token_ids(body["tokens"], ctx, "tokens", ids));
  return ids;
}

json tokenize_response(const TokenizeRequest& request, const ProtocolContext& ctx) {
  json out = {{"count", request.tokens.size()},
              {"max_model_len", ctx.max_model_len},
              {"tokens", request.tokens}};
  if (request.return_token_strs) {
    json strs = json::array();
    for (int32_t id : request.tokens) strs.push_back(ctx.tokenizer->id_to_token(id));
    out["token_strs"] = strs;
  }
  return out;
}

json detokenize_response(const std::vector<int32_t>& tokens, const ProtocolContext& ctx) {
  return {{"prompt", ctx.tokenizer->decode(tokens, /*skip_special_tokens=*/false)}};
}

}  // namespace earnserve::api
