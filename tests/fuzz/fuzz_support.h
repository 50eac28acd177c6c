// Shared helpers of the libFuzzer targets in tests/fuzz/: the protocol context of the tiny-rec
// fixture (real tokenizer and catalogue, no engine), a per-process scratch directory the file
// loaders read the fuzz input from, and the split of one input into several files. Each fuzzer
// runs single-threaded; none of this is thread-safe.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "api/protocol/protocol_context.h"
#include "core/logging.h"
#include "model/tokenizer/tokenizer.h"
#include "scheduler/recommendation/recommendation.h"

namespace earnserve::fuzz {

inline std::string fixture_dir(const std::string& name) {
  return std::string(EARNSERVE_SOURCE_DIR) + "/tests/fixtures/models/" + name;
}

// The context a server of the tiny-rec fixture parses requests with; built once, never freed.
inline const api::ProtocolContext& tiny_rec_context() {
  static const api::ProtocolContext* ctx = [] {
    const std::string dir = fixture_dir("tiny-rec");
    auto tok = Tokenizer::from_dir(dir);
    ES_CHECK(tok.ok()) << tok.status().to_string();
    auto* c = new api::ProtocolContext;
    c->tokenizer = std::move(*tok).release();
    auto spec = RecommendationSpec::load(dir, *c->tokenizer);
    ES_CHECK(spec.ok()) << spec.status().to_string();
    c->served_model_name = "tiny-rec";
    c->max_model_len = 256;
    c->vocab_size = 2907;
    c->recommendation = *spec;
    // A server with a draft model, so the "speculative" field is parsed (recommendations
    // speculate by default).
    c->speculative = SpeculativeParams{};
    c->speculative->draft_model = "tiny-rec-draft";
    return c;
  }();
  return *ctx;
}

// An empty directory of this process under the system temp dir, emptied on each call.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("earnserve_fuzz_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ES_CHECK(out.good()) << "cannot write " << path.string();
}

// `data` cut at each `separator` byte into at most `max_parts` parts (the last keeps the rest).
inline std::vector<std::string_view> split_input(const uint8_t* data, size_t size, char separator,
                                                 size_t max_parts) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const size_t cut = rest.find(separator);
    if (cut == std::string_view::npos) break;
    parts.push_back(rest.substr(0, cut));
    rest.remove_prefix(cut + 1);
  }
  parts.push_back(rest);
  return parts;
}

// An error of a loader must say which file it is about.
inline void check_names_file(const std::string& message, const std::string& file_name) {
  ES_CHECK(message.find(file_name) != std::string::npos)
      << "error does not name " << file_name << ": " << message;
}

}  // namespace earnserve::fuzz
