#include "api/protocol/items.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string_view>

#include "scheduler/recommendation/recommendation.h"

namespace earnserve::api {

using nlohmann::json;

namespace {

constexpr const char* kParams = "search, limit and offset";

// A query parameter as one string; 400 when it was given more than once.
ApiOr<std::string> single_value(const json& query, const char* name) {
  const json& v = query[name];
  if (!v.is_string()) return bad_request(std::string(name) + " must be given once", name);
  return v.get<std::string>();
}

// A decimal integer parameter in [min, max].
std::optional<ApiError> read_count(const json& query, const char* name, int min, int max,
                                   int& out) {
  if (!query.contains(name)) return std::nullopt;
  ApiOr<std::string> text = single_value(query, name);
  if (!text.ok()) return text.error();
  int value = 0;
  const char* end = text->data() + text->size();
  auto [ptr, ec] = std::from_chars(text->data(), end, value);
  if (text->empty() || ec != std::errc() || ptr != end || value < min || value > max) {
    return bad_request(std::string(name) + " must be an integer in [" + std::to_string(min) + ", " +
                           std::to_string(max) + "], got '" + *text + "'",
                       name);
  }
  out = value;
  return std::nullopt;
}

char lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

// Whether `text` contains `needle_lower` (already lower-case), ASCII case-insensitively.
bool contains_folded(std::string_view text, std::string_view needle_lower) {
  auto it = std::search(text.begin(), text.end(), needle_lower.begin(), needle_lower.end(),
                        [](char a, char b) { return lower(a) == b; });
  return it != text.end();
}

json item_json(const CatalogueItem& item) {
  return {{"item_id", item.id}, {"title", item.title}, {"identifier", item.identifier}};
}

}  // namespace

ApiOr<ItemsRequest> parse_items_request(const json& query, const ProtocolContext& ctx) {
  for (const auto& [name, value] : query.items()) {
    if (name != "search" && name != "limit" && name != "offset") {
      return bad_request("unknown parameter '" + name + "'; /v1/items takes " + kParams, name);
    }
  }
  if (!ctx.recommendation) {
    return bad_request("the model has no recommendation.json; it has no catalogue to list");
  }
  ItemsRequest out;
  if (query.contains("search")) {
    ApiOr<std::string> search = single_value(query, "search");
    if (!search.ok()) return search.error();
    ES_API_RETURN_IF(check_text(*search, "search"));
    if (search->size() > kMaxItemsSearchBytes) {
      return bad_request(
          "search must be at most " + std::to_string(kMaxItemsSearchBytes) + " bytes", "search");
    }
    out.search = std::move(*search);
  }
  ES_API_RETURN_IF(read_count(query, "limit", 1, kMaxItemsLimit, out.limit));
  ES_API_RETURN_IF(read_count(query, "offset", 0, 1 << 30, out.offset));
  return out;
}

json items_response(const ItemsRequest& request, const ProtocolContext& ctx) {
  const Catalogue& catalogue = ctx.recommendation->catalogue();
  std::string needle = request.search;
  std::transform(needle.begin(), needle.end(), needle.begin(), lower);
  const int64_t exact = request.search.empty() ? -1 : catalogue.find_item(request.search);
  std::vector<size_t> matches;
  if (exact >= 0) matches.push_back(static_cast<size_t>(exact));
  for (size_t i = 0; i < catalogue.num_items(); ++i) {
    if (static_cast<int64_t>(i) == exact) continue;
    if (needle.empty() || contains_folded(catalogue.item(i).title, needle)) matches.push_back(i);
  }
  json data = json::array();
  const size_t begin = std::min(matches.size(), static_cast<size_t>(request.offset));
  const size_t end = std::min(matches.size(), begin + static_cast<size_t>(request.limit));
  for (size_t i = begin; i < end; ++i) data.push_back(item_json(catalogue.item(matches[i])));
  return {{"object", "list"},
          {"data", data},
          {"total", matches.size()},
          {"offset", request.offset},
          {"limit", request.limit}};
}

}  // namespace earnserve::api
