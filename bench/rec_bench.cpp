// Recommendation serving benchmark on the Beauty test users, through the Engine:
//   throughput  requests/s and p50/p99 latency of catalogue-constrained beam search (LC-Rec
//               prompts, beam 10 and 20, 4-token items) for several max_num_seqs;
//   prefix      the same requests with prefix caching on and off (hit rate, speedup);
//   beam_width  ms per decode step at widths 1..512 on a 500-token prompt, as a ratio to width 1.
// Offline: all requests are submitted at once; latency is completion time since submission.
// One JSON line per case on stdout.
//   rec_bench --model DIR --data ../shared/datasets/beauty [--requests N] [--mode all]
#include "bench/rec_bench_util.h"
#include "core/cli_args.h"
#include "core/threading.h"

namespace earnserve {
namespace {

std::unique_ptr<Engine> make_engine(const std::string& model, int max_num_seqs, bool prefix) {
  EngineOptions o;
  o.model_dir = model;
  o.max_num_seqs = max_num_seqs;
  o.max_num_batched_tokens = 8192;
  o.kv_cache_memory_bytes = 2ll << 30;
  o.enable_prefix_caching = prefix;
  return bench::make_engine(o);
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) {
  using namespace earnserve;
  using namespace earnserve::bench;
  auto parsed = cli::CliArgs::parse(
      std::vector<std::string>(argv + 1, argv + argc),
      {"--model", "--data", "--requests", "--mode", "--threads", "--max-num-seqs", "--beam-widths"},
      {});
  if (!parsed.ok() || !parsed->get("--model")) {
    std::fprintf(stderr,
                 "usage: rec_bench --model DIR [--data DIR] [--requests N] "
                 "[--mode all|throughput|prefix|beam_width] [--max-num-seqs 1,8,32,128]\n");
    return 2;
  }
  const std::string model = *parsed->get("--model");
  const std::string data = parsed->get_or("--data", "../shared/datasets/beauty");
  const int n = static_cast<int>(parsed->get_int("--requests", 200).value());
  const std::string mode = parsed->get_or("--mode", "all");
  if (int t = static_cast<int>(parsed->get_int("--threads", 0).value()); t > 0) set_num_threads(t);
  const std::vector<int> seqs_list = split_ints(parsed->get_or("--max-num-seqs", "1,8,32,128"));
  const std::vector<int> widths = split_ints(parsed->get_or("--beam-widths", "10,20"));

  auto users = data::test_users(data);
  if (users.empty()) {
    std::fprintf(stderr, "rec_bench: no Beauty test users under %s\n", data.c_str());
    return 1;
  }

  if (mode == "all" || mode == "throughput") {
    for (int k : widths) {
      for (int max_seqs : seqs_list) {
        auto engine = make_engine(model, std::max(max_seqs * k, k), true);
        auto spec = RecommendationSpec::load(model, engine->tokenizer());
        if (!spec.ok() || !*spec) {
          std::fprintf(stderr, "rec_bench: %s has no usable recommendation.json\n", model.c_str());
          return 1;
        }
        // max_num_seqs counts sequences: a request of beam K occupies K of them.
        RunResult r = run_offline(*engine, rec_requests(*engine, **spec, users, n, k));
        print({{"bench", "rec_throughput"},
               {"engine", "earnserve"},
               {"beam", k},
               {"max_concurrent_requests", max_seqs},
               {"requests", n},
               {"requests_per_s", n * 1000.0 / r.wall_ms},
               {"p50_ms", percentile(r.latency_ms, 0.5)},
               {"p99_ms", percentile(r.latency_ms, 0.99)},
               {"steps", r.stats.num_steps},
               {"threads", num_threads()}});
      }
    }
  }
  if (mode == "all" || mode == "prefix") {
    double ms[2] = {0, 0};
    for (int on = 1; on >= 0; --on) {
      auto engine = make_engine(model, 32 * 10, on == 1);
      auto spec = RecommendationSpec::load(model, engine->tokenizer());
      RunResult r = run_offline(*engine, rec_requests(*engine, **spec, users, n, 10));
      ms[on] = r.wall_ms;
      double hit = r.stats.prefix_cache_queries ? static_cast<double>(r.stats.prefix_cache_hits) /
                                                      r.stats.prefix_cache_queries
                                                : 0.0;
      print({{"bench", "prefix_cache"},
             {"prefix_caching", on == 1},
             {"requests", n},
             {"wall_ms", r.wall_ms},
             {"hit_rate_tokens", hit},
             {"prompt_tokens", r.stats.num_prompt_tokens}});
    }
    print({{"bench", "prefix_cache_speedup"}, {"speedup", ms[0] / ms[1]}});
  }
  if (mode == "all" || mode == "beam_width") {
    auto engine = make_engine(model, 512, false);
    std::vector<int32_t> prompt;
    // A 500-token prompt from real LC-Rec prompts, concatenated.
    auto spec = RecommendationSpec::load(model, engine->tokenizer());
    for (size_t i = 0; prompt.size() < 500; ++i) {
      auto p = (*spec)->build_prompt(users[i].history);
      auto ids = engine->tokenizer().encode(*p, true);
      prompt.insert(prompt.end(), ids.begin(), ids.end());
    }
    prompt.resize(500);
    double base = 0;
    for (int w : {1, 8, 64, 256, 512}) {
      const int steps = 8;
      EngineRequest r;
      r.request_id = "w" + std::to_string(w);
      r.prompt_token_ids = prompt;
      r.params.use_beam_search = true;
      r.params.beam_width = w;
      r.params.n = 1;
      r.params.max_tokens = steps;
      r.params.ignore_eos = true;
      double best = 1e30;
      for (int rep = 0; rep < 3; ++rep) {
        auto out = engine->generate({r});
        const RequestMetrics& m = out->front().metrics;
        // The first step prefills and picks the first tokens; the rest are decode steps.
        best = std::min(best, Ms(*m.finished - *m.first_token).count() / (steps - 1));
      }
      if (w == 1) base = best;
      print({{"bench", "beam_width"},
             {"width", w},
             {"prompt_tokens", 500},
             {"ms_per_step", best},
             {"ratio_to_width_1", best / base},
             {"ms_per_beam", best / w}});
    }
  }
  return 0;
}
