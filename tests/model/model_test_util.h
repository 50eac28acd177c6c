// Helpers shared by the model tests: where fixtures live, reading the reference-logit JSON files
// written by tools/make_fixtures.py, writing (possibly broken) safetensors files, and scratch
// directories. Header-only; not thread-safe.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace earnserve::testing {

inline std::string source_path(const std::string& rel) {
  return std::string(EARNSERVE_SOURCE_DIR) + "/" + rel;
}
inline std::string shared_path(const std::string& rel) {
  return std::string(EARNSERVE_SHARED_DIR) + "/" + rel;
}
inline std::string tinystories_dir() { return shared_path("models/tinystories-656k"); }
inline std::string fixture_model_dir(const std::string& name) {
  return source_path("tests/fixtures/models/" + name);
}

// Reads a JSON file; fails the calling test (and returns null) when it is missing or malformed.
inline nlohmann::json read_json_or_fail(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "missing fixture " << path << " (regenerate with tools/make_fixtures.py)";
    return nullptr;
  }
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) ADD_FAILURE() << "malformed JSON in " << path;
  return j;
}

// The reference file tests/fixtures/logits/<name>.json, with its model directory resolved.
struct LogitsFixture {
  nlohmann::json doc;
  std::string model_dir;
};
inline LogitsFixture load_logits_fixture(const std::string& name) {
  LogitsFixture f;
  f.doc = read_json_or_fail(source_path("tests/fixtures/logits/" + name + ".json"));
  if (f.doc.is_null()) return f;
  std::string dir = f.doc.at("model_dir").get<std::string>();
  const std::string shared_prefix = "shared:";
  f.model_dir = dir.rfind(shared_prefix, 0) == 0 ? shared_path(dir.substr(shared_prefix.size()))
                                                 : source_path(dir);
  return f;
}

// The criterion of every logit comparison: |a - b| <= tol * max(1, |b|), b the reference.
inline ::testing::AssertionResult logits_close(const float* actual,
                                               const std::vector<float>& expected, double tol,
                                               const std::string& what) {
  for (size_t i = 0; i < expected.size(); ++i) {
    double a = actual[i], b = expected[i];
    if (!(std::abs(a - b) <= tol * std::max(1.0, std::abs(b)))) {
      return ::testing::AssertionFailure()
             << what << ": logit " << i << " is " << a << ", transformers gives " << b;
    }
  }
  return ::testing::AssertionSuccess();
}

// A fresh empty directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "earnserve_model_XXXXXX").string();
    char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// One tensor to write: dtype is the safetensors name ("F32", "BF16", ...), data its raw bytes.
struct RawTensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string data;
};

// The bytes of a safetensors file holding `tensors` back to back, header padded to 8 bytes.
inline std::string safetensors_bytes(const std::vector<RawTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const RawTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.data.size()}}};
    data += t.data;
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text += ' ';
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text + data;
}

inline std::string f32_bytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

}  // namespace earnserve::testing
