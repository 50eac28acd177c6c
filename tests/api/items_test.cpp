// GET /v1/items: the query parameters (each a string, a repeated one an array) and the catalogue
// search by title or item id. Real catalogue and titles of the tiny-rec fixture; no engine.
#include "api/protocol/items.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "api/service/routes.h"
#include "tiny_rec_protocol_test.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

class ItemsTest : public TinyRecProtocolTest {
 protected:
  static json answer(const json& query) {
    ApiOr<ItemsRequest> r = parse_items_request(query, base_context());
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? items_response(*r, base_context()) : json();
  }
  static ApiError refusal(const json& query, const ProtocolContext& ctx = base_context()) {
    ApiOr<ItemsRequest> r = parse_items_request(query, ctx);
    EXPECT_FALSE(r.ok()) << query.dump();
    return r.ok() ? ApiError{} : r.error();
  }
  // Titles containing `needle` (lower-case) in titles.tsv, counted independently of the code.
  static size_t count_titles(const std::string& needle) {
    std::ifstream in(kModelDir + "/titles.tsv");
    size_t n = 0;
    for (std::string line; std::getline(in, line);) {
      std::string title = line.substr(line.find('\t') + 1);
      for (char& c : title) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (title.find(needle) != std::string::npos) ++n;
    }
    return n;
  }
};

TEST_F(ItemsTest, SearchesTitlesCaseInsensitivelyInCatalogueOrder) {
  const json page = answer({{"search", "EUCERIN"}, {"limit", "5"}});
  EXPECT_EQ(page["object"], "list");
  EXPECT_EQ(page["total"], count_titles("eucerin"));
  ASSERT_EQ(page["data"].size(), 5u);
  EXPECT_EQ(page["data"][0]["item_id"], "0");
  EXPECT_EQ(page["data"][0]["title"],
            "Eucerin Redness Relief Soothing Cleanser 6.8 fl oz (200 ml)");
  EXPECT_EQ(page["data"][0]["identifier"], "<a_47><b_103><c_234><d_99>");
  // Catalogue order (catalogue.json's), the rest of the matches after the first.
  const Catalogue& catalogue = base_context().recommendation->catalogue();
  std::vector<std::string> expected;
  for (size_t i = 0; i < catalogue.num_items() && expected.size() < 5; ++i) {
    std::string title = catalogue.item(i).title;
    for (char& c : title) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (title.find("eucerin") != std::string::npos) expected.push_back(catalogue.item(i).id);
  }
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(page["data"][i]["item_id"], expected[i]) << i;
  for (const json& item : page["data"]) {
    std::string title = item["title"];
    for (char& c : title) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_NE(title.find("eucerin"), std::string::npos) << title;
  }
}

TEST_F(ItemsTest, PagesWithOffsetAndLimit) {
  const json first = answer({{"search", "eucerin"}, {"limit", "2"}});
  const json second = answer({{"search", "eucerin"}, {"limit", "2"}, {"offset", "1"}});
  ASSERT_EQ(second["data"].size(), 2u);
  EXPECT_EQ(second["data"][0], first["data"][1]);
  const json past = answer({{"search", "eucerin"}, {"offset", "100000"}});
  EXPECT_TRUE(past["data"].empty());
  EXPECT_EQ(past["total"], first["total"]);
}

TEST_F(ItemsTest, AnExactItemIdComesFirstAndNoSearchListsTheCatalogue) {
  const json by_id = answer({{"search", "662"}, {"limit", "1"}});
  ASSERT_EQ(by_id["data"].size(), 1u);
  EXPECT_EQ(by_id["data"][0]["item_id"], "662");
  const json all = answer(json::object());
  EXPECT_EQ(all["total"], base_context().recommendation->catalogue().num_items());
  EXPECT_EQ(all["data"].size(), 20u);  // the default limit
  EXPECT_TRUE(answer({{"search", "no title has this text"}})["data"].empty());
}

TEST_F(ItemsTest, RefusesBadParametersNamingThem) {
  EXPECT_EQ(refusal({{"limit", "0"}}).param, "limit");
  EXPECT_EQ(refusal({{"limit", "101"}}).param, "limit");
  EXPECT_EQ(refusal({{"limit", "ten"}}).param, "limit");
  EXPECT_EQ(refusal({{"limit", "5x"}}).param, "limit");
  EXPECT_EQ(refusal({{"limit", ""}}).param, "limit");
  EXPECT_EQ(refusal({{"offset", "-1"}}).param, "offset");
  EXPECT_EQ(refusal({{"limit", json::array({"1", "2"})}}).message, "limit must be given once");
  EXPECT_EQ(refusal({{"search", std::string(257, 'a')}}).param, "search");
  EXPECT_EQ(refusal({{"search", "\xff\xfe"}}).param, "search");
  const ApiError unknown = refusal({{"q", "soap"}});
  EXPECT_EQ(unknown.http_status, 400);
  EXPECT_EQ(unknown.param, "q");
}

TEST_F(ItemsTest, AModelWithoutCatalogueHasNoItems) {
  ProtocolContext ctx = base_context();
  ctx.recommendation = nullptr;
  const ApiError e = refusal({{"search", "soap"}}, ctx);
  EXPECT_EQ(e.http_status, 400);
  EXPECT_NE(e.message.find("no catalogue"), std::string::npos);
}

TEST_F(ItemsTest, IsTheGetRouteOfTheRouteTable) {
  ASSERT_EQ(get_routes().size(), 1u);
  EXPECT_STREQ(get_routes()[0].path, "/v1/items");
  EXPECT_FALSE(get_routes()[0].in_batch);
  EXPECT_EQ(find_route("/v1/items"), nullptr);  // not a POST route
  ApiOr<ApiCall> call = parse_call(Endpoint::kItems, {{"search", "soap"}}, base_context());
  ASSERT_TRUE(call.ok());
  EXPECT_FALSE(call->needs_engine());
  EXPECT_EQ(immediate_response(*call, base_context())["object"], "list");
}

}  // namespace
}  // namespace earnserve::api
