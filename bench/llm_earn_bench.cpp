// EARN against the plain model at LLM shapes (tools/make_llm_rec_models.py: random weights with the
// shapes of Qwen2.5-0.5B or Llama-3.2-1B, the Beauty tokenizer and catalogue), through the Engine,
// on the Beauty test users' prompts as the model directories' recommendation.json builds them
// (histories of 20 or 50 items, as codes or "{identifier} {title}"), in one run on one machine.
//
// First the machine: the f32 GEMM rate (ops::linear on a 512-row MLP-shaped product, row-major
// through OpenBLAS and in panels, best of 20 each) and the copy bandwidth (memcpy of 512 MiB with
// the bench's threads, best of 5), again after each point (its predictions take the best of the
// measurements before and after it). Then, for each
// beam width and concurrency C (waves of C requests submitted together), the same requests through
// both models: throughput, p50/p99 latency, KV per request (the engine's per-request peak blocks x
// each group's page size x its layers), the process's CPU time per request (all threads; on a
// shared machine it is blind to other processes' load, which wall time is not), and beside them two
// predictions of full / EARN time:
//   token_layers  (L*P + L*W*g) / (k*(P+R) + (L-k)*R + L*W*g): layer passes of all tokens
//   roofline      per step max(FLOPs / GEMM rate, (weight + KV bytes read) / copy bandwidth),
//                 summed over the prefill step and the g decode steps of C requests in lockstep
//                 (P prompt tokens, R registers, W beams, g generated tokens, L layers, split k);
//                 each model's line also gives its own roofline time over its measured time
//                 (of_own_roofline), so a ratio short of the prediction shows which side is slow.
// Capacity at a fixed KV budget (--kv-budget-mib) follows from the measured KV per request at the
// measured beam width, and from page arithmetic (the formulas bench/earn_bench.cpp checks against
// the engine) at beam 1: budget / KV per request, EARN's pools split in the proportion it uses.
// Each engine serves one untimed request first (the weights are memory-mapped: the first request
// would fault them in). One JSON line per case; "ratio" fields are EARN over full (speed) or full
// over EARN (memory).
//   llm_earn_bench --full DIR --earn DIR [--data DIR] [--requests 2] [--beam-widths 10]
//                  [--concurrency 1] [--kv-budget-mib 1024] [--longest] [--threads T]
// --longest takes the users with the longest histories (the Beauty median is short: histories
// of 20-50 items, and prompts of 500-2,000 tokens with titles, are its longest users').
#include <cmath>
#include <cstdio>
#include <ctime>

#include "bench/memcpy_bandwidth.h"
#include "bench/rec_bench_util.h"
#include "core/cli_args.h"
#include "core/threading.h"
#include "kernels/ops.h"
#include "model/config.h"

namespace earnserve {
namespace {

using namespace earnserve::bench;

struct Machine {
  double gemm_flops_per_s = 0;
  double copy_bytes_per_s = 0;
};

// The machine's limits, as the best of many timings (a limit, not a typical figure: one timing
// taken while the machine is busy with something else, or a CPU still ramping up, would make
// every prediction of the point too pessimistic): the f32 GEMM rate on a 512-row MLP product (a
// prompt chunk), the better of OpenBLAS sgemm on the row-major matrix and the panel GEMM on it
// packed (what the engine runs), and the memcpy bandwidth with the bench's threads (model_bench's
// figure). Measured before and after each point; the point's predictions take the best of both.
Machine measure_machine(const ModelConfig& c) {
  Machine m;
  const int64_t rows = 512;
  Tensor x = *Tensor::zeros({rows, c.hidden_size}, DType::kF32);
  Tensor out = *Tensor::zeros({rows, c.intermediate_size}, DType::kF32);
  for (bool panels : {false, true}) {
    ops::LinearWeight w{*Tensor::zeros({c.intermediate_size, c.hidden_size}, DType::kF32),
                        Tensor()};
    if (panels) ops::pack_linear(w);
    ops::linear(x, w, Tensor(), out);  // warm-up
    double best = 1e30;
    for (int i = 0; i < 20; ++i) {
      const auto start = Clock::now();
      ops::linear(x, w, Tensor(), out);
      best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count());
    }
    m.gemm_flops_per_s =
        std::max(m.gemm_flops_per_s, 2.0 * rows * c.hidden_size * c.intermediate_size / best);
  }
  m.copy_bytes_per_s = memcpy_bytes_per_s(int64_t{512} << 20, num_threads(), /*repeats=*/5);
  return m;
}

Machine best_of(const Machine& a, const Machine& b) {
  return {std::max(a.gemm_flops_per_s, b.gemm_flops_per_s),
          std::max(a.copy_bytes_per_s, b.copy_bytes_per_s)};
}

// The shape quantities the predictions need.
struct Shape {
  double layers = 0, split = 0, registers = 0;
  double layer_params = 0, lm_head_params = 0, q_dim = 0, kv_bytes_per_token_layer = 0;
};

Shape shape_of(const ModelConfig& full, const ModelConfig& earn) {
  Shape s;
  s.layers = static_cast<double>(full.num_hidden_layers);
  s.split = static_cast<double>(earn.earn->split_layer);
  s.registers = static_cast<double>(earn.earn->prefix_register_ids.size() +
                                    earn.earn->suffix_register_ids.size());
  const double h = static_cast<double>(full.hidden_size);
  s.q_dim = static_cast<double>(full.num_attention_heads * full.head_dim);
  const double kv_dim = static_cast<double>(full.num_key_value_heads * full.head_dim);
  s.layer_params = h * (s.q_dim + 2 * kv_dim) + s.q_dim * h +
                   3.0 * h * static_cast<double>(full.intermediate_size);
  s.lm_head_params = h * static_cast<double>(full.vocab_size);
  s.kv_bytes_per_token_layer = 2 * kv_dim * sizeof(float);
  return s;
}

// Seconds the roofline gives C requests of P-token prompts, W beams, g generated tokens, run in
// lockstep: layers [0, k) see every token, [k, L) only R registers (k = L, R = 0: the plain model).
double roofline_seconds(const Shape& s, const Machine& m, bool earn, double P, double W, double g,
                        double C) {
  const double L = s.layers, k = earn ? s.split : s.layers, R = earn ? s.registers : 0;
  const double weight_bytes = (L * s.layer_params + s.lm_head_params) * sizeof(float);
  auto step = [&](double flops, double kv_bytes) {
    return std::max(flops / m.gemm_flops_per_s, (weight_bytes + kv_bytes) / m.copy_bytes_per_s);
  };
  // Prefill: matrices over every kept token, causal attention within each group's tokens.
  const double lower = P + R, upper = R;
  double flops = C * (k * (2 * lower * s.layer_params + 2 * lower * lower * s.q_dim) +
                      (L - k) * (2 * upper * s.layer_params + 2 * upper * upper * s.q_dim) +
                      2 * s.lm_head_params);
  double seconds = step(flops, C * (k * lower + (L - k) * upper) * s.kv_bytes_per_token_layer);
  for (double t = 1; t <= g; ++t) {
    // W beams each: matrices, attention over the shared prompt pages and their own tokens.
    const double ctx_lower = lower + t, ctx_upper = upper + t;
    flops = C * W *
            (L * 2 * s.layer_params + k * 4 * ctx_lower * s.q_dim +
             (L - k) * 4 * ctx_upper * s.q_dim + 2 * s.lm_head_params);
    const double kv =
        C * (k * (lower + W * t) + (L - k) * (upper + W * t)) * s.kv_bytes_per_token_layer;
    seconds += step(flops, kv);
  }
  return seconds;
}

double token_layers(const Shape& s, bool earn, double P, double W, double g) {
  const double L = s.layers;
  if (!earn) return L * P + L * W * g;
  return s.split * (P + s.registers) + (L - s.split) * s.registers + L * W * g;
}

// KV bytes one request held at its peak: per group, blocks x page size x layers x bytes.
double kv_bytes(const Engine& engine, const RequestMetrics& metrics) {
  const ModelConfig& c = engine.model_config();
  const std::vector<int> sizes = engine.stats().block_size_per_group;
  const double per_slot_layer = 2.0 * c.num_key_value_heads * c.head_dim * sizeof(float);
  const double L = static_cast<double>(c.num_hidden_layers);
  const double k = c.earn ? static_cast<double>(c.earn->split_layer) : L;
  double slots = metrics.peak_kv_blocks.at(0) * sizes.at(0) * k;
  if (c.earn) slots += metrics.peak_kv_blocks.at(1) * sizes.at(1) * (L - k);
  return slots * per_slot_layer;
}

// KV bytes of one beam-1 request by page arithmetic: P prompt tokens, g kept generated tokens.
double kv_bytes_beam1(const Engine& engine, double P, double g) {
  const ModelConfig& c = engine.model_config();
  const std::vector<int> sizes = engine.stats().block_size_per_group;
  auto pages = [](double tokens, int size) { return std::ceil(tokens / size) * size; };
  const double per_slot_layer = 2.0 * c.num_key_value_heads * c.head_dim * sizeof(float);
  const double L = static_cast<double>(c.num_hidden_layers);
  if (!c.earn) return L * pages(P + g, sizes.at(0)) * per_slot_layer;
  const double k = static_cast<double>(c.earn->split_layer);
  const double R =
      static_cast<double>(c.earn->prefix_register_ids.size() + c.earn->suffix_register_ids.size());
  return (k * pages(P + R + g, sizes.at(0)) + (L - k) * pages(R + g, sizes.at(1))) * per_slot_layer;
}

struct Options {
  std::string full, earn, data;
  int requests = 2;
  std::vector<int> widths{10};
  std::vector<int> concurrency{1};
  int64_t kv_budget = 1ll << 30;
  bool longest = false;  // the users with the longest histories instead of the first ones
};

// `before`: the machine measured before the point; returns the measurement after it.
Machine bench_point(const Options& o, const Machine& before,
                    const std::vector<data::TestUser>& users, int width, int conc) {
  double wall_s[2] = {0, 0}, kv[2] = {0, 0}, kv1[2] = {0, 0}, prompt = 0, generated = 0;
  double cpu_s[2] = {0, 0};  // this process's CPU time (all threads): blind to other load
  const std::string* dirs[2] = {&o.full, &o.earn};
  ModelConfig configs[2];
  std::unique_ptr<Engine> engines[2];
  std::vector<EngineRequest> all[2];
  RunResult runs[2];
  for (int m = 0; m < 2; ++m) {
    EngineOptions eo;
    eo.model_dir = *dirs[m];
    eo.max_num_seqs = conc * width;
    eo.max_num_batched_tokens = 16384;
    eo.kv_cache_memory_bytes = 2ll << 30;
    eo.enable_prefix_caching = false;  // each request computes its own prompt
    engines[m] = make_engine(eo);
    configs[m] = engines[m]->model_config();
    auto spec = load_spec(*engines[m], *dirs[m]);
    all[m] = rec_requests(*engines[m], *spec, users, o.requests, width);
    // One untimed request first: it faults in the memory-mapped weights and touches the KV
    // pages, a cost of the same size for both models that would otherwise shrink the ratio.
    run_offline(*engines[m], {all[m].front()});
  }
  // Waves of `conc` requests submitted together, each run to its end (at most `conc` requests at
  // a time, never a preemption), the two models alternating wave by wave so that a change in the
  // machine's load falls on both.
  for (size_t i = 0; i < all[0].size(); i += conc) {
    for (int m = 0; m < 2; ++m) {
      std::vector<EngineRequest> wave;
      for (size_t j = i; j < std::min(all[m].size(), i + conc); ++j) wave.push_back(all[m][j]);
      const std::clock_t cpu_start = std::clock();
      RunResult w = run_offline(*engines[m], std::move(wave));
      cpu_s[m] += static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
      RunResult& r = runs[m];
      r.wall_ms += w.wall_ms;
      r.latency_ms.insert(r.latency_ms.end(), w.latency_ms.begin(), w.latency_ms.end());
      for (RequestOutput& out : w.outputs) r.outputs.push_back(std::move(out));
      r.stats = w.stats;
    }
  }
  const Machine after = measure_machine(configs[0]);
  const Machine machine = best_of(before, after);
  const Shape s = shape_of(configs[0], configs[1]);
  const double C = std::min(conc, o.requests);
  for (int m = 0; m < 2; ++m) {
    const RunResult& r = runs[m];
    const Engine& engine = *engines[m];
    wall_s[m] = r.wall_ms / 1000.0;
    double tokens = 0, gen = 0;
    for (const RequestOutput& out : r.outputs) {
      kv[m] += kv_bytes(engine, out.metrics) / r.outputs.size();
      tokens += static_cast<double>(out.prompt_token_ids.size()) / r.outputs.size();
      gen += static_cast<double>(out.outputs.at(0).token_ids.size()) / r.outputs.size();
    }
    prompt = tokens;
    generated = gen;
    kv1[m] = kv_bytes_beam1(engine, prompt, gen - 1);
    // This model's own roofline time over its measured time (waves of C requests): which side
    // of the ratio sits further from its bound.
    const double roof_s =
        roofline_seconds(s, machine, m == 1, prompt, width, std::max(1.0, gen - 1), C) *
        std::ceil(o.requests / C);
    print({{"bench", "llm_earn"},
           {"model", m == 0 ? "full" : "earn"},
           {"dir", *dirs[m]},
           {"beam", width},
           {"concurrency", conc},
           {"requests", o.requests},
           {"mean_prompt_tokens", prompt},
           {"requests_per_s", o.requests / wall_s[m]},
           {"cpu_s_per_request", cpu_s[m] / o.requests},
           {"p50_ms", percentile(r.latency_ms, 0.5)},
           {"p99_ms", percentile(r.latency_ms, 0.99)},
           {"kv_bytes_per_request", kv[m]},
           {"roofline_s", roof_s},
           {"of_own_roofline", roof_s / wall_s[m]},
           {"steps", r.stats.num_steps},
           {"preemptions", r.stats.num_preemptions},
           {"threads", num_threads()}});
  }
  const double g = std::max(1.0, generated - 1);  // decode steps after the prefill
  const double roof = roofline_seconds(s, machine, false, prompt, width, g, C) /
                      roofline_seconds(s, machine, true, prompt, width, g, C);
  const double tl =
      token_layers(s, false, prompt, width, g) / token_layers(s, true, prompt, width, g);
  const double measured = wall_s[0] / wall_s[1];
  print({{"bench", "llm_earn_ratio"},
         {"beam", width},
         {"concurrency", conc},
         {"mean_prompt_tokens", prompt},
         {"split_layer", s.split},
         {"registers", s.registers},
         {"throughput_ratio", measured},
         {"cpu_time_ratio", cpu_s[0] / cpu_s[1]},
         {"token_layer_prediction", tl},
         {"roofline_prediction", roof},
         {"of_roofline", measured / roof},
         {"kv_reduction", 1.0 - kv[1] / kv[0]},
         {"capacity_ratio", kv[0] / kv[1]},
         {"capacity_full", std::floor(o.kv_budget / kv[0])},
         {"capacity_earn", std::floor(o.kv_budget / kv[1])},
         {"capacity_ratio_beam1", kv1[0] / kv1[1]},
         {"kv_budget_bytes", o.kv_budget},
         {"gemm_gflops", machine.gemm_flops_per_s / 1e9},
         {"copy_gb_per_s", machine.copy_bytes_per_s / 1e9}});
  return after;
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) {
  using namespace earnserve;
  auto parsed = cli::CliArgs::parse(std::vector<std::string>(argv + 1, argv + argc),
                                    {"--full", "--earn", "--data", "--requests", "--beam-widths",
                                     "--concurrency", "--kv-budget-mib", "--threads"},
                                    {"--longest"});
  if (!parsed.ok() || !parsed->get("--full") || !parsed->get("--earn")) {
    std::fprintf(stderr,
                 "usage: llm_earn_bench --full DIR --earn DIR [--data DIR] [--requests 2] "
                 "[--beam-widths 10] [--concurrency 1] [--kv-budget-mib 1024] [--longest] "
                 "[--threads T]\n");
    return 2;
  }
  Options o;
  o.full = *parsed->get("--full");
  o.earn = *parsed->get("--earn");
  o.data = parsed->get_or("--data", "../shared/datasets/beauty");
  o.requests = static_cast<int>(parsed->get_int("--requests", 2).value());
  o.widths = bench::split_ints(parsed->get_or("--beam-widths", "10"));
  o.concurrency = bench::split_ints(parsed->get_or("--concurrency", "1"));
  o.kv_budget = parsed->get_int("--kv-budget-mib", 1024).value() << 20;
  if (int t = static_cast<int>(parsed->get_int("--threads", 0).value()); t > 0) set_num_threads(t);
  // Whole histories: each model directory's recommendation.json keeps its last history_limit.
  auto users = data::test_users(o.data, /*history_limit=*/1 << 20);
  if (users.empty()) {
    std::fprintf(stderr, "llm_earn_bench: no Beauty test users under %s\n", o.data.c_str());
    return 1;
  }
  if (parsed->flag("--longest")) {
    // Long prompts: the users with the most history (ties in file order).
    std::stable_sort(users.begin(), users.end(), [](const auto& a, const auto& b) {
      return a.history.size() > b.history.size();
    });
  }
  auto config = load_model_config(o.full);
  if (!config.ok()) bench::die(config.status().to_string());
  Machine machine = measure_machine(*config);
  bench::print({{"bench", "llm_earn_machine"},
                {"gemm_gflops", machine.gemm_flops_per_s / 1e9},
                {"copy_gb_per_s", machine.copy_bytes_per_s / 1e9},
                {"threads", num_threads()}});
  for (int w : o.widths) {
    for (int c : o.concurrency) machine = bench_point(o, machine, users, w, c);
  }
  return 0;
}
