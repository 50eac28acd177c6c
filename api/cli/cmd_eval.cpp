// `earnserve eval`: Recall@K and NDCG@K of a recommendation model on the sequential test
// protocol, through the engine (catalogue-constrained beam search, as the papers evaluate). With
// --draft-model the beam search is speculative (strict: the same results) and the speculative
// stats are printed. Progress (users done, users/s, ETA) goes to stderr unless --quiet.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/progress.h"
#include "api/cli/tp_launcher.h"
#include "core/cli_args.h"
#include "scheduler/engine.h"
#include "scheduler/recommendation/rec_eval.h"
#include "scheduler/recommendation/recommendation.h"
#include "scheduler/recommendation/sequential_data.h"

namespace earnserve::cli {
namespace {

constexpr const char* kHelp =
    "usage: earnserve eval --model DIR --data DIR [options]\n"
    "  --data DIR           sequential_{train,valid,test}.txt (e.g. ../shared/datasets/beauty)\n"
    "  --beam-width K       beams = length of the ranked list (default 20)\n"
    "  --limit N            evaluate the first N test users only\n"
    "  --exclude-history    never recommend an item of the user's history\n"
    "  --json               one JSON object instead of a table\n"
    "  --no-speculative     with --draft-model: plain beam search (by default eval speculates\n"
    "                       with --num-draft-beams, raised to the beam width, and\n"
    "                       --num-speculative-steps, and prints the speculative stats)\n";

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve eval: %s\n", s.message().c_str());
  return 1;
}

}  // namespace

int run_eval(const Args& raw) {
  auto command = parse_engine_command("eval", raw, {"--data", "--beam-width", "--limit"},
                                      {"--json", "--exclude-history", "--no-speculative"}, kHelp);
  if (const int* code = std::get_if<int>(&command)) return *code;
  const CliArgs* parsed = &std::get<EngineCommand>(command).args;
  EngineOptions* options = &std::get<EngineCommand>(command).options;
  std::optional<std::string> data = parsed->get("--data");
  if (!data) return fail(invalid_argument("--data DIR is required"));
  auto width = parsed->get_int("--beam-width", 20);
  auto limit = parsed->get_int("--limit", 0);
  if (!width.ok()) return fail(width.status());
  if (!limit.ok()) return fail(limit.status());
  if (*width < 1 || *width > kMaxBeamWidth)
    return fail(invalid_argument("--beam-width must be in [1, 512]"));

  std::vector<data::TestUser> users = data::test_users(*data);
  if (users.empty()) return fail(not_found(*data + ": no sequential_*.txt test users"));
  if (*limit > 0 && static_cast<size_t>(*limit) < users.size()) users.resize(*limit);

  if (options->max_num_seqs < *width) options->max_num_seqs = static_cast<int>(*width);
  std::optional<SpeculativeParams> speculative = std::get<EngineCommand>(command).speculative;
  if (parsed->flag("--no-speculative")) speculative.reset();
  if (speculative) {
    speculative->num_draft_beams = std::max(speculative->num_draft_beams, static_cast<int>(*width));
  }
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
    auto r =
        (*spec)->make_request(q, (*engine)->tokenizer(), "user-" + std::to_string(users[i].user));
    if (!r.ok()) return fail(r.status().with_prefix("user " + std::to_string(users[i].user)));
    r->params.speculative = speculative;
    requests.push_back(std::move(r).value());
  }
  const auto start = Clock::now();
  Progress progress("eval", requests.size(), stderr_progress_options(parsed->flag("--quiet")));
  auto outputs =
      (*engine)->generate(std::move(requests), [&progress](size_t done) { progress.update(done); });
  if (!outputs.ok()) return fail(outputs.status());
  progress.finish(users.size());
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();

  const data::RankingMetrics m = data::ranking_metrics(**spec, users, *outputs);
  const data::SpeculativeSummary sp = data::summarize_speculative(*outputs);
  nlohmann::json j;
  j["model"] = options->model_dir;
  j["users"] = users.size();
  j["beam_width"] = *width;
  j["invalid_items"] = m.invalid_items;
  j["seconds"] = seconds;
  j["users_per_second"] = users.size() / seconds;
  for (size_t i = 0; i < m.ks.size(); ++i) {
    j["recall@" + std::to_string(m.ks[i])] = m.recall[i];
    j["ndcg@" + std::to_string(m.ks[i])] = m.ndcg[i];
  }
  if (speculative) {
    j["speculative"] = {{"draft_model", speculative->draft_model},
                        {"num_draft_beams", speculative->num_draft_beams},
                        {"num_speculative_steps", speculative->num_speculative_steps},
                        {"rounds", sp.num_rounds},
                        {"accepted_steps", sp.accepted_steps},
                        {"accepted_steps_per_round", sp.accepted_steps_per_round()},
                        {"target_calls_per_request", sp.target_calls_per_request()},
                        {"draft_calls_per_request", sp.draft_calls_per_request()}};
  }
  if (parsed->flag("--json")) {
    std::cout << j.dump() << std::endl;
  } else {
    std::printf("users %zu, beam %lld, %.1f s (%.1f users/s), invalid items %lld\n", users.size(),
                static_cast<long long>(*width), seconds, users.size() / seconds,
                static_cast<long long>(m.invalid_items));
    for (size_t i = 0; i < m.ks.size(); ++i) {
      std::printf("Recall@%-2d %.4f   NDCG@%-2d %.4f\n", m.ks[i], m.recall[i], m.ks[i], m.ndcg[i]);
    }
    if (speculative) {
      std::printf(
          "speculative (draft %s, N %d, gamma %d): %lld rounds, %.2f accepted steps per "
          "round, %.2f target calls per request, %.2f draft calls per request\n",
          speculative->draft_model.c_str(), speculative->num_draft_beams,
          speculative->num_speculative_steps, static_cast<long long>(sp.num_rounds),
          sp.accepted_steps_per_round(), sp.target_calls_per_request(),
          sp.draft_calls_per_request());
    }
  }
  return 0;
}

}  // namespace earnserve::cli
