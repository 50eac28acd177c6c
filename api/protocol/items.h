// The catalogue family of the protocol (earnserve extension): GET /v1/items lists the served
// recommendation model's catalogue items, optionally only those whose title contains a search
// text (ASCII case-insensitive) or whose id equals it, so that a client (the playground page,
// api/server/playground.html) can turn titles into the item ids a /v1/recommendations history
// takes. Answered from the catalogue alone, without the engine.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "api/protocol/fields.h"
#include "api/protocol/protocol_context.h"

namespace earnserve::api {

inline constexpr int kMaxItemsLimit = 100;
inline constexpr size_t kMaxItemsSearchBytes = 256;

struct ItemsRequest {
  std::string search;  // empty: every item
  int limit = 20;      // items returned at most, in [1, kMaxItemsLimit]
  int offset = 0;      // matches skipped first (paging)
};

// The query parameters of GET /v1/items as a JSON object of strings (a parameter given more than
// once is an array of its values): search, limit, offset. 400 naming the parameter for an unknown
// or repeated one, a limit or offset that is not a number in range, a search that is not UTF-8 or
// is longer than kMaxItemsSearchBytes, or a model without a catalogue.
ApiOr<ItemsRequest> parse_items_request(const nlohmann::json& query, const ProtocolContext& ctx);

// {"object": "list", "data": [{"item_id", "title", "identifier"}], "total", "offset", "limit"}:
// the matches in catalogue order (an exact item id first), `total` counting all of them.
// REQUIRES: ctx.recommendation (parse_items_request checked it).
nlohmann::json items_response(const ItemsRequest& request, const ProtocolContext& ctx);

}  // namespace earnserve::api
