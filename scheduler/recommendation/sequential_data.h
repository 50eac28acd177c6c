// Sequential recommendation data in the LC-Rec / AtSpeed layout (sequential_{train,valid,test}.txt,
// `user item item ...`, items counting from 1; catalogue keys count from 0) and the papers' test
// protocol (../shared/datasets/README.md): history = train + valid items, last 20; targets = the
// test items. Used by `earnserve eval`, the benchmarks and tests. Header-only; stateless.
#pragma once

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace earnserve::data {

struct TestUser {
  int user = 0;
  std::vector<std::string> history;  // catalogue keys, oldest first
  std::vector<std::string> targets;
};

inline std::map<int, std::vector<int>> read_sequences(const std::string& path) {
  std::map<int, std::vector<int>> users;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    int user;
    if (!(ls >> user)) continue;
    auto& items = users[user];
    int item;
    while (ls >> item) items.push_back(item);
  }
  return users;
}

// Empty when the files are missing (callers report it).
inline std::vector<TestUser> test_users(const std::string& data_dir, int history_limit = 20) {
  auto train = read_sequences(data_dir + "/sequential_train.txt");
  auto valid = read_sequences(data_dir + "/sequential_valid.txt");
  auto test = read_sequences(data_dir + "/sequential_test.txt");
  std::vector<TestUser> out;
  for (auto& [user, targets] : test) {
    if (targets.empty()) continue;
    TestUser u;
    u.user = user;
    std::vector<int> h = train[user];
    h.insert(h.end(), valid[user].begin(), valid[user].end());
    if (static_cast<int>(h.size()) > history_limit) h.erase(h.begin(), h.end() - history_limit);
    // Items in the .txt files count from 1, catalogue keys from 0.
    for (int i : h) u.history.push_back(std::to_string(i - 1));
    for (int i : targets) u.targets.push_back(std::to_string(i - 1));
    out.push_back(std::move(u));
  }
  return out;
}

}  // namespace earnserve::data
