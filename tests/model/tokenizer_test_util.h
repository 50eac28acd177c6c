// Helpers shared by the tokenizer tests: the shared tokenizer files, loaded once per process,
// and the committed reference fixtures of tools/make_tokenizer_fixtures.py.
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "model/tokenizer/tokenizer.h"

namespace earnserve::testing_util {

inline std::string shared_path(const std::string& relative) {
  return std::string(EARNSERVE_SHARED_DIR) + "/" + relative;
}

inline std::string tokenizer_dir(const std::string& name) {
  if (name == "tinystories") return shared_path("models/tinystories-656k");
  return shared_path("tokenizers/" + name);
}

// The tokenizer of `name` (qwen3, llama3, tinystories) loaded with from_dir, or nullptr after
// recording a test failure that says why.
inline const Tokenizer* load_tokenizer(const std::string& name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  std::lock_guard<std::mutex> lock(mu);
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second.get();
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer = Tokenizer::from_dir(tokenizer_dir(name));
  if (!tokenizer.ok()) {
    ADD_FAILURE() << "cannot load tokenizer " << name << ": " << tokenizer.status().to_string();
    return nullptr;
  }
  return (loaded[name] = std::move(tokenizer).value()).get();
}

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string();
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// The committed fixture tests/fixtures/tokenizer/<name>.json, or a null JSON after recording a
// failure.
inline nlohmann::json load_fixture(const std::string& name) {
  const std::string path =
      std::string(EARNSERVE_SOURCE_DIR) + "/tests/fixtures/tokenizer/" + name + ".json";
  std::string text = read_text_file(path);
  if (text.empty()) {
    ADD_FAILURE() << "missing fixture " << path << " (run tools/make_tokenizer_fixtures.py)";
    return nlohmann::json();
  }
  return nlohmann::json::parse(text);
}

}  // namespace earnserve::testing_util
