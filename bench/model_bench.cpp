// model_bench: prefill and decode speed of one sequence through FixedSlotRunner (the model's own
// forward with paged KV, no scheduler), beside OpenBLAS's multi-threaded sgemm on the prefill's
// dominant GEMM shape measured in the same run with the same thread count.
//
// Prints one JSON line per measurement (sgemm, copy, prefill, decode, and with --step-rows a
// batched step). Each figure is the best of
// --repeats timed repetitions after one untimed warm-up (which also faults in the memory-mapped
// weights): best-of rather than mean because other processes share this machine's cores and only
// ever make a run slower. The decode line also lists every repeat's rate (`tokens_per_s_each`):
// decode runs at the machine's memory bandwidth of the moment, which on a shared VM moves between
// levels, and bench/run_decode_pairs.sh compares engines level by level from those samples.
//
// Prompt ids come from a 64-bit LCG (see prompt_ids()) so that tools/bench_baselines.py feeds
// transformers and llama.cpp the very same ids; decode continues greedily (argmax), and the
// decode line lists the first generated ids so the engines' outputs can be compared.
//
// copy: memcpy of 512 MiB split over --threads workers; bytes copied per second (each byte is read
// once and written once), the bandwidth decode's weight reads are compared with.
//
// step (--step-rows B): B sequences, each holding a 16-token prompt, advance by one token each in
// one batched step: the shape of a beam-B recommendation step (B rows through every matrix); the
// prompts are short so the figure is the matrices' cost, not attention's.
//
// FLOP counts (multiply-add = 2 FLOPs):
//   matmuls:   2 * (per-layer projection parameters * layers) per token, plus 2 * vocab * hidden
//              for each row whose logits are computed (prefill computes only the last row);
//   attention: 4 * layers * heads * head_dim per (query, key) pair, i.e. times the sum over
//              queries of their context lengths (N (N + 1) / 2 for a causal prefill of N).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench/memcpy_bandwidth.h"
#include "core/cli_args.h"
#include "core/threading.h"
#include "kernels/cpu/blas.h"
#include "model/fixed_slot_runner.h"
#include "model/registry.h"

namespace earnserve {
namespace {

constexpr const char* kHelp =
    "usage: model_bench --model DIR [options]\n"
    "  --prompt-len N       prompt tokens prefilled in one step (default 128)\n"
    "  --decode-tokens M    tokens decoded one by one after the prefill (default 64)\n"
    "  --threads T          worker threads for our kernels and for sgemm (default: all cores)\n"
    "  --weight-dtype D     f32 | bf16 | f16 | int8 (default f32)\n"
    "  --repeats R          timed repetitions; the best is reported (default 3)\n"
    "  --step-rows B        also time one batched step of B sequences, one token each\n"
    "  --label NAME         model name in the JSON lines (default: the directory's name)\n"
    "  --bursts             after loading, decode on command from stdin instead: each line\n"
    "                       'prefill' restarts from the prompt (untimed); 'decode K' times K\n"
    "                       greedy decode steps; each prints one JSON line; 'quit' or end of\n"
    "                       input ends\n"
    "                       (bench/decode_interleaved.py alternates these with llama.cpp's)\n";

// Ids the greedy decode lists in its JSON line.
constexpr int kGreedyIdsShown = 16;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Prompt token ids in [first_id, vocab): x <- x * 6364136223846793005 + 1442695040888963407
// (mod 2^64) from x = seed, id = first_id + (x >> 33) % (vocab - first_id). The ids below
// first_id (unk, bos, eos in Llama vocabularies) are avoided. Python mirror in
// tools/bench_baselines.py.
std::vector<int32_t> prompt_ids(int64_t count, int64_t vocab, uint64_t seed) {
  const int64_t first_id = vocab > 3 ? 3 : 0;
  std::vector<int32_t> ids;
  uint64_t x = seed;
  for (int64_t i = 0; i < count; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    ids.push_back(static_cast<int32_t>(
        first_id + static_cast<int64_t>((x >> 33) % static_cast<uint64_t>(vocab - first_id))));
  }
  return ids;
}

int32_t argmax(const std::vector<float>& logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

struct FlopModel {
  double layer_matmul_params = 0;  // all layers' projection weights
  double lm_head_params = 0;
  double attention_per_pair = 0;  // FLOPs per (query, key) pair over all layers
  double weight_bytes = 0;        // weights one decode step reads (projections + lm_head)
};

FlopModel flop_model(const ModelConfig& c, DType weight_dtype) {
  const double hidden = static_cast<double>(c.hidden_size);
  const double q_dim = static_cast<double>(c.num_attention_heads * c.head_dim);
  const double kv_dim = static_cast<double>(c.num_key_value_heads * c.head_dim);
  const double inter = static_cast<double>(c.intermediate_size);
  const double layers = static_cast<double>(c.num_hidden_layers);
  FlopModel f;
  f.layer_matmul_params =
      layers * (hidden * (q_dim + 2 * kv_dim) + q_dim * hidden + 3 * hidden * inter);
  f.lm_head_params = static_cast<double>(c.vocab_size) * hidden;
  f.attention_per_pair = 4.0 * layers * static_cast<double>(c.num_attention_heads * c.head_dim);
  f.weight_bytes =
      (f.layer_matmul_params + f.lm_head_params) * static_cast<double>(dtype_size(weight_dtype));
  return f;
}

// Best-of-`repeats` GFLOP/s of C[m, n] = A[m, k] * B[n, k]^T, the layout of a linear layer with
// row-major weights, on OpenBLAS's own threads. Each repetition loops until ~0.2 s has passed so
// that short products are timed over many calls.
double sgemm_gflops(int64_t m, int64_t k, int64_t n, int threads, int repeats) {
  cpu::set_blas_num_threads(threads);
  std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(n * k)),
      c(static_cast<size_t>(m * n));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 13) * 0.01f - 0.06f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 7) * 0.01f - 0.03f;
  auto call = [&] {
    cpu::sgemm(true, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a.data(),
               static_cast<int>(k), b.data(), static_cast<int>(k), 0.0f, c.data(),
               static_cast<int>(n));
  };
  call();  // warm-up: OpenBLAS starts its threads, pages are touched
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(k) * static_cast<double>(n);
  double best = 0;
  for (int r = 0; r < repeats; ++r) {
    int calls = 0;
    const Clock::time_point start = Clock::now();
    double elapsed = 0;
    do {
      call();
      ++calls;
      elapsed = seconds_since(start);
    } while (elapsed < 0.2);
    best = std::max(best, flops * calls / elapsed / 1e9);
  }
  return best;
}

StatusOr<DType> parse_weight_dtype(const std::string& name) {
  if (name == "f32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  if (name == "f16") return DType::kF16;
  if (name == "int8") return DType::kI8;
  return invalid_argument("--weight-dtype must be f32, bf16, f16 or int8, got '" + name + "'");
}

int fail(const Status& s) {
  std::fprintf(stderr, "model_bench: %s\n", s.message().c_str());
  return 1;
}

void print_line(const nlohmann::json& line) {
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

// --bursts: decode bursts on command. The sequence is the prompt (prefilled untimed, on 'prefill'
// or before a burst that has none or would outgrow the runner's `capacity` positions) followed by
// greedy tokens. Bad commands get an "error" line and change nothing.
int serve_bursts(FixedSlotRunner& runner, const std::vector<int32_t>& prompt, int64_t capacity,
                 const nlohmann::json& base) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  int64_t position = 0;  // 0: no sequence yet
  int32_t last = 0;
  nlohmann::json ready = base;
  ready["measure"] = "ready";
  ready["prompt_len"] = n;
  ready["max_burst"] = capacity - n;
  print_line(ready);
  auto start_over = [&]() -> Status {
    runner.reset(0);
    StatusOr<std::vector<float>> logits = runner.prefill(0, prompt);
    if (!logits.ok()) return logits.status();
    last = argmax(*logits);
    position = n;
    return Status::Ok();
  };
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream words(line);
    std::string command;
    int64_t k = 0;
    words >> command;
    if (command == "quit") break;
    if (command == "prefill") {
      if (Status s = start_over(); !s.ok()) return fail(s);
      nlohmann::json done = base;
      done["measure"] = "prefilled";
      done["first_id"] = last;
      print_line(done);
      continue;
    }
    if (command != "decode" || !(words >> k) || k < 1 || k > capacity - n) {
      nlohmann::json error = base;
      error["measure"] = "error";
      error["message"] = "expected 'decode K' with K in [1, " + std::to_string(capacity - n) +
                         "], 'prefill' or 'quit', got '" + line + "'";
      print_line(error);
      continue;
    }
    if (position == 0 || position + k > capacity) {
      if (Status s = start_over(); !s.ok()) return fail(s);
    }
    std::vector<int32_t> ids;
    const Clock::time_point start = Clock::now();
    for (int64_t i = 0; i < k; ++i) {
      StatusOr<std::vector<float>> next = runner.decode(0, last);
      if (!next.ok()) return fail(next.status());
      last = argmax(*next);
      ids.push_back(last);
    }
    const double seconds = seconds_since(start);
    position += k;
    nlohmann::json burst = base;
    burst["measure"] = "burst";
    burst["tokens"] = k;
    burst["seconds"] = seconds;
    burst["tokens_per_s"] = static_cast<double>(k) / seconds;
    burst["ids"] = ids;
    print_line(burst);
  }
  return 0;
}

int run(const std::vector<std::string>& raw) {
  StatusOr<cli::CliArgs> parsed =
      cli::CliArgs::parse(raw,
                          {"--model", "--prompt-len", "--decode-tokens", "--threads",
                           "--weight-dtype", "--repeats", "--label", "--step-rows"},
                          {"--help", "--bursts"});
  if (!parsed.ok()) {
    std::fprintf(stderr, "model_bench: %s\n%s", parsed.status().message().c_str(), kHelp);
    return 2;
  }
  const cli::CliArgs& args = *parsed;
  if (args.flag("--help")) {
    std::printf("%s", kHelp);
    return 0;
  }
  const std::string model_dir = args.get_or("--model", "");
  if (model_dir.empty()) {
    std::fprintf(stderr, "model_bench: --model is required\n%s", kHelp);
    return 2;
  }
  auto prompt_len = args.get_int("--prompt-len", 128);
  auto decode_tokens = args.get_int("--decode-tokens", 64);
  auto threads = args.get_int("--threads", num_threads());
  auto repeats = args.get_int("--repeats", 3);
  auto step_rows = args.get_int("--step-rows", 0);
  for (const Status& s : {prompt_len.status(), decode_tokens.status(), threads.status(),
                          repeats.status(), step_rows.status()}) {
    if (!s.ok()) return fail(s);
  }
  if (*prompt_len < 1 || *decode_tokens < 0 || *threads < 1 || *repeats < 1 || *step_rows < 0 ||
      *step_rows > 4096) {
    return fail(invalid_argument(
        "--prompt-len, --threads and --repeats must be >= 1, --decode-tokens >= 0 and "
        "--step-rows in [0, 4096]"));
  }
  StatusOr<DType> weight_dtype = parse_weight_dtype(args.get_or("--weight-dtype", "f32"));
  if (!weight_dtype.ok()) return fail(weight_dtype.status());
  std::string label = args.get_or("--label", "");
  if (label.empty()) {
    label = std::filesystem::path(model_dir).lexically_normal().filename().string();
    if (label.empty()) label = std::filesystem::path(model_dir).parent_path().filename().string();
  }

  set_num_threads(static_cast<int>(*threads));
  LoadOptions options;
  options.weight_dtype = *weight_dtype;
  StatusOr<std::unique_ptr<CausalLM>> loaded = load_causal_lm(model_dir, options);
  if (!loaded.ok()) return fail(loaded.status());
  CausalLM& model = **loaded;
  const ModelConfig& config = model.config();
  const int64_t n = *prompt_len;
  const int64_t m = *decode_tokens;
  if (config.max_position_embeddings > 0 && n + m > config.max_position_embeddings) {
    return fail(out_of_range(model_dir + ": prompt " + std::to_string(n) + " + decode " +
                             std::to_string(m) + " tokens exceed max_position_embeddings " +
                             std::to_string(config.max_position_embeddings)));
  }
  const FlopModel flops = flop_model(config, *weight_dtype);
  const std::vector<int32_t> prompt = prompt_ids(n, config.vocab_size, /*seed=*/n);

  nlohmann::json base = {{"engine", "earnserve"},
                         {"model", label},
                         {"threads", *threads},
                         {"weight_dtype", dtype_name(*weight_dtype)},
                         {"repeats", *repeats}};

  const bool bursts = args.flag("--bursts");
  if (bursts) {
    FixedSlotRunner runner(model, /*max_seqs=*/1, static_cast<int>(n + m + 1));
    return serve_bursts(runner, prompt, n + m, base);
  }

  // The sgemm first, while our OpenMP workers are idle.
  const double sgemm = sgemm_gflops(n, config.hidden_size, config.intermediate_size,
                                    static_cast<int>(*threads), static_cast<int>(*repeats));
  nlohmann::json sgemm_line = base;
  sgemm_line["measure"] = "sgemm";
  sgemm_line["m"] = n;
  sgemm_line["k"] = config.hidden_size;
  sgemm_line["n"] = config.intermediate_size;
  sgemm_line["gflops"] = sgemm;
  print_line(sgemm_line);
  nlohmann::json copy_line = base;
  copy_line["measure"] = "copy";
  copy_line["bytes"] = int64_t{512} << 20;
  copy_line["gb_per_s"] = bench::memcpy_bytes_per_s(int64_t{512} << 20, num_threads(),
                                                    std::max(3, static_cast<int>(*repeats))) /
                          1e9;
  print_line(copy_line);

  FixedSlotRunner runner(model, /*max_seqs=*/1, static_cast<int>(n + m + 1));
  // Warm-up: faults in the weights and sizes the allocator's pools.
  {
    StatusOr<std::vector<float>> logits = runner.prefill(0, prompt);
    if (!logits.ok()) return fail(logits.status());
    for (int64_t i = 0; i < std::min<int64_t>(m, 4); ++i) {
      StatusOr<std::vector<float>> next = runner.decode(0, argmax(*logits));
      if (!next.ok()) return fail(next.status());
    }
    runner.reset(0);
  }

  double best_prefill = std::numeric_limits<double>::infinity();
  double best_decode = std::numeric_limits<double>::infinity();
  std::vector<int32_t> generated;
  std::vector<double> decode_rates;  // tokens/s of every repeat, in order
  for (int64_t r = 0; r < *repeats; ++r) {
    runner.reset(0);
    Clock::time_point start = Clock::now();
    StatusOr<std::vector<float>> logits = runner.prefill(0, prompt);
    best_prefill = std::min(best_prefill, seconds_since(start));
    if (!logits.ok()) return fail(logits.status());
    if (m == 0) continue;
    std::vector<int32_t> tokens{argmax(*logits)};
    start = Clock::now();
    for (int64_t i = 0; i < m; ++i) {
      StatusOr<std::vector<float>> next = runner.decode(0, tokens.back());
      if (!next.ok()) return fail(next.status());
      tokens.push_back(argmax(*next));
    }
    const double decode_seconds = seconds_since(start);
    best_decode = std::min(best_decode, decode_seconds);
    decode_rates.push_back(static_cast<double>(m) / decode_seconds);
    generated = std::move(tokens);
  }

  const double nd = static_cast<double>(n);
  const double prefill_flops = 2.0 * flops.layer_matmul_params * nd + 2.0 * flops.lm_head_params +
                               flops.attention_per_pair * nd * (nd + 1) / 2;
  const double prefill_gflops = prefill_flops / best_prefill / 1e9;
  nlohmann::json prefill_line = base;
  prefill_line["measure"] = "prefill";
  prefill_line["prompt_len"] = n;
  prefill_line["seconds"] = best_prefill;
  prefill_line["tokens_per_s"] = nd / best_prefill;
  prefill_line["gflops"] = prefill_gflops;
  prefill_line["sgemm_gflops"] = sgemm;
  prefill_line["fraction_of_sgemm"] = prefill_gflops / sgemm;
  print_line(prefill_line);

  if (m > 0) {
    const double md = static_cast<double>(m);
    // Decode step i (0-based) attends to n + i + 1 keys.
    const double decode_flops = md * 2.0 * (flops.layer_matmul_params + flops.lm_head_params) +
                                flops.attention_per_pair * (md * (nd + 1) + md * (md - 1) / 2);
    nlohmann::json decode_line = base;
    decode_line["measure"] = "decode";
    decode_line["prompt_len"] = n;
    decode_line["decode_tokens"] = m;
    decode_line["seconds"] = best_decode;
    decode_line["tokens_per_s"] = md / best_decode;
    decode_line["tokens_per_s_each"] = decode_rates;
    decode_line["gflops"] = decode_flops / best_decode / 1e9;
    decode_line["weight_gb_per_s"] = flops.weight_bytes * md / best_decode / 1e9;
    decode_line["fraction_of_copy"] =
        decode_line["weight_gb_per_s"].get<double>() / copy_line["gb_per_s"].get<double>();
    // The first greedy ids after the prompt (the prefill's argmax, then each decode step's).
    generated.resize(std::min<size_t>(generated.size(), kGreedyIdsShown));
    decode_line["greedy_ids"] = generated;
    print_line(decode_line);
  }

  if (*step_rows > 0) {
    const int rows = static_cast<int>(*step_rows);
    constexpr int kStepPrompt = 16;
    FixedSlotRunner rows_runner(model, rows, kStepPrompt + static_cast<int>(*repeats) + 2);
    std::vector<std::vector<int32_t>> prompts;
    for (int s = 0; s < rows; ++s) {
      prompts.push_back(prompt_ids(kStepPrompt, config.vocab_size, /*seed=*/1000 + s));
    }
    std::vector<FixedSlotRunner::SeqChunk> chunks;
    for (int s = 0; s < rows; ++s) chunks.push_back({s, prompts[static_cast<size_t>(s)]});
    StatusOr<std::vector<std::vector<float>>> logits = rows_runner.step(chunks);
    if (!logits.ok()) return fail(logits.status());
    std::vector<int32_t> next(static_cast<size_t>(rows));
    double best_step = std::numeric_limits<double>::infinity();
    // One untimed step (warm-up), then the timed ones; each appends one token per sequence.
    for (int64_t r = 0; r <= *repeats; ++r) {
      chunks.clear();
      for (int s = 0; s < rows; ++s) {
        next[static_cast<size_t>(s)] = argmax((*logits)[static_cast<size_t>(s)]);
        chunks.push_back({s, std::span<const int32_t>(&next[static_cast<size_t>(s)], 1)});
      }
      const Clock::time_point start = Clock::now();
      logits = rows_runner.step(chunks);
      if (r > 0) best_step = std::min(best_step, seconds_since(start));
      if (!logits.ok()) return fail(logits.status());
    }
    const double rd = static_cast<double>(rows);
    const double context = kStepPrompt + 1.0;
    nlohmann::json step_line = base;
    step_line["measure"] = "step";
    step_line["rows"] = rows;
    step_line["seconds"] = best_step;
    step_line["rows_per_s"] = rd / best_step;
    step_line["gflops"] = (rd * 2.0 * (flops.layer_matmul_params + flops.lm_head_params) +
                           flops.attention_per_pair * rd * context) /
                          best_step / 1e9;
    step_line["weight_gb_per_s"] = flops.weight_bytes / best_step / 1e9;
    print_line(step_line);
  }
  return 0;
}

}  // namespace
}  // namespace earnserve

int main(int argc, char** argv) {
  return earnserve::run(std::vector<std::string>(argv + 1, argv + argc));
}
