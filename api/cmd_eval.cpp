// `earnserve eval`: Recall@K and NDCG@K of a recommendation model on the sequential test
// protocol, through the engine (catalogue-constrained beam search, as the papers evaluate).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "api/cli_args.h"
#include "api/commands.h"
#include "api/engine_args.h"
#include "api/tp_launcher.h"
#include "api/sequential_data.h"
#include "scheduler/engine.h"
#include "scheduler/recommendation.h"

namespace earnserve::cli {
namespace {

constexpr const char* kHelp =
    "usage: earnserve eval --model DIR --data DIR [options]\n"
    "  --data DIR           sequential_{train,valid,test}.txt (e.g. ../shared/datasets/beauty)\n"
    "  --beam-width K       beams = length of the ranked list (default 20)\n"
    "  --limit N            evaluate the first N test users only\n"
    "  --exclude-history    never recommend an item of the user's history\n"
    "  --json               one JSON object instead of a table\n";

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve eval: %s\n", s.message().c_str());
  return 1;
}

}  // namespace

int run_eval(const Args& raw) {
  auto command = parse_engine_command("eval", raw, {"--data", "--beam-width", "--limit"},
                                      {"--json", "--exclude-history"}, kHelp);
  if (const int* code = std::get_if<int>(&command)) return *code;
  const CliArgs* parsed = &std::get<EngineCommand>(command).args;
  EngineOptions* options = &std::get<EngineCommand>(command).options;
  std::optional<std::string> data = parsed->get("--data");
  if (!data) return fail(invalid_argument("--data DIR is required"));
  auto width = parsed->get_int("--beam-width", 20);
  auto limit = parsed->get_int("--limit", 0);
  if (!width.ok()) return fail(width.status());
  if (!limit.ok()) return fail(limit.status());
  if (*width < 1 || *width > kMaxBeamWidth) return fail(invalid_argument("--beam-width must be in [1, 512]"));

  std::vector<data::TestUser> users = data::test_users(*data);
  if (users.empty()) return fail(not_found(*data + ": no sequential_*.txt test users"));
  if (*limit > 0 && static_cast<size_t>(*limit) < users.size()) users.resize(*limit);

  if (options->max_num_seqs < *width) options->max_num_seqs = static_cast<int>(*width);
  // Worker ranks first: Engine::create waits for them (tensor parallelism only).
  auto ranks = start_tensor_parallel("eval", *parsed, *options);
  if (const int* code = std::get_if<int>(&ranks)) return *code;
  StatusOr<std::unique_ptr<Engine>> engine = Engine::create(*options);
  if (!engine.ok()) return fail(engine.status());
  auto spec = RecommendationSpec::load(options->model_dir, (*engine)->tokenizer());
  if (!spec.ok()) return fail(spec.status());
  if (!*spec) return fail(not_found(options->model_dir + ": no recommendation.json"));

  std::vector<EngineRequest> requests;
  for (size_t i = 0; i < users.size(); ++i) {
    RecommendationQuery q;
    q.history = users[i].history;
    q.top_k = static_cast<int>(*width);
    q.exclude_history = parsed->flag("--exclude-history");
    auto r = (*spec)->make_request(q, (*engine)->tokenizer(), "user-" + std::to_string(users[i].user));
    if (!r.ok()) return fail(r.status().with_prefix("user " + std::to_string(users[i].user)));
    requests.push_back(std::move(r).value());
  }
  const auto start = Clock::now();
  auto outputs = (*engine)->generate(std::move(requests));
  if (!outputs.ok()) return fail(outputs.status());
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  // Hits compare identifiers: items that share a code sequence are the same answer.
  const std::vector<int> ks = {5, 10, 20};
  std::vector<double> recall(ks.size(), 0.0), ndcg(ks.size(), 0.0);
  int64_t invalid = 0;
  for (size_t u = 0; u < users.size(); ++u) {
    std::vector<RecommendedItem> items = (*spec)->items((*outputs)[u]);
    invalid += static_cast<int64_t>((*outputs)[u].outputs.size() - items.size());
    std::set<std::string> targets;
    for (const std::string& t : users[u].targets) {
      int64_t index = (*spec)->catalogue().find_item(t);
      if (index >= 0) targets.insert((*spec)->catalogue().item(index).identifier);
    }
    const double num_targets = static_cast<double>(users[u].targets.size());
    for (size_t j = 0; j < ks.size(); ++j) {
      double hits = 0, dcg = 0, idcg = 0;
      for (int i = 0; i < ks[j] && i < static_cast<int>(items.size()); ++i) {
        if (targets.count(items[i].identifier)) {
          hits += 1;
          dcg += 1.0 / std::log2(i + 2.0);
        }
      }
      for (int i = 0; i < ks[j] && i < static_cast<int>(num_targets); ++i) idcg += 1.0 / std::log2(i + 2.0);
      recall[j] += hits / num_targets;
      ndcg[j] += idcg > 0 ? dcg / idcg : 0.0;
    }
  }
  nlohmann::json j;
  j["model"] = options->model_dir;
  j["users"] = users.size();
  j["beam_width"] = *width;
  j["invalid_items"] = invalid;
  j["seconds"] = seconds;
  j["users_per_second"] = users.size() / seconds;
  for (size_t i = 0; i < ks.size(); ++i) {
    j["recall@" + std::to_string(ks[i])] = recall[i] / users.size();
    j["ndcg@" + std::to_string(ks[i])] = ndcg[i] / users.size();
  }
  if (parsed->flag("--json")) {
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("users %zu, beam %lld, %.1f s (%.1f users/s), invalid items %lld\n", users.size(),
                static_cast<long long>(*width), seconds, users.size() / seconds,
                static_cast<long long>(invalid));
    for (size_t i = 0; i < ks.size(); ++i) {
      std::printf("Recall@%-2d %.4f   NDCG@%-2d %.4f\n", ks[i], recall[i] / users.size(), ks[i],
                  ndcg[i] / users.size());
    }
  }
  return 0;
}

}  // namespace earnserve::cli
