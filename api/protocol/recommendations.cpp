#include "api/protocol/recommendations.h"

#include <algorithm>

#include "api/protocol/speculative_protocol.h"
#include "model/tokenizer/tokenizer.h"

namespace earnserve::api {

using nlohmann::json;

ApiOr<ParsedRecommendation> parse_recommendation_request(const json& body,
                                                         const ProtocolContext& ctx) {
  ES_API_RETURN_IF(check_model(body, ctx));
  if (!ctx.recommendation) {
    return bad_request("the model has no recommendation.json; recommendations are unavailable");
  }
  const Catalogue& catalogue = ctx.recommendation->catalogue();
  ParsedRecommendation out;
  RecommendationQuery& q = out.query;
  FieldReader f(body);
  auto read_ids = [&](const char* name, std::vector<std::string>& ids) -> std::optional<ApiError> {
    if (!f.present(name)) return std::nullopt;
    const json& list = body[name];
    if (!list.is_array())
      return bad_request(std::string(name) + " must be a list of item ids", name);
    for (const json& e : list) {
      if (!e.is_string() && !e.is_number_integer()) {
        return bad_request(std::string(name) + " must be a list of item ids", name);
      }
      std::string id = e.is_string() ? e.get<std::string>() : e.dump();
      if (catalogue.find_item(id) < 0) return bad_request("unknown item id '" + id + "'", name);
      ids.push_back(std::move(id));
    }
    return std::nullopt;
  };
  ES_API_RETURN_IF(read_ids("history", q.history));
  ES_API_RETURN_IF(read_ids("exclude_items", q.exclude_items));
  if (f.present("prompt")) {
    if (!body["prompt"].is_string()) return bad_request("prompt must be a string", "prompt");
    q.prompt = body["prompt"].get<std::string>();
    ES_API_RETURN_IF(check_text(q.prompt, "prompt"));
    if (q.prompt.empty()) return bad_request("prompt must not be empty", "prompt");
  }
  if (q.prompt.empty() && q.history.empty()) {
    return bad_request("give a non-empty history or a prompt", "history");
  }
  ES_API_RETURN_IF(f.read_int("top_k", 1, kMaxBeamWidth, q.top_k));
  ES_API_RETURN_IF(f.read_int("beam_width", 0, kMaxBeamWidth, q.beam_width));
  if (q.beam_width != 0 && q.beam_width < q.top_k) {
    return bad_request("beam_width must be at least top_k", "beam_width");
  }
  ES_API_RETURN_IF(f.read_bool("exclude_history", q.exclude_history));
  if (f.present("score_over")) {
    const json& s = body["score_over"];
    std::optional<ScoreOver> score_over =
        s.is_string() ? parse_score_over(s.get<std::string>()) : std::nullopt;
    if (!score_over) {
      return bad_request("score_over must be \"vocabulary\" or \"catalogue\"", "score_over");
    }
    q.score_over = *score_over;
  }
  StatusOr<EngineRequest> r = ctx.recommendation->make_request(q, *ctx.tokenizer, "");
  if (!r.ok()) return error_from_status(r.status());
  // Catalogue scoring renormalises the target's own steps: no draft takes part.
  ES_API_RETURN_IF(read_speculative_field(
      body, ctx, /*by_default=*/q.score_over == ScoreOver::kVocabulary, r->params));
  if (f.present("seed")) {  // relaxed speculative verification samples
    const json& s = body["seed"];
    if (!s.is_number_integer()) return bad_request("seed must be an integer", "seed");
    r->params.seed = static_cast<uint64_t>(s.get<int64_t>());
  }
  const int64_t len = static_cast<int64_t>(r->prompt_token_ids.size());
  if (len + r->params.max_tokens > ctx.max_model_len) {
    return bad_request("the prompt has " + std::to_string(len) +
                           " tokens; with the item identifier it exceeds the context of " +
                           std::to_string(ctx.max_model_len),
                       q.prompt.empty() ? "history" : "prompt");
  }
  std::vector<int64_t> distinct = r->exclude_items;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (catalogue.num_items() - distinct.size() < static_cast<size_t>(q.top_k)) {
    return bad_request("fewer than top_k catalogue items remain after the exclusions", "top_k");
  }
  out.request = std::move(*r);
  return out;
}

json recommendation_response(const ResponseMeta& meta, const std::vector<RecommendedItem>& items,
                             int64_t prompt_tokens, int64_t completion_tokens,
                             std::span<const int> kv_blocks,
                             const std::optional<SpeculativeStats>& speculative) {
  json list = json::array();
  for (const RecommendedItem& it : items) {
    list.push_back({{"item_id", it.item_id},
                    {"score", it.score},
                    {"identifier", it.identifier},
                    {"title", it.title}});
  }
  return {{"id", meta.id},
          {"object", "recommendation"},
          {"created", meta.created},
          {"model", meta.model},
          {"items", list},
          {"usage", usage_json(prompt_tokens, completion_tokens, kv_blocks, speculative)}};
}

}  // namespace earnserve::api
