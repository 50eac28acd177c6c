#include "scheduler/recommendation/catalogue.h"

#include <gtest/gtest.h>

namespace earnserve {
namespace {

std::shared_ptr<const Catalogue> small_catalogue() {
  std::vector<CatalogueItem> items = {
      {"a", "", {10, 20, 30}, ""}, {"b", "", {10, 20, 31}, ""}, {"c", "", {10, 21, 30}, ""},
      {"d", "", {11, 20, 30}, ""}, {"e", "", {10, 20, 30}, ""},  // shares a's identifier
  };
  auto c = Catalogue::from_items(items);
  EXPECT_TRUE(c.ok());
  return *c;
}

TEST(CatalogueTest, AllowsOnlyContinuationsOfRealItems) {
  auto c = small_catalogue();
  std::vector<int32_t> allowed;
  c->allowed_tokens(Catalogue::kRoot, nullptr, 2, allowed);
  EXPECT_EQ(allowed, (std::vector<int32_t>{10, 11}));
  int32_t n = c->walk(std::vector<int32_t>{10, 20});
  c->allowed_tokens(n, nullptr, 2, allowed);
  EXPECT_EQ(allowed, (std::vector<int32_t>{30, 31}));
  int32_t leaf = c->walk(std::vector<int32_t>{10, 20, 30});
  c->allowed_tokens(leaf, nullptr, 2, allowed);
  EXPECT_EQ(allowed, (std::vector<int32_t>{2}));  // only end-of-sequence after a full identifier
  EXPECT_EQ(c->terminal_items(leaf).size(), 2u);
  EXPECT_EQ(c->walk(std::vector<int32_t>{11, 21}), -1);
  EXPECT_EQ(c->nodes_per_depth(), (std::vector<size_t>{2, 3, 4}));
}

TEST(CatalogueTest, ExclusionRemovesExhaustedBranches) {
  auto c = small_catalogue();
  std::vector<int64_t> excluded = {c->find_item("d"), c->find_item("b")};
  CatalogueExclusion ex(*c, excluded);
  std::vector<int32_t> allowed;
  c->allowed_tokens(Catalogue::kRoot, &ex, 2, allowed);
  EXPECT_EQ(allowed, (std::vector<int32_t>{10}));  // d was the only item under 11
  c->allowed_tokens(c->walk(std::vector<int32_t>{10, 20}), &ex, 2, allowed);
  EXPECT_EQ(allowed, (std::vector<int32_t>{30}));
  // a and e share an identifier: excluding one keeps the other reachable.
  std::vector<int64_t> only_a = {c->find_item("a")};
  CatalogueExclusion ex_a(*c, only_a);
  c->allowed_tokens(c->walk(std::vector<int32_t>{10, 20, 30}), &ex_a, 2, allowed);
  EXPECT_EQ(allowed, (std::vector<int32_t>{2}));
}

TEST(CatalogueTest, ForcedToEndWhenOnlyOnePathIsLeft) {
  auto c = small_catalogue();
  CatalogueConstraint all(c, {}, 2);
  auto node = [&](std::vector<int32_t> prefix) { return c->walk(prefix); };
  EXPECT_FALSE(all.forced_to_end(Catalogue::kRoot));
  EXPECT_FALSE(all.forced_to_end(node({10})));
  EXPECT_FALSE(all.forced_to_end(node({10, 20})));     // 30 or 31
  EXPECT_TRUE(all.forced_to_end(node({10, 21})));      // 30, then the end
  EXPECT_TRUE(all.forced_to_end(node({11})));          // 20, 30, the end
  EXPECT_TRUE(all.forced_to_end(node({10, 20, 30})));  // two items, one identifier: the end
  // Exclusions prune the other branches: with d and b excluded, 10 20 leads only to 30.
  std::vector<int64_t> excluded = {c->find_item("d"), c->find_item("b")};
  CatalogueConstraint some(c, excluded, 2);
  EXPECT_TRUE(some.forced_to_end(node({10, 20})));
  EXPECT_FALSE(some.forced_to_end(node({10})));  // 20 or 21
  // An item that ends where another goes on: the end-of-item token or the next one.
  std::vector<CatalogueItem> nested = {{"x", "", {5}, ""}, {"y", "", {5, 6}, ""}};
  auto n = Catalogue::from_items(nested);
  ASSERT_TRUE(n.ok());
  CatalogueConstraint on_nested(*n, {}, 2);
  EXPECT_FALSE(on_nested.forced_to_end((*n)->walk(std::vector<int32_t>{5})));
  EXPECT_TRUE(on_nested.forced_to_end((*n)->walk(std::vector<int32_t>{5, 6})));
}

TEST(CatalogueTest, RejectsDuplicateIds) {
  std::vector<CatalogueItem> items = {{"a", "", {1}, ""}, {"a", "", {2}, ""}};
  EXPECT_FALSE(Catalogue::from_items(items).ok());
}

}  // namespace
}  // namespace earnserve
