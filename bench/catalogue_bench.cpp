// Catalogue-restricted lm_head against the whole vocabulary, through the Engine, on the Beauty
// test users, in one run on one machine: for each beam width, the same requests with
// "score_over": "vocabulary" (logits for every token, transformers-equal scores) and "catalogue"
// (logits only for the tokens the item trie allows the live beams: those lm_head rows gathered,
// scores renormalised over them). Requests run one at a time, the two modes alternating request by
// request after one untimed request of each; every engine step is timed, and
// the decode steps (all but each request's first, the prefill) give the step cost. Items that
// are not in the catalogue are counted (must be 0). One JSON line per case and mode, then the
// ratio line ("lower_by": 1 - catalogue / vocabulary step cost).
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
  int invalid_items = 0;
  int items = 0;
};

constexpr ScoreOver kModes[2] = {ScoreOver::kVocabulary, ScoreOver::kCatalogue};

// Runs each request alone, timing every engine step.
ModeResult run_mode(Engine& engine, std::vector<EngineRequest> requests) {
  ModeResult m;
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
  return m;
}

void bench_width(Engine& engine, const RecommendationSpec& spec,
                 const std::vector<data::TestUser>& users, int n, int width) {
  std::vector<EngineRequest> requests[2];
  ModeResult results[2];
  int64_t prompt_tokens = 0;
  for (int mode = 0; mode < 2; ++mode) {
    requests[mode] = rec_requests(engine, spec, users, n, width);
    for (EngineRequest& r : requests[mode]) r.score_over = kModes[mode];
    run_mode(engine, {requests[mode].front()});  // untimed: first-use costs of this shape
  }
  for (const EngineRequest& r : requests[0]) prompt_tokens += r.prompt_token_ids.size();
  // Request by request, the two modes alternating which goes first, so that a change in the
  // machine's load falls on both.
  for (int i = 0; i < n; ++i) {
    for (int turn = 0; turn < 2; ++turn) {
      const int mode = (i + turn) % 2;
      ModeResult m = run_mode(engine, {requests[mode][i]});
      ModeResult& all = results[mode];
      all.decode_step_ms.insert(all.decode_step_ms.end(), m.decode_step_ms.begin(),
                                m.decode_step_ms.end());
      all.prefill_step_ms.insert(all.prefill_step_ms.end(), m.prefill_step_ms.begin(),
                                 m.prefill_step_ms.end());
      all.items += m.items;
      all.invalid_items += m.invalid_items;
    }
  }
  double step_ms[2] = {0, 0};
  for (int mode = 0; mode < 2; ++mode) {
    const ModeResult& m = results[mode];
    step_ms[mode] = mean(m.decode_step_ms);
    print({{"bench", "catalogue_step"},
           {"score_over", score_over_name(kModes[mode])},
           {"beam", width},
           {"requests", n},
           {"vocab_size", engine.model_config().vocab_size},
           {"hidden_size", engine.model_config().hidden_size},
           {"layers", engine.model_config().num_hidden_layers},
           {"mean_prompt_tokens", static_cast<double>(prompt_tokens) / n},
           {"decode_steps", m.decode_step_ms.size()},
           {"decode_step_ms_mean", step_ms[mode]},
           {"decode_step_ms_p50", percentile(m.decode_step_ms, 0.5)},
           {"prefill_step_ms_mean", mean(m.prefill_step_ms)},
           {"items", m.items},
           {"invalid_items", m.invalid_items},
           {"threads", num_threads()}});
  }
  print({{"bench", "catalogue_step_ratio"},
         {"beam", width},
         {"catalogue_over_vocabulary", step_ms[1] / step_ms[0]},
         {"lower_by", 1.0 - step_ms[1] / step_ms[0]}});
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
  auto spec = bench::load_spec(*engine, model);
  for (int w : widths) bench_width(*engine, *spec, users, n, w);
  return 0;
}
