// Helpers shared by the recommendation benchmarks (rec_bench, earn_bench): engine construction,
// LC-Rec requests for the Beauty test users, offline runs with per-request latency, percentiles.
// Header-only; every function exits the process with a message on error (benchmarks, not library
// code). Not thread-safe beyond what Engine itself offers.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "scheduler/engine.h"
#include "scheduler/recommendation/recommendation.h"
#include "scheduler/recommendation/sequential_data.h"

namespace earnserve::bench {

using Ms = std::chrono::duration<double, std::milli>;

inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

inline double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / v.size();
}

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "bench: %s\n", what.c_str());
  std::exit(1);
}

inline std::unique_ptr<Engine> make_engine(const EngineOptions& options) {
  auto e = Engine::create(options);
  if (!e.ok()) die(e.status().to_string());
  return std::move(e).value();
}

inline std::shared_ptr<const RecommendationSpec> load_spec(const Engine& engine,
                                                           const std::string& model) {
  auto spec = RecommendationSpec::load(model, engine.tokenizer());
  if (!spec.ok() || !*spec) die(model + " has no usable recommendation.json");
  return *spec;
}

// One catalogue-constrained beam search request (beam width = top_k) per user, users[i % size].
inline std::vector<EngineRequest> rec_requests(const Engine& engine, const RecommendationSpec& spec,
                                               const std::vector<data::TestUser>& users, int n,
                                               int top_k) {
  std::vector<EngineRequest> out;
  for (int i = 0; i < n; ++i) {
    RecommendationQuery q;
    q.history = users[i % users.size()].history;
    q.top_k = top_k;
    auto r = spec.make_request(q, engine.tokenizer(), "u" + std::to_string(i));
    if (!r.ok()) die(r.status().to_string());
    out.push_back(std::move(r).value());
  }
  return out;
}

struct RunResult {
  double wall_ms = 0;
  std::vector<double> latency_ms;  // per request: completion time since submission
  std::vector<RequestOutput> outputs;
  EngineStats stats;
};

// Submits every request at once and runs the engine until all are done.
inline RunResult run_offline(Engine& engine, std::vector<EngineRequest> requests) {
  RunResult r;
  const auto start = Clock::now();
  auto outputs = engine.generate(std::move(requests));
  r.wall_ms = Ms(Clock::now() - start).count();
  if (!outputs.ok()) die(outputs.status().to_string());
  for (const RequestOutput& o : *outputs) {
    r.latency_ms.push_back(Ms(o.metrics.finished.value_or(start) - start).count());
  }
  r.outputs = std::move(outputs).value();
  r.stats = engine.stats();
  return r;
}

inline void print(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

inline std::vector<int> split_ints(const std::string& s) {
  std::vector<int> v;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t comma = s.find(',', pos);
    v.push_back(std::stoi(s.substr(pos, comma - pos)));
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return v;
}

}  // namespace earnserve::bench
