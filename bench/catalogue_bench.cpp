// Catalogue-restricted lm_head against the whole vocabulary, through the Engine, on the Beauty
// test users, in one run on one machine: for each beam width, the same requests three ways:
//  - "vocabulary": logits for every token, transformers-equal scores;
//  - "catalogue_every_row": "score_over": "catalogue" (logits only for the tokens the item trie
//    allows the live beams: those lm_head rows gathered, scores renormalised over them) on an
//    engine with EngineOptions::skip_forced_tokens off, so every live beam runs every step: the
//    same rows as "vocabulary", the lm_head restriction alone;
//  - "catalogue": the same scores with the default engine, where beams whose remaining item tokens
//    are forced take them without a forward (and the end-of-item step runs none).
// Requests run one at a time, the three ways rotating request by request after one untimed request
// of each; every engine step is timed, and the decode steps (all but each request's first, the
// prefill) give the step cost and the decode time per request. Items that are not in the
// catalogue are counted (must be 0). One JSON line per case and way, then the ratio line
// ("lower_by": 1 - catalogue_every_row / vocabulary decode step cost, the same rows;
// "lower_by_per_request": 1 - catalogue / vocabulary decode time per request).
//   catalogue_bench --model DIR [--data DIR] [--beam-widths 10,50,200] [--requests 2]
//                   [--threads T]
// The step cost depends on the vocabulary (lm_head rows x hidden size per beam); run it on a
// large-vocabulary model, e.g. tools/make_llm_rec_models.py's qwen2.5-0.5b shape.
#include <cstdio>

#include "bench/rec_bench_util.h"
#include "core/cli_args.h"
#include "core/threading.h"

namespace earnserve {
namespace {

using namespace earnserve::bench;

struct ModeResult {
  std::vector<double> decode_step_ms;
  std::vector<double> prefill_step_ms;
  double decode_ms = 0;  // all requests' decode steps
  int64_t forced_tokens = 0;
  int invalid_items = 0;
  int items = 0;
};

struct Way {
  const char* name;
  ScoreOver score_over;
  bool every_row;  // the engine that runs forced beams too
};
constexpr Way kWays[3] = {{"vocabulary", ScoreOver::kVocabulary, false},
                          {"catalogue_every_row", ScoreOver::kCatalogue, true},
                          {"catalogue", ScoreOver::kCatalogue, false}};

// Runs each request alone, timing every engine step.
void run_requests(Engine& engine, std::vector<EngineRequest> requests, ModeResult& m) {
  const int64_t forced_before = engine.stats().num_forced_tokens;
  for (EngineRequest& r : requests) {
    auto stream = engine.add_request(std::move(r));
    if (!stream.ok()) die(stream.status().to_string());
    bool first = true;
    while (engine.has_unfinished()) {
      const auto start = Clock::now();
      auto stepped = engine.step();
      if (!stepped.ok()) die(stepped.status().to_string());
      const double ms = Ms(Clock::now() - start).count();
      (first ? m.prefill_step_ms : m.decode_step_ms).push_back(ms);
      if (!first) m.decode_ms += ms;
      first = false;
    }
    std::optional<RequestOutput> last;
    while (auto o = (*stream)->next(std::chrono::milliseconds(0))) last = std::move(o);
    if (!last) die("a request produced no output");
    for (const SequenceOutput& o : last->outputs) {
      ++m.items;
      if (o.item_index < 0) ++m.invalid_items;
    }
  }
  m.forced_tokens += engine.stats().num_forced_tokens - forced_before;
}

void bench_width(Engine& engine, Engine& every_row, const RecommendationSpec& spec,
                 const std::vector<data::TestUser>& users, int n, int width) {
  std::vector<EngineRequest> requests[3];
  ModeResult results[3];
  int64_t prompt_tokens = 0;
  for (int way = 0; way < 3; ++way) {
    Engine& e = kWays[way].every_row ? every_row : engine;
    requests[way] = rec_requests(e, spec, users, n, width);
    for (EngineRequest& r : requests[way]) r.score_over = kWays[way].score_over;
    ModeResult untimed;  // first-use costs of this shape
    run_requests(e, {requests[way].front()}, untimed);
  }
  for (const EngineRequest& r : requests[0]) prompt_tokens += r.prompt_token_ids.size();
  // Request by request, the ways rotating which goes first, so that a change in the machine's
  // load falls on all of them.
  for (int i = 0; i < n; ++i) {
    for (int turn = 0; turn < 3; ++turn) {
      const int way = (i + turn) % 3;
      run_requests(kWays[way].every_row ? every_row : engine, {requests[way][i]}, results[way]);
    }
  }
  double step_ms[3] = {0, 0, 0};
  double request_ms[3] = {0, 0, 0};
  for (int way = 0; way < 3; ++way) {
    const ModeResult& m = results[way];
    step_ms[way] = mean(m.decode_step_ms);
    request_ms[way] = m.decode_ms / n;
    print({{"bench", "catalogue_step"},
           {"way", kWays[way].name},
           {"score_over", score_over_name(kWays[way].score_over)},
           {"skip_forced_tokens", !kWays[way].every_row},
           {"beam", width},
           {"requests", n},
           {"vocab_size", engine.model_config().vocab_size},
           {"hidden_size", engine.model_config().hidden_size},
           {"layers", engine.model_config().num_hidden_layers},
           {"mean_prompt_tokens", static_cast<double>(prompt_tokens) / n},
           {"decode_steps", m.decode_step_ms.size()},
           {"decode_step_ms_mean", step_ms[way]},
           {"decode_step_ms_p50", percentile(m.decode_step_ms, 0.5)},
           {"decode_ms_per_request", request_ms[way]},
           {"forced_tokens_per_request", static_cast<double>(m.forced_tokens) / n},
           {"prefill_step_ms_mean", mean(m.prefill_step_ms)},
           {"items", m.items},
           {"invalid_items", m.invalid_items},
           {"threads", num_threads()}});
  }
  print({{"bench", "catalogue_step_ratio"},
         {"beam", width},
         {"catalogue_over_vocabulary", step_ms[1] / step_ms[0]},
         {"lower_by", 1.0 - step_ms[1] / step_ms[0]},
         {"lower_by_per_request_every_row", 1.0 - request_ms[1] / request_ms[0]},
         {"lower_by_per_request", 1.0 - request_ms[2] / request_ms[0]}});
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) {
  using namespace earnserve;
  auto parsed =
      cli::CliArgs::parse(std::vector<std::string>(argv + 1, argv + argc),
                          {"--model", "--data", "--beam-widths", "--requests", "--threads"}, {});
  if (!parsed.ok() || !parsed->get("--model")) {
    std::fprintf(stderr,
                 "usage: catalogue_bench --model DIR [--data DIR] [--beam-widths 10,50,200] "
                 "[--requests 2] [--threads T]\n");
    return 2;
  }
  const std::string model = *parsed->get("--model");
  const std::string data = parsed->get_or("--data", "../shared/datasets/beauty");
  auto users = data::test_users(data);
  if (users.empty()) {
    std::fprintf(stderr, "catalogue_bench: no Beauty test users under %s\n", data.c_str());
    return 1;
  }
  const std::vector<int> widths = bench::split_ints(parsed->get_or("--beam-widths", "10,50,200"));
  const int n = static_cast<int>(parsed->get_int("--requests", 2).value());
  if (int t = static_cast<int>(parsed->get_int("--threads", 0).value()); t > 0) set_num_threads(t);
  int max_width = 1;
  for (int w : widths) max_width = std::max(max_width, w);
  EngineOptions o;
  o.model_dir = model;
  o.max_num_seqs = max_width;
  o.max_num_batched_tokens = 8192;
  o.kv_cache_memory_bytes = 2ll << 30;
  auto engine = bench::make_engine(o);
  o.skip_forced_tokens = false;
  auto every_row = bench::make_engine(o);
  auto spec = bench::load_spec(*engine, model);
  for (int w : widths) bench_width(*engine, *every_row, *spec, users, n, w);
  return 0;
}
