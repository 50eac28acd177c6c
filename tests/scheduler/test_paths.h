// Paths of the fixtures and shared data the scheduler tests read.
#pragma once

#include <filesystem>
#include <string>

namespace earnserve::testing {

inline std::string source_path(const std::string& rel) {
  return std::string(EARNSERVE_SOURCE_DIR) + "/" + rel;
}
inline std::string shared_path(const std::string& rel) {
  return std::string(EARNSERVE_SHARED_DIR) + "/" + rel;
}
inline std::string tinystories_dir() { return shared_path("models/tinystories-656k"); }
inline std::string tiny_rec_dir() { return source_path("tests/fixtures/models/tiny-rec"); }
inline std::string beauty_catalogue() {
  return shared_path("datasets/beauty/beauty.LCRec-1e-3lr.json");
}

}  // namespace earnserve::testing
