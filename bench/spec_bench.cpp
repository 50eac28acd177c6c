// Speculative beam search benchmark (AtSpeed) on the Beauty test users, through the Engine:
// target-only catalogue-constrained beam search against speculative beam search with a draft
// model (strict and relaxed verification), for each beam width K and each gamma (N draft beams),
// in one run; a configuration the engine refuses is reported as skipped. Per
// configuration: requests/s and p50/p99 latency offline (all requests submitted at once, at most
// --max-concurrent requests running: max_num_seqs = C * K), p50/p99 latency one request at a time,
// Recall/NDCG@5/10/20 against the test targets (scheduler/recommendation/rec_eval.h, as
// `earnserve eval`), accepted steps per round, target (and draft) forward calls per request, and
// whether every speculative result equals the target-only one (same sequences in the same order,
// scores within 1e-4; strict verification only: relaxed verification samples). Orders that
// differ only between sequences of equal score (within 1e-5) are counted apart as tie
// reorderings.
// Every configuration runs on a fresh engine (no prefix cache carried over), after one warm-up
// request outside the measured set. One JSON line per configuration on stdout. --policies
// auto,always runs each speculative configuration under each speculation policy (auto: the
// engine's cost model decides each step whether and which tree to draft, N from K up to
// --num-draft-beams, gamma up to the configuration's; the lines say what it chose).
//
// --compare C1,C2,...: instead, the policies side by side: for each K and each concurrency C,
// one engine per policy (target-only, auto, always; the first --gammas and --verifications),
// then --repeats rounds that each run the same requests (a fresh slice of users per round, so
// that the prefix cache does not carry over) on every engine in turn (odd rounds in reverse
// order). C = 1 runs
// --serial-requests requests one at a time (requests/s = 1 / mean latency), C > 1 --requests
// requests at once with at most C running. One line per run, then one per (K, C) with the
// medians over the rounds, their ratios to target-only (also the median of the round-by-round
// ratios, `_paired_x_`), and the load average before and after. --policies control adds a second
// target-only engine: its ratios to the first are this machine's noise floor for the others
// (an A/A test). Speculative runs also report planning_fraction: the share of the run's wall
// time the engine spent deciding (SpeculativeRounds::planning_seconds), drafting excluded.
//   spec_bench --target DIR --draft DIR [--data DIR] [--requests N] [--beam-widths 10,20]
//              [--gammas 2,3,4] [--verifications strict,relaxed] [--num-draft-beams 40]
//              [--policies always] [--threads T] [--max-concurrent C] [--serial-requests M]
//              [--compare 1,8,32 --repeats 3] [--device cpu|cuda]
#include <cmath>
#include <ctime>
#include <fstream>
#include <map>

#include "bench/rec_bench_util.h"
#include "core/cli_args.h"
#include "core/threading.h"
#include "scheduler/recommendation/rec_eval.h"

namespace earnserve {
namespace {

using bench::percentile;
using bench::print;

constexpr double kScoreTolerance = 1e-4;
constexpr double kTieTolerance = 1e-5;

struct Config {
  int beam = 10;
  std::optional<SpeculativeParams> speculative;  // nullopt: target-only
  bool control = false;  // --compare's second target-only engine (the A/A control)
};

struct Options {
  std::string target, draft, data;
  int requests = 200;
  int serial_requests = 50;
  int max_concurrent = 8;
  int64_t kv_bytes = 512ll << 20;
  int64_t draft_kv_bytes = 256ll << 20;
  Device device = Device::kCPU;
};

const char* policy_name(const std::optional<SpeculativeParams>& p) {
  if (!p) return "target";
  return p->policy == SpeculativeParams::Policy::kAuto ? "auto" : "always";
}

const char* policy_name(const Config& c) {
  return c.control ? "control" : policy_name(c.speculative);
}

// What the policy chose, summed over the outputs: rounds by tree ("N x levels drafted") and
// plain steps by reason.
nlohmann::json choices_json(const std::vector<RequestOutput>& outputs) {
  std::map<std::string, int64_t> trees;
  int64_t cost = 0, no_room = 0, rounds = 0;
  for (const RequestOutput& o : outputs) {
    if (!o.speculative) continue;
    rounds += o.speculative->num_rounds;
    cost += o.speculative->num_plain_steps_cost;
    no_room += o.speculative->num_plain_steps_no_room;
    for (const auto& t : o.speculative->trees) {
      ++trees[std::to_string(t[0]) + "x" + std::to_string(t[1])];
    }
  }
  return {{"rounds", rounds},
          {"trees", trees},
          {"plain_steps", {{"cost", cost}, {"no_room", no_room}}}};
}

// "a,b,c" -> {"a", "b", "c"} ("" -> {""}).
std::vector<std::string> split_words(const std::string& list) {
  std::vector<std::string> out;
  for (size_t start = 0; start <= list.size();) {
    const size_t end = std::min(list.find(',', start), list.size());
    out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::unique_ptr<Engine> make_engine(const Options& opt, int max_num_seqs) {
  EngineOptions o;
  o.model_dir = opt.target;
  o.draft_model_dir = opt.draft;
  o.max_num_seqs = max_num_seqs;
  o.max_num_batched_tokens = 8192;
  o.kv_cache_memory_bytes = opt.kv_bytes;
  o.draft_kv_cache_memory_bytes = opt.draft_kv_bytes;
  o.device = opt.device;
  return bench::make_engine(o);
}

std::vector<EngineRequest> requests_for(const Engine& engine, const RecommendationSpec& spec,
                                        const std::vector<data::TestUser>& users, int n,
                                        const Config& c) {
  std::vector<EngineRequest> out = bench::rec_requests(engine, spec, users, n, c.beam);
  for (EngineRequest& r : out) r.params.speculative = c.speculative;
  return out;
}

std::vector<EngineRequest> requests_for(const Engine& engine, const RecommendationSpec& spec,
                                        const std::vector<data::TestUser>& users, int offset, int n,
                                        const Config& c) {
  std::vector<data::TestUser> slice;
  for (int i = 0; i < n; ++i) slice.push_back(users[(offset + i) % users.size()]);
  return requests_for(engine, spec, slice, n, c);
}

// One request outside the measured set (a one-item history) so thread pools and buffers exist.
// An error means the engine refuses the configuration.
Status warm_up(Engine& engine, const RecommendationSpec& spec, const Config& c) {
  RecommendationQuery q;
  q.history = {spec.catalogue().item(0).id};
  q.top_k = c.beam;
  auto r = spec.make_request(q, engine.tokenizer(), "warm-up");
  if (!r.ok()) bench::die(r.status().to_string());
  r->params.speculative = c.speculative;
  return engine.generate({std::move(*r)}).status();
}

struct Measured {
  Status status;  // not OK: the engine refused the configuration; nothing else is set
  std::shared_ptr<const RecommendationSpec> spec;
  bench::RunResult offline;
  std::vector<double> serial_ms;
  double serial_target_calls_per_request = 0;
};

Measured measure(const Options& opt, const std::vector<data::TestUser>& users, const Config& c) {
  Measured m;
  {
    auto engine = make_engine(opt, opt.max_concurrent * c.beam);
    auto spec = bench::load_spec(*engine, opt.target);
    m.status = warm_up(*engine, *spec, c);
    if (!m.status.ok()) return m;
    m.offline = bench::run_offline(*engine, requests_for(*engine, *spec, users, opt.requests, c));
    m.spec = spec;
  }
  auto engine = make_engine(opt, c.beam);
  auto spec = bench::load_spec(*engine, opt.target);
  if (Status s = warm_up(*engine, *spec, c); !s.ok()) bench::die(s.to_string());
  int64_t calls = 0;
  for (EngineRequest& r : requests_for(*engine, *spec, users, opt.serial_requests, c)) {
    const int64_t before = engine->stats().num_target_calls;
    const auto start = Clock::now();
    auto out = engine->generate({std::move(r)});
    if (!out.ok()) bench::die(out.status().to_string());
    m.serial_ms.push_back(bench::Ms(Clock::now() - start).count());
    calls += engine->stats().num_target_calls - before;
  }
  m.serial_target_calls_per_request =
      opt.serial_requests > 0 ? static_cast<double>(calls) / opt.serial_requests : 0.0;
  return m;
}

// How `got` differs from the target-only `want` (parallel requests): requests whose sequences or
// order differ, and the largest score difference among matching sequences.
struct Comparison {
  int mismatched_requests = 0;
  // Requests with the same sequences and scores whose order differs only between sequences of
  // equal score (within kTieTolerance): floating-point ties, broken differently because the two
  // runs compute the same logits in different batch shapes. Not counted as mismatched.
  int tie_reordered_requests = 0;
  double max_score_diff = 0;
  std::vector<std::string> details;  // the first few mismatches, for stderr
};

std::string describe(const std::vector<SequenceOutput>& outs) {
  std::string s;
  for (const SequenceOutput& o : outs) {
    s += " " + std::to_string(o.item_index) + "(" + std::to_string(o.score) + ")";
  }
  return s;
}

Comparison compare(const std::vector<RequestOutput>& want, const std::vector<RequestOutput>& got) {
  Comparison c;
  for (size_t i = 0; i < want.size(); ++i) {
    const auto& a = want[i].outputs;
    const auto& b = got[i].outputs;
    bool same = a.size() == b.size();
    for (size_t k = 0; same && k < a.size(); ++k) {
      same = a[k].token_ids == b[k].token_ids && a[k].item_index == b[k].item_index;
      if (same) {
        const double d = std::fabs(static_cast<double>(a[k].score) - b[k].score);
        c.max_score_diff = std::max(c.max_score_diff, d);
        same = d <= kScoreTolerance;
      }
    }
    if (!same && a.size() == b.size()) {
      // A reordering among tied scores: position by position the scores agree, and the same
      // sequences appear.
      bool tied = true;
      std::vector<std::vector<int32_t>> sa, sb;
      for (size_t k = 0; tied && k < a.size(); ++k) {
        tied = std::fabs(static_cast<double>(a[k].score) - b[k].score) <= kTieTolerance;
        sa.push_back(a[k].token_ids);
        sb.push_back(b[k].token_ids);
      }
      std::sort(sa.begin(), sa.end());
      std::sort(sb.begin(), sb.end());
      if (tied && sa == sb) {
        ++c.tie_reordered_requests;
        continue;
      }
    }
    if (!same) {
      ++c.mismatched_requests;
      if (c.details.size() < 5) {
        c.details.push_back("request " + std::to_string(i) + "\n  target:     " + describe(a) +
                            "\n  speculative:" + describe(b));
      }
    }
  }
  return c;
}

// One run of the side-by-side comparison: requests/s, p50 latency, the outputs.
struct Sample {
  double requests_per_s = 0;
  double p50_ms = 0;
  double planning_seconds = 0;  // SpeculativeRounds::planning_seconds() during the run
  // Process CPU time per request: blind to other processes' share of the cores, which wall time
  // is not (still subject to their cache and memory traffic).
  double cpu_s_per_request = 0;
  std::vector<RequestOutput> outputs;
};

// CPU seconds used by this process so far (all threads).
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

Sample run_sample(Engine& engine, std::vector<EngineRequest> requests, bool serial) {
  Sample s;
  const double cpu_before = process_cpu_seconds();
  const size_t n = requests.size();
  if (!serial) {
    bench::RunResult r = bench::run_offline(engine, std::move(requests));
    s.requests_per_s = r.outputs.size() * 1000.0 / r.wall_ms;
    s.p50_ms = percentile(r.latency_ms, 0.5);
    s.outputs = std::move(r.outputs);
    s.cpu_s_per_request = (process_cpu_seconds() - cpu_before) / static_cast<double>(n);
    return s;
  }
  std::vector<double> ms;
  for (EngineRequest& r : requests) {
    const auto start = Clock::now();
    auto out = engine.generate({std::move(r)});
    if (!out.ok()) bench::die(out.status().to_string());
    ms.push_back(bench::Ms(Clock::now() - start).count());
    s.outputs.push_back(std::move((*out)[0]));
  }
  s.requests_per_s = ms.size() * 1000.0 / std::max(1e-9, bench::mean(ms) * ms.size());
  s.p50_ms = percentile(ms, 0.5);
  s.cpu_s_per_request = (process_cpu_seconds() - cpu_before) / static_cast<double>(n);
  return s;
}

double median(std::vector<double> v) { return percentile(std::move(v), 0.5); }

// What the engine's speculation cost model holds now: predicted target and draft forward times
// (ms) by rows, and acceptance per level by width bucket (N <= K, 2K, 4K, more) and position.
nlohmann::json cost_model_json(const Engine& engine, int k) {
  const SpeculativeRounds* spec = engine.speculative();
  if (!spec) return nullptr;
  nlohmann::json target, draft, acceptance;
  for (int rows : {1, k, 2 * k, 4 * k, 8 * k, 16 * k, 32 * k}) {
    target[std::to_string(rows)] = spec->target_costs().predict(rows) * 1e3;
    draft[std::to_string(rows)] = engine.drafter()->step_costs().predict(rows) * 1e3;
  }
  for (int multiple : {1, 2, 4, 8}) {
    std::vector<double> p;
    for (int pos = 0; pos < 5; ++pos) {
      p.push_back(
          spec->acceptance().probability(AcceptanceTable::Mode::kStrict, multiple * k, k, pos));
    }
    acceptance["N=" + std::to_string(multiple) + "K"] = p;
  }
  return {{"target_ms", target}, {"draft_ms", draft}, {"strict_acceptance", acceptance}};
}

// The side-by-side comparison of target-only, auto and always (see the file comment).
bool run_compare(const Options& opt, const std::vector<data::TestUser>& users,
                 const std::vector<int>& widths, const std::vector<int>& concurrency, int repeats,
                 SpeculativeParams base, const std::vector<SpeculativeParams::Policy>& policies,
                 bool control) {
  bool all_equal = true;
  for (int k : widths) {
    for (int c : concurrency) {
      const bool serial = c == 1;
      const int n = serial ? opt.serial_requests : opt.requests;
      std::vector<Config> configs = {Config{k, std::nullopt}};
      for (SpeculativeParams::Policy policy : policies) {
        SpeculativeParams p = base;
        p.num_draft_beams = std::max(p.num_draft_beams, k);
        p.policy = policy;
        configs.push_back(Config{k, p});
      }
      if (control) configs.push_back(Config{k, std::nullopt, /*control=*/true});
      const std::string load_before = load_average();
      std::vector<std::unique_ptr<Engine>> engines;
      std::shared_ptr<const RecommendationSpec> spec;
      for (const Config& cfg : configs) {
        engines.push_back(make_engine(opt, c * k));
        spec = bench::load_spec(*engines.back(), opt.target);
        if (Status st = warm_up(*engines.back(), *spec, cfg); !st.ok()) bench::die(st.to_string());
      }
      std::vector<std::vector<double>> rps(configs.size()), p50(configs.size()),
          cpu(configs.size());
      std::vector<std::vector<RequestOutput>> last(configs.size());
      int mismatched = 0;
      for (int r = 0; r < repeats; ++r) {
        // Odd rounds run the engines in reverse order, so that a drift within a round (caches,
        // clock, the other core's load) favours no policy.
        std::vector<Sample> samples(configs.size());
        for (size_t step = 0; step < configs.size(); ++step) {
          const size_t i = r % 2 == 0 ? step : configs.size() - 1 - step;
          const SpeculativeRounds* rounds = engines[i]->speculative();
          const double planning_before = rounds ? rounds->planning_seconds() : 0.0;
          samples[i] = run_sample(
              *engines[i], requests_for(*engines[i], *spec, users, r * n, n, configs[i]), serial);
          if (rounds) samples[i].planning_seconds = rounds->planning_seconds() - planning_before;
        }
        for (size_t i = 0; i < configs.size(); ++i) {
          const Sample& s = samples[i];
          rps[i].push_back(s.requests_per_s);
          cpu[i].push_back(s.cpu_s_per_request);
          p50[i].push_back(s.p50_ms);
          nlohmann::json j = {{"bench", "spec_compare_run"},
                              {"beam", k},
                              {"concurrency", c},
                              {"policy", policy_name(configs[i])},
                              {"repeat", r},
                              {"requests", n},
                              {"requests_per_s", s.requests_per_s},
                              {"p50_ms", s.p50_ms},
                              {"cpu_ms_per_request", 1e3 * s.cpu_s_per_request}};
          if (configs[i].speculative) {
            // Wall time of the run: n requests at requests_per_s.
            j["planning_fraction"] = s.planning_seconds * s.requests_per_s / n;
            j["choices"] = choices_json(s.outputs);
            j["cost_model"] = cost_model_json(*engines[i], k);
            if (base.verification == SpeculativeParams::Verification::kStrict) {
              const Comparison cmp = compare(samples[0].outputs, s.outputs);
              mismatched += cmp.mismatched_requests;
              j["mismatched_requests"] = cmp.mismatched_requests;
              j["tie_reordered_requests"] = cmp.tie_reordered_requests;
            }
          }
          print(j);
        }
      }
      all_equal = all_equal && mismatched == 0;
      nlohmann::json sum = {
          {"bench", "spec_compare"},
          {"beam", k},
          {"concurrency", c},
          {"requests", n},
          {"repeats", repeats},
          {"verification",
           base.verification == SpeculativeParams::Verification::kStrict ? "strict" : "relaxed"},
          {"num_draft_beams", std::max(base.num_draft_beams, k)},
          {"gamma", base.num_speculative_steps},
          {"threads", num_threads()},
          {"load_before", load_before},
          {"load_after", load_average()}};
      if (base.verification == SpeculativeParams::Verification::kStrict) {
        sum["mismatched_requests"] = mismatched;
      }
      const double base_rps = median(rps[0]), base_p50 = median(p50[0]);
      for (size_t i = 0; i < configs.size(); ++i) {
        const std::string name = policy_name(configs[i]);
        sum[name + "_requests_per_s"] = median(rps[i]);
        sum[name + "_p50_ms"] = median(p50[i]);
        sum[name + "_x_requests_per_s"] = median(rps[i]) / base_rps;
        sum[name + "_x_p50"] = base_p50 / median(p50[i]);
        // The same ratios taken round by round (each round's engines ran back to back on the
        // same users), then their median: less sensitive to load that changes between rounds.
        std::vector<double> rps_ratio, p50_ratio, cpu_ratio;
        for (int r = 0; r < repeats; ++r) {
          rps_ratio.push_back(rps[i][r] / rps[0][r]);
          p50_ratio.push_back(p50[0][r] / p50[i][r]);
          cpu_ratio.push_back(cpu[0][r] / cpu[i][r]);
        }
        sum[name + "_paired_x_requests_per_s"] = median(rps_ratio);
        sum[name + "_paired_x_p50"] = median(p50_ratio);
        // Requests per CPU second, round by round (> 1: fewer CPU seconds than target-only).
        sum[name + "_paired_x_cpu"] = median(cpu_ratio);
      }
      print(sum);
    }
  }
  return all_equal;
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) {
  using namespace earnserve;
  using namespace earnserve::bench;
  auto parsed = cli::CliArgs::parse(
      std::vector<std::string>(argv + 1, argv + argc),
      {"--target", "--draft", "--data", "--requests", "--beam-widths", "--gammas",
       "--num-draft-beams", "--threads", "--max-concurrent", "--serial-requests", "--verifications",
       "--policies", "--compare", "--repeats"},
      {});
  if (!parsed.ok() || !parsed->get("--target") || !parsed->get("--draft")) {
    std::fprintf(stderr,
                 "%s\nusage: spec_bench --target DIR --draft DIR [--data DIR] [--requests N] "
                 "[--beam-widths 10,20] [--gammas 2,3,4] [--verifications strict,relaxed] "
                 "[--num-draft-beams 40] [--threads T] [--max-concurrent 8] "
                 "[--serial-requests 50] [--policies always,auto,control] [--compare 1,8,32] "
                 "[--repeats 3] [--device cpu|cuda]\n",
                 parsed.ok() ? "spec_bench: --target and --draft are required"
                             : ("spec_bench: " + parsed.status().message()).c_str());
    return 2;
  }
  Options opt;
  opt.target = *parsed->get("--target");
  opt.draft = *parsed->get("--draft");
  opt.data = parsed->get_or("--data", "../shared/datasets/beauty");
  auto get = [&](const char* name, int64_t fallback, int64_t min) {
    StatusOr<int64_t> v = parsed->get_int(name, fallback);
    if (!v.ok()) die(v.status().message());
    if (*v < min) die(std::string(name) + " must be at least " + std::to_string(min));
    return static_cast<int>(*v);
  };
  opt.requests = get("--requests", 200, 1);
  opt.serial_requests = get("--serial-requests", std::min(opt.requests, 50), 0);
  opt.max_concurrent = get("--max-concurrent", 8, 1);
  const int num_draft_beams = get("--num-draft-beams", 40, 1);
  if (int t = get("--threads", 0, 0); t > 0) set_num_threads(t);
  std::vector<int> widths, gammas;
  try {
    widths = split_ints(parsed->get_or("--beam-widths", "10,20"));
    gammas = split_ints(parsed->get_or("--gammas", "2,3,4"));
  } catch (const std::exception&) {
    die("--beam-widths and --gammas take comma-separated integers");
  }
  for (int k : widths) {
    if (k < 1 || k > kMaxBeamWidth) die("--beam-widths must lie in [1, 512]");
  }
  for (int g : gammas) {
    if (g < 1 || g > kMaxSpeculativeSteps) die("--gammas must lie in [1, 8]");
  }
  std::vector<SpeculativeParams::Verification> verifications;
  for (const std::string& v : split_words(parsed->get_or("--verifications", "strict,relaxed"))) {
    if (v != "strict" && v != "relaxed") {
      die("--verifications takes strict and/or relaxed, got '" + v + "'");
    }
    verifications.push_back(v == "strict" ? SpeculativeParams::Verification::kStrict
                                          : SpeculativeParams::Verification::kRelaxed);
  }

  std::vector<SpeculativeParams::Policy> policies;
  bool control = false;
  for (const std::string& v : split_words(parsed->get_or("--policies", "always"))) {
    if (v == "control") {
      control = true;
      continue;
    }
    if (v != "auto" && v != "always") {
      die("--policies takes auto, always and (with --compare) control, got '" + v + "'");
    }
    policies.push_back(v == "auto" ? SpeculativeParams::Policy::kAuto
                                   : SpeculativeParams::Policy::kAlways);
  }
  if (control && !parsed->get("--compare")) die("--policies control needs --compare");
  const int repeats = get("--repeats", 3, 1);
  if (const std::string d = parsed->get_or("--device", "cpu"); d == "cuda") {
    opt.device = Device::kCUDA;
  } else if (d != "cpu") {
    die("--device takes cpu or cuda, got '" + d + "'");
  }

  const std::vector<data::TestUser> users = data::test_users(opt.data);
  if (users.empty()) die("no Beauty test users under " + opt.data);
  if (auto list = parsed->get("--compare")) {
    std::vector<int> concurrency;
    try {
      concurrency = split_ints(*list);
    } catch (const std::exception&) {
      die("--compare takes comma-separated concurrencies");
    }
    for (int c : concurrency) {
      if (c < 1) die("--compare concurrencies must be at least 1");
    }
    SpeculativeParams base;
    base.num_draft_beams = num_draft_beams;
    base.num_speculative_steps = gammas.front();
    base.verification = verifications.front();
    if (!parsed->get("--policies")) {
      policies = {SpeculativeParams::Policy::kAuto, SpeculativeParams::Policy::kAlways};
    }
    const bool equal =
        run_compare(opt, users, widths, concurrency, repeats, base, policies, control);
    print({{"bench", "spec_summary"}, {"all_equal_to_target", equal}});
    return equal ? 0 : 3;
  }

  bool all_equal = true;
  for (int k : widths) {
    std::vector<RequestOutput> baseline;
    double base_rps = 0, base_p50 = 0, base_serial_p50 = 0;
    std::vector<Config> configs = {Config{k, std::nullopt}};
    for (SpeculativeParams::Policy policy : policies) {
      for (SpeculativeParams::Verification v : verifications) {
        for (int g : gammas) {
          SpeculativeParams p;
          p.num_draft_beams = std::max(num_draft_beams, k);
          p.num_speculative_steps = g;
          p.verification = v;
          p.policy = policy;
          configs.push_back(Config{k, p});
        }
      }
    }
    for (const Config& c : configs) {
      const bool strict =
          c.speculative && c.speculative->verification == SpeculativeParams::Verification::kStrict;
      const char* mode = !c.speculative ? "target" : strict ? "strict" : "relaxed";
      Measured m = measure(opt, users, c);
      if (!m.status.ok()) {
        print({{"bench", "spec"},
               {"mode", mode},
               {"beam", k},
               {"gamma", c.speculative->num_speculative_steps},
               {"skipped", m.status.message()}});
        continue;
      }
      const RunResult& r = m.offline;
      // Quality is measured against the targets of the users the requests were made for.
      const data::RankingMetrics q = data::ranking_metrics(*m.spec, users, r.outputs);
      const data::SpeculativeSummary s = data::summarize_speculative(r.outputs);
      const double rps = opt.requests * 1000.0 / r.wall_ms;
      const double p50 = percentile(r.latency_ms, 0.5);
      const double serial_p50 = percentile(m.serial_ms, 0.5);
      nlohmann::json j = {{"bench", "spec"},
                          {"mode", mode},
                          {"beam", k},
                          {"requests", opt.requests},
                          {"max_concurrent_requests", opt.max_concurrent},
                          {"requests_per_s", rps},
                          {"p50_ms", p50},
                          {"p99_ms", percentile(r.latency_ms, 0.99)},
                          {"serial_requests", opt.serial_requests},
                          {"serial_p50_ms", serial_p50},
                          {"serial_p99_ms", percentile(m.serial_ms, 0.99)},
                          {"invalid_items", q.invalid_items},
                          {"threads", num_threads()}};
      for (size_t i = 0; i < q.ks.size(); ++i) {
        j["recall@" + std::to_string(q.ks[i])] = q.recall[i];
        j["ndcg@" + std::to_string(q.ks[i])] = q.ndcg[i];
      }
      if (!c.speculative) {
        baseline = r.outputs;
        base_rps = rps;
        base_p50 = p50;
        base_serial_p50 = serial_p50;
        j["target_calls_per_request"] = m.serial_target_calls_per_request;
      } else {
        j["gamma"] = c.speculative->num_speculative_steps;
        j["num_draft_beams"] = c.speculative->num_draft_beams;
        j["policy"] = policy_name(c.speculative);
        j["choices"] = choices_json(r.outputs);
        j["rounds"] = s.num_rounds;
        j["accepted_steps_per_round"] = s.accepted_steps_per_round();
        j["target_calls_per_request"] = s.target_calls_per_request();
        j["draft_calls_per_request"] = s.draft_calls_per_request();
        j["serial_target_calls_per_request"] = m.serial_target_calls_per_request;
        if (strict) {  // relaxed verification samples: it is not meant to equal beam search
          const Comparison cmp = compare(baseline, r.outputs);
          all_equal = all_equal && cmp.mismatched_requests == 0;
          for (const std::string& d : cmp.details)
            std::fprintf(stderr, "mismatch: %s\n", d.c_str());
          j["equal_to_target"] = cmp.mismatched_requests == 0;
          j["mismatched_requests"] = cmp.mismatched_requests;
          j["tie_reordered_requests"] = cmp.tie_reordered_requests;
          j["max_score_diff"] = cmp.max_score_diff;
        }
        j["speedup_requests_per_s"] = rps / base_rps;
        j["speedup_p50"] = base_p50 / p50;
        j["speedup_serial_p50"] = base_serial_p50 / serial_p50;
      }
      print(j);
    }
  }
  print({{"bench", "spec_summary"}, {"all_equal_to_target", all_equal}});
  return all_equal ? 0 : 3;
}
