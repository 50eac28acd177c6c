#include "api/cli/engine_args.h"

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "api/cli/tp_args.h"
#include "core/device.h"
#include "core/logging.h"
#include "core/threading.h"

namespace earnserve::cli {

const std::set<std::string>& engine_value_options() {
  static const std::set<std::string> kOptions = {"--model",
                                                 "--weight-dtype",
                                                 "--block-size",
                                                 "--earn-block-size",
                                                 "--kv-cache-memory",
                                                 "--max-num-seqs",
                                                 "--max-num-batched-tokens",
                                                 "--max-model-len",
                                                 "--threads",
                                                 "--draft-model",
                                                 "--draft-kv-cache-memory",
                                                 "--device",
                                                 "--num-draft-beams",
                                                 "--num-speculative-steps",
                                                 "--speculative-verification",
                                                 "--speculative-policy"};
  return kOptions;
}

const std::set<std::string>& engine_flag_options() {
  static const std::set<std::string> kFlags = {"--no-prefix-caching", "--no-chunked-prefill",
                                               "--no-skip-forced-tokens", "--quiet"};
  return kFlags;
}

std::string engine_options_help() {
  return "  --model DIR                  Hugging Face model directory (required)\n"
         "  --weight-dtype f32|bf16|int8 weights in memory (default f32); int8 (CPU only):\n"
         "                               linear layers per output row, their inputs\n"
         "                               quantised at every product in blocks of 32\n"
         "  --block-size N               tokens per KV page (default 16)\n"
         "  --earn-block-size N          EARN models: tokens per KV page of the register layers\n"
         "                               above the split (default 2; 0 = --block-size)\n"
         "  --kv-cache-memory BYTES      KV cache budget, e.g. 512MiB (default 512MiB)\n"
         "  --max-num-seqs N             sequences per step (default 256)\n"
         "  --max-num-batched-tokens N   tokens per step (default 2048)\n"
         "  --max-model-len N            context limit (default: the model's)\n"
         "  --threads N                  CPU threads (default: all cores)\n"
         "  --device cpu|cuda|cuda:N     where weights, KV cache and forward run (default cpu)\n"
         "  --no-prefix-caching          disable prefix caching\n"
         "  --no-chunked-prefill         disable chunked prefill\n"
         "  --no-skip-forced-tokens      score_over catalogue: run beams whose remaining item\n"
         "                               tokens are forced (by default they take them with\n"
         "                               log-probability 0 and no forward; same results)\n"
         "  --quiet                      no progress lines (eval, batch, model loading) and no\n"
         "                               info messages\n"
         "speculative beam search (AtSpeed, docs/speculative.md):\n"
         "  --draft-model DIR            draft model (same tokenizer vocabulary as --model); with\n"
         "                               it, eval and /v1/recommendations speculate by default\n"
         "                               (a request opts out with \"speculative\": false) and\n"
         "                               beam-search completions may ask with \"speculative\"\n"
         "  --draft-kv-cache-memory BYTES  the draft's KV cache (default: a quarter of\n"
         "                               --kv-cache-memory)\n"
         "  --num-draft-beams N          draft beams N per step, raised to the beam width\n"
         "                               when smaller (default 40)\n"
         "  --num-speculative-steps G    drafted steps per round, 1..8 (default 3)\n"
         "  --speculative-verification strict|relaxed  strict returns exactly the target's\n"
         "                               beam search; relaxed samples (default strict)\n"
         "  --speculative-policy auto|always  auto: speculate only when the measured cost model\n"
         "                               predicts a tree pays, N from K up to --num-draft-beams,\n"
         "                               gamma up to --num-speculative-steps; always: every\n"
         "                               round drafts N x G (default auto)\n";
}

std::variant<EngineCommand, int> parse_engine_command(const std::string& command, const Args& raw,
                                                      std::set<std::string> values,
                                                      std::set<std::string> flags,
                                                      const char* help) {
  values.insert(engine_value_options().begin(), engine_value_options().end());
  flags.insert(engine_flag_options().begin(), engine_flag_options().end());
  values.insert(tensor_parallel_value_options().begin(), tensor_parallel_value_options().end());
  flags.insert("--help");
  StatusOr<CliArgs> parsed = CliArgs::parse(raw, values, flags);
  if (!parsed.ok()) {
    std::fprintf(stderr, "earnserve %s: %s\n%s", command.c_str(), parsed.status().message().c_str(),
                 help);
    return 2;
  }
  if (parsed->flag("--help")) {
    std::printf("%s%s%s", help, engine_options_help().c_str(), tensor_parallel_help().c_str());
    return 0;
  }
  if (parsed->flag("--quiet")) set_log_level(LogLevel::kWarning);
  StatusOr<EngineOptions> options = engine_options_from_args(*parsed);
  if (!options.ok()) {
    std::fprintf(stderr, "earnserve %s: %s\n", command.c_str(), options.status().message().c_str());
    return 1;
  }
  StatusOr<std::optional<SpeculativeParams>> speculative = speculative_defaults_from_args(*parsed);
  if (!speculative.ok()) {
    std::fprintf(stderr, "earnserve %s: %s\n", command.c_str(),
                 speculative.status().message().c_str());
    return 1;
  }
  return EngineCommand{std::move(parsed).value(), std::move(options).value(),
                       std::move(speculative).value()};
}

StatusOr<int64_t> parse_bytes(const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  std::string unit(end);
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  double scale = 1;
  if (unit.empty() || unit == "b")
    scale = 1;
  else if (unit == "kib" || unit == "k")
    scale = 1024.0;
  else if (unit == "mib" || unit == "m")
    scale = 1024.0 * 1024;
  else if (unit == "gib" || unit == "g")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "kb")
    scale = 1e3;
  else if (unit == "mb")
    scale = 1e6;
  else if (unit == "gb")
    scale = 1e9;
  else
    return invalid_argument("cannot read '" + text + "' as a byte count (e.g. 512MiB)");
  if (end == text.c_str() || !(value > 0)) {
    return invalid_argument("cannot read '" + text + "' as a byte count (e.g. 512MiB)");
  }
  return static_cast<int64_t>(value * scale);
}

StatusOr<DType> parse_weight_dtype(const std::string& text) {
  if (text == "f32" || text == "float32") return DType::kF32;
  if (text == "bf16" || text == "bfloat16") return DType::kBF16;
  if (text == "int8") return DType::kI8;
  return invalid_argument("--weight-dtype must be f32, bf16 or int8 (CPU only), got '" + text +
                          "'");
}

const char* weight_dtype_option(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
      return "bf16";
    case DType::kI8:
      return "int8";
    default:
      return "f32";
  }
}

StatusOr<EngineOptions> engine_options_from_args(const CliArgs& args) {
  EngineOptions o;
  std::optional<std::string> model = args.get("--model");
  if (!model) return invalid_argument("--model DIR is required");
  o.model_dir = *model;
  ES_ASSIGN_OR_RETURN(o.weight_dtype, parse_weight_dtype(args.get_or("--weight-dtype", "f32")));
  ES_ASSIGN_OR_RETURN(int64_t block_size, args.get_int("--block-size", o.block_size));
  o.block_size = static_cast<int>(block_size);
  ES_ASSIGN_OR_RETURN(int64_t earn_block_size,
                      args.get_int("--earn-block-size", o.earn_block_size));
  if (earn_block_size < 0 || earn_block_size > 256) {
    return invalid_argument("--earn-block-size must be in [1, 256], or 0 for --block-size");
  }
  o.earn_block_size = static_cast<int>(earn_block_size);
  if (auto mem = args.get("--kv-cache-memory")) {
    ES_ASSIGN_OR_RETURN(o.kv_cache_memory_bytes, parse_bytes(*mem));
  }
  ES_ASSIGN_OR_RETURN(int64_t seqs, args.get_int("--max-num-seqs", o.max_num_seqs));
  ES_ASSIGN_OR_RETURN(int64_t tokens,
                      args.get_int("--max-num-batched-tokens", o.max_num_batched_tokens));
  ES_ASSIGN_OR_RETURN(int64_t len, args.get_int("--max-model-len", 0));
  if (seqs < 1 || tokens < 1 || len < 0 || block_size < 1) {
    return invalid_argument(
        "--max-num-seqs, --max-num-batched-tokens and --block-size must be positive");
  }
  o.max_num_seqs = static_cast<int>(seqs);
  o.max_num_batched_tokens = static_cast<int>(tokens);
  o.max_model_len = static_cast<int>(len);
  ES_ASSIGN_OR_RETURN(int64_t threads, args.get_int("--threads", 0));
  if (threads > 0) set_num_threads(static_cast<int>(threads));
  if (std::optional<std::string> device = args.get("--device"); device && *device != "cpu") {
    int index = 0;
    if (device->rfind("cuda:", 0) == 0) {
      try {
        size_t used = 0;
        index = std::stoi(device->substr(5), &used);
        if (used != device->size() - 5 || index < 0) throw std::invalid_argument("index");
      } catch (const std::exception&) {
        return invalid_argument("--device must be cpu, cuda or cuda:N, got '" + *device + "'");
      }
    } else if (*device != "cuda") {
      return invalid_argument("--device must be cpu, cuda or cuda:N, got '" + *device + "'");
    }
    o.device = Device::kCUDA;
    o.cuda_device = index;
    if (index >= cuda_device_count()) {
      // select_cuda_device names the reason: a build without CUDA, or no such GPU.
      return invalid_argument("--device " + *device + ": " + select_cuda_device(index).message());
    }
  }
  o.enable_prefix_caching = !args.flag("--no-prefix-caching");
  o.enable_chunked_prefill = !args.flag("--no-chunked-prefill");
  o.skip_forced_tokens = !args.flag("--no-skip-forced-tokens");
  ES_ASSIGN_OR_RETURN(o.tensor_parallel, tensor_parallel_from_args(args));
  if (o.tensor_parallel.size > 1 && o.cuda_device != 0) {
    return invalid_argument(
        "--device cuda:N selects one GPU; with --tensor-parallel-size each rank takes its own "
        "(rank r uses GPU r mod GPUs per node): use --device cuda and CUDA_VISIBLE_DEVICES");
  }
  if (std::optional<std::string> draft = args.get("--draft-model")) {
    if (draft->empty()) return invalid_argument("--draft-model must name a directory");
    o.draft_model_dir = *draft;
  }
  if (auto mem = args.get("--draft-kv-cache-memory")) {
    if (o.draft_model_dir.empty()) {
      return invalid_argument("--draft-kv-cache-memory needs --draft-model");
    }
    StatusOr<int64_t> bytes = parse_bytes(*mem);
    if (!bytes.ok()) return bytes.status().with_prefix("--draft-kv-cache-memory");
    o.draft_kv_cache_memory_bytes = *bytes;
  }
  return o;
}

StatusOr<std::optional<SpeculativeParams>> speculative_defaults_from_args(const CliArgs& args) {
  const std::optional<std::string> draft = args.get("--draft-model");
  if (!draft) {
    for (const char* name : {"--num-draft-beams", "--num-speculative-steps",
                             "--speculative-verification", "--speculative-policy"}) {
      if (args.has(name)) return invalid_argument(std::string(name) + " needs --draft-model");
    }
    return std::optional<SpeculativeParams>();
  }
  SpeculativeParams p;
  p.draft_model = *draft;
  ES_ASSIGN_OR_RETURN(int64_t beams, args.get_int("--num-draft-beams", p.num_draft_beams));
  if (beams < 1 || beams > kMaxBeamWidth) {
    return invalid_argument("--num-draft-beams must be in [1, " + std::to_string(kMaxBeamWidth) +
                            "], got " + std::to_string(beams));
  }
  p.num_draft_beams = static_cast<int>(beams);
  ES_ASSIGN_OR_RETURN(int64_t steps,
                      args.get_int("--num-speculative-steps", p.num_speculative_steps));
  if (steps < 1 || steps > kMaxSpeculativeSteps) {
    return invalid_argument("--num-speculative-steps must be in [1, " +
                            std::to_string(kMaxSpeculativeSteps) + "], got " +
                            std::to_string(steps));
  }
  p.num_speculative_steps = static_cast<int>(steps);
  const std::string verification = args.get_or("--speculative-verification", "strict");
  if (verification == "relaxed") {
    p.verification = SpeculativeParams::Verification::kRelaxed;
  } else if (verification != "strict") {
    return invalid_argument("--speculative-verification must be strict or relaxed, got '" +
                            verification + "'");
  }
  const std::string policy = args.get_or("--speculative-policy", "auto");
  if (policy == "auto") {
    p.policy = SpeculativeParams::Policy::kAuto;
  } else if (policy == "always") {
    p.policy = SpeculativeParams::Policy::kAlways;
  } else {
    return invalid_argument("--speculative-policy must be auto or always, got '" + policy + "'");
  }
  return std::optional<SpeculativeParams>(p);
}

}  // namespace earnserve::cli
