// The recommendations family (earnserve extension to the OpenAI protocol): a
// /v1/recommendations body (a history of item ids and/or a prompt, top_k, beam_width,
// exclusions, speculation) -> a catalogue-constrained beam search request, and its finished
// output -> the ranked items with their scores.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <vector>

#include "api/protocol/fields.h"
#include "api/protocol/protocol_context.h"
#include "scheduler/recommendation/recommendation.h"
#include "scheduler/request.h"

namespace earnserve::api {

struct ParsedRecommendation {
  RecommendationQuery query;
  EngineRequest request;  // request_id left empty
};
ApiOr<ParsedRecommendation> parse_recommendation_request(const nlohmann::json& body,
                                                         const ProtocolContext& ctx);

nlohmann::json recommendation_response(
    const ResponseMeta& meta, const std::vector<RecommendedItem>& items, int64_t prompt_tokens,
    int64_t completion_tokens, std::span<const int> kv_blocks,
    const std::optional<SpeculativeStats>& speculative = std::nullopt);

}  // namespace earnserve::api
