// EARN against the plain model, through the Engine, on the Beauty test users (LC-Rec prompts,
// catalogue-constrained beam search), in one run on one machine:
//   kv_pages    per sequence (one beam, one item; every test user): KV slots held in every layer,
//               as layer-slots (page slots x layers of their group; a layer-slot is the same
//               number of bytes in both models when they share hidden size and heads), measured
//               from the engine's per-request peak block counts and checked against what the
//               layer split predicts:
//                 full: L * B * ceil((P + g) / B)
//                 EARN: k * B * ceil((P + R + g) / B) + (L - k) * b * ceil((R + g) / b)
//               (P prompt tokens, R registers, g generated tokens that have KV, B block size, b
//               the register layers' block size, --earn-block-size), beside the per-token count
//               (B = b = 1) that page rounding can only approach.
//   throughput  requests/s and p50/p99 latency with every request submitted at once (bounded by
//               --max-num-seqs requests running at a time), beam 10 and 20.
//   latency     p50/p99 of one request at a time (no queueing), beam 10 and 20.
//   capacity    the most requests (and beams) that run at once without preemption under a fixed
//               KV budget (--kv-budget-mib), found by binary search over the concurrency limit,
//               for --capacity-widths (beam 1: one sequence per request); EARN's two page pools
//               are split in the proportion its requests use them (measured with an ample budget).
// One JSON line per case; "ratio" fields are EARN / full (speed) or full / EARN (memory).
//   earn_bench --full DIR --earn DIR [--data DIR] [--requests N] [--beam-widths 10,20]
//              [--max-num-seqs 32] [--latency-requests 100] [--kv-budget-mib 32]
//              [--capacity-widths 1,10,20] [--block-size 16] [--earn-block-size 2] [--threads T]
//              [--mode all|kv_pages|throughput|latency|capacity]
#include <cstdio>

#include "bench/rec_bench_util.h"
#include "core/cli_args.h"
#include "core/threading.h"

namespace earnserve {
namespace {

using namespace earnserve::bench;

struct Models {
  std::string full;
  std::string earn;
};

int g_block_size = 16;      // --block-size, for every engine of the run
int g_earn_block_size = 2;  // --earn-block-size, likewise

EngineOptions engine_options(const std::string& model, int max_num_seqs, int64_t kv_bytes) {
  EngineOptions o;
  o.block_size = g_block_size;
  o.earn_block_size = g_earn_block_size;
  o.model_dir = model;
  o.max_num_seqs = max_num_seqs;
  o.max_num_batched_tokens = 8192;
  o.kv_cache_memory_bytes = kv_bytes;
  o.enable_prefix_caching = true;
  return o;
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Layer-slots the layer split predicts for one sequence (see the file comment); `bs`: the block
// size of the all-token layers, `marked_bs` of the register layers.
int predicted_layer_slots(const ModelConfig& c, int bs, int marked_bs, int prompt_tokens,
                          int kv_generated) {
  const int layers = static_cast<int>(c.num_hidden_layers);
  if (!c.earn) return layers * bs * ceil_div(prompt_tokens + kv_generated, bs);
  const int k = static_cast<int>(c.earn->split_layer);
  const int registers =
      static_cast<int>(c.earn->prefix_register_ids.size() + c.earn->suffix_register_ids.size());
  return k * bs * ceil_div(prompt_tokens + registers + kv_generated, bs) +
         (layers - k) * marked_bs * ceil_div(registers + kv_generated, marked_bs);
}

// Layer-slots one request held at its peak: per group, blocks x block size x layers.
int measured_layer_slots(const ModelConfig& c, const std::vector<int>& block_sizes,
                         const RequestMetrics& m) {
  const int layers = static_cast<int>(c.num_hidden_layers);
  if (!c.earn) return m.peak_kv_blocks.at(0) * block_sizes.at(0) * layers;
  const int k = static_cast<int>(c.earn->split_layer);
  return m.peak_kv_blocks.at(0) * block_sizes.at(0) * k +
         m.peak_kv_blocks.at(1) * block_sizes.at(1) * (layers - k);
}

// Per-token KV entries (block size 1): what the split saves before page rounding.
int64_t token_layer_entries(const ModelConfig& c, int prompt_tokens, int kv_generated) {
  return predicted_layer_slots(c, 1, 1, prompt_tokens, kv_generated);
}

void bench_kv_pages(const Models& models, const std::vector<data::TestUser>& users, int n) {
  double sum[2] = {0, 0};
  int64_t tokens[2] = {0, 0};
  int mismatches[2] = {0, 0};
  int64_t bytes_per_layer_slot = 0;
  const std::string* dirs[2] = {&models.full, &models.earn};
  for (int m = 0; m < 2; ++m) {
    auto engine = make_engine(engine_options(*dirs[m], 256, 1ll << 30));
    const ModelConfig& c = engine->model_config();
    const std::vector<int> block_sizes = engine->stats().block_size_per_group;
    const int block_size = block_sizes.front();
    const int marked_block_size = block_sizes.back();
    bytes_per_layer_slot = 2ll * c.num_key_value_heads * c.head_dim * sizeof(float);
    auto spec = load_spec(*engine, *dirs[m]);
    RunResult r = run_offline(*engine, rec_requests(*engine, *spec, users, n, 1));
    for (const RequestOutput& o : r.outputs) {
      // The prompt as the user sent it (BOS included; EARN's registers are counted apart).
      const int prompt = static_cast<int>(o.prompt_token_ids.size());
      // The last generated token (the stop token) is never fed back, so it has no KV.
      const int kv_generated = std::max(0, static_cast<int>(o.outputs.at(0).token_ids.size()) - 1);
      const int measured = measured_layer_slots(c, block_sizes, o.metrics);
      const int predicted =
          predicted_layer_slots(c, block_size, marked_block_size, prompt, kv_generated);
      if (measured != predicted) ++mismatches[m];
      sum[m] += measured;
      tokens[m] += token_layer_entries(c, prompt, kv_generated);
    }
    print({{"bench", "kv_pages"},
           {"model", m == 0 ? "full" : "earn"},
           {"requests", n},
           {"block_size", block_size},
           {"marked_block_size", c.earn ? marked_block_size : 0},
           {"layers", c.num_hidden_layers},
           {"split_layer", c.earn ? c.earn->split_layer : 0},
           {"mean_layer_slots_per_sequence", sum[m] / n},
           {"mean_kv_bytes_per_sequence", sum[m] / n * bytes_per_layer_slot},
           {"mean_token_layer_entries", static_cast<double>(tokens[m]) / n},
           {"requests_not_as_predicted", mismatches[m]}});
  }
  print({{"bench", "kv_pages_reduction"},
         {"requests", n},
         {"slot_reduction", 1.0 - sum[1] / sum[0]},
         {"token_entry_reduction", 1.0 - static_cast<double>(tokens[1]) / tokens[0]},
         {"ratio_full_over_earn", sum[0] / sum[1]},
         {"all_as_predicted", mismatches[0] == 0 && mismatches[1] == 0}});
}

// Mean peak blocks per KV group over the requests of a run.
std::vector<double> mean_peak_blocks(const RunResult& r) {
  std::vector<double> out;
  for (const RequestOutput& o : r.outputs) {
    const auto& peak = o.metrics.peak_kv_blocks;
    if (out.size() < peak.size()) out.resize(peak.size(), 0.0);
    for (size_t g = 0; g < peak.size(); ++g) out[g] += peak[g];
  }
  for (double& x : out) x /= std::max<size_t>(1, r.outputs.size());
  return out;
}

void bench_throughput(const Models& models, const std::vector<data::TestUser>& users, int n,
                      const std::vector<int>& widths, int max_requests) {
  for (int k : widths) {
    double rps[2] = {0, 0};
    double p50[2] = {0, 0};
    double p99[2] = {0, 0};
    const std::string* dirs[2] = {&models.full, &models.earn};
    for (int m = 0; m < 2; ++m) {
      auto engine = make_engine(engine_options(*dirs[m], max_requests * k, 2ll << 30));
      auto spec = load_spec(*engine, *dirs[m]);
      RunResult r = run_offline(*engine, rec_requests(*engine, *spec, users, n, k));
      rps[m] = n * 1000.0 / r.wall_ms;
      p50[m] = percentile(r.latency_ms, 0.5);
      p99[m] = percentile(r.latency_ms, 0.99);
      std::vector<double> blocks = mean_peak_blocks(r);
      print({{"bench", "earn_throughput"},
             {"model", m == 0 ? "full" : "earn"},
             {"beam", k},
             {"requests", n},
             {"max_concurrent_requests", max_requests},
             {"requests_per_s", rps[m]},
             {"p50_ms", p50[m]},
             {"p99_ms", p99[m]},
             {"mean_peak_blocks_per_group", blocks},
             {"steps", r.stats.num_steps},
             {"threads", num_threads()}});
    }
    print({{"bench", "earn_throughput_ratio"},
           {"beam", k},
           {"throughput", rps[1] / rps[0]},
           {"p50_speedup", p50[0] / p50[1]},
           {"p99_speedup", p99[0] / p99[1]}});
  }
}

void bench_latency(const Models& models, const std::vector<data::TestUser>& users, int n,
                   const std::vector<int>& widths) {
  for (int k : widths) {
    double p50[2] = {0, 0};
    double p99[2] = {0, 0};
    double mean_ms[2] = {0, 0};
    const std::string* dirs[2] = {&models.full, &models.earn};
    for (int m = 0; m < 2; ++m) {
      auto engine = make_engine(engine_options(*dirs[m], k, 1ll << 30));
      auto spec = load_spec(*engine, *dirs[m]);
      std::vector<double> latency;
      for (EngineRequest& r : rec_requests(*engine, *spec, users, n, k)) {
        RunResult one = run_offline(*engine, {std::move(r)});
        latency.push_back(one.wall_ms);
      }
      p50[m] = percentile(latency, 0.5);
      p99[m] = percentile(latency, 0.99);
      mean_ms[m] = mean(latency);
      print({{"bench", "earn_latency"},
             {"model", m == 0 ? "full" : "earn"},
             {"beam", k},
             {"requests", n},
             {"p50_ms", p50[m]},
             {"p99_ms", p99[m]},
             {"mean_ms", mean_ms[m]},
             {"threads", num_threads()}});
    }
    print({{"bench", "earn_latency_ratio"},
           {"beam", k},
           {"p50_speedup", p50[0] / p50[1]},
           {"p99_speedup", p99[0] / p99[1]},
           {"mean_speedup", mean_ms[0] / mean_ms[1]}});
  }
}

struct CapacityTrial {
  bool fits = false;  // every one of `concurrency` requests ran at once, with no preemption
  int peak_running = 0;
  int64_t preemptions = 0;
  std::vector<int> blocks_per_group;
};

// Runs 2 * concurrency requests of beam k with at most `concurrency` running at once.
CapacityTrial capacity_trial(const std::string& model, const std::vector<data::TestUser>& users,
                             int k, int concurrency, int64_t budget, double marked_ratio) {
  EngineOptions o = engine_options(model, concurrency * k, budget);
  o.earn_marked_slot_ratio = marked_ratio;
  auto created = Engine::create(o);
  if (!created.ok()) return {};  // e.g. the budget leaves a group without a block
  Engine& engine = **created;
  auto spec = load_spec(engine, model);
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (EngineRequest& r : rec_requests(engine, *spec, users, 2 * concurrency, k)) {
    auto s = engine.add_request(std::move(r));
    if (!s.ok()) return {};  // a single request larger than the whole cache
    streams.push_back(*s);
  }
  CapacityTrial t;
  while (engine.has_unfinished()) {
    auto stepped = engine.step();
    if (!stepped.ok()) die(stepped.status().to_string());
    t.peak_running = std::max(t.peak_running, engine.stats().num_running);
  }
  EngineStats stats = engine.stats();
  t.preemptions = stats.num_preemptions;
  t.blocks_per_group = stats.num_blocks_per_group;
  t.fits = t.preemptions == 0 && t.peak_running >= concurrency;
  return t;
}

// The largest number of requests that run at once, without preemption, in a fixed KV budget:
// binary search over the concurrency limit (each trial runs twice that many requests).
void bench_capacity(const Models& models, const std::vector<data::TestUser>& users,
                    const std::vector<int>& widths, int64_t budget) {
  for (int k : widths) {
    // The EARN pools' proportion: the slots its requests hold per group, with an ample budget.
    double ratio = 0.25;
    {
      auto engine = make_engine(engine_options(models.earn, 32 * k, 1ll << 30));
      auto spec = load_spec(*engine, models.earn);
      std::vector<double> blocks =
          mean_peak_blocks(run_offline(*engine, rec_requests(*engine, *spec, users, 64, k)));
      const std::vector<int> sizes = engine->stats().block_size_per_group;
      if (blocks.size() == 2 && blocks[0] > 0) {
        ratio = blocks[1] * sizes[1] / (blocks[0] * sizes[0]);
      }
    }
    int best[2] = {0, 0};
    const std::string* dirs[2] = {&models.full, &models.earn};
    for (int m = 0; m < 2; ++m) {
      int lo = 0;  // fits (0 trivially)
      int hi = std::max(2, 4096 / k);
      CapacityTrial at_best;
      while (lo + 1 < hi) {
        const int mid = (lo + hi) / 2;
        CapacityTrial t = capacity_trial(*dirs[m], users, k, mid, budget, ratio);
        if (t.fits) {
          lo = mid;
          at_best = t;
        } else {
          hi = mid;
        }
      }
      best[m] = lo;
      print({{"bench", "earn_capacity"},
             {"model", m == 0 ? "full" : "earn"},
             {"beam", k},
             {"kv_budget_bytes", budget},
             {"blocks_per_group", at_best.blocks_per_group},
             {"marked_slot_ratio", m == 1 ? ratio : 0.0},
             {"max_concurrent_requests", lo},
             {"max_concurrent_sequences", lo * k}});
    }
    print({{"bench", "earn_capacity_ratio"},
           {"beam", k},
           {"concurrent_requests", best[0] > 0 ? static_cast<double>(best[1]) / best[0] : 0.0}});
  }
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) {
  using namespace earnserve;
  auto parsed = cli::CliArgs::parse(
      std::vector<std::string>(argv + 1, argv + argc),
      {"--full", "--earn", "--data", "--requests", "--beam-widths", "--max-num-seqs",
       "--latency-requests", "--kv-budget-mib", "--capacity-widths", "--block-size",
       "--earn-block-size", "--threads", "--mode"},
      {});
  if (!parsed.ok() || !parsed->get("--full") || !parsed->get("--earn")) {
    std::fprintf(stderr,
                 "usage: earn_bench --full DIR --earn DIR [--data DIR] [--requests N] "
                 "[--beam-widths 10,20] [--max-num-seqs 32] [--latency-requests 100] "
                 "[--kv-budget-mib 32] [--capacity-widths 1,10,20] [--block-size 16] "
                 "[--earn-block-size 2] [--threads T] "
                 "[--mode all|kv_pages|throughput|latency|capacity]\n");
    return 2;
  }
  Models models{*parsed->get("--full"), *parsed->get("--earn")};
  const std::string data = parsed->get_or("--data", "../shared/datasets/beauty");
  auto users = data::test_users(data);
  if (users.empty()) {
    std::fprintf(stderr, "earn_bench: no Beauty test users under %s\n", data.c_str());
    return 1;
  }
  const int n =
      static_cast<int>(parsed->get_int("--requests", static_cast<int64_t>(users.size())).value());
  const std::vector<int> widths = bench::split_ints(parsed->get_or("--beam-widths", "10,20"));
  const int max_requests = static_cast<int>(parsed->get_int("--max-num-seqs", 32).value());
  const int latency_n = static_cast<int>(parsed->get_int("--latency-requests", 100).value());
  const int64_t budget = parsed->get_int("--kv-budget-mib", 32).value() << 20;
  const std::vector<int> capacity_widths =
      bench::split_ints(parsed->get_or("--capacity-widths", "1,10,20"));
  g_block_size = static_cast<int>(parsed->get_int("--block-size", 16).value());
  g_earn_block_size = static_cast<int>(parsed->get_int("--earn-block-size", 2).value());
  const std::string mode = parsed->get_or("--mode", "all");
  if (int t = static_cast<int>(parsed->get_int("--threads", 0).value()); t > 0) set_num_threads(t);

  // One beam per request is cheap: every test user, whatever --requests says.
  if (mode == "all" || mode == "kv_pages") {
    bench_kv_pages(models, users, static_cast<int>(users.size()));
  }
  if (mode == "all" || mode == "throughput") {
    bench_throughput(models, users, n, widths, max_requests);
  }
  if (mode == "all" || mode == "latency") bench_latency(models, users, latency_n, widths);
  if (mode == "all" || mode == "capacity") {
    bench_capacity(models, users, capacity_widths, budget);
  }
  return 0;
}
