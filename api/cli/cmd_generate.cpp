// `earnserve generate`: one prompt through the engine, printed as text or as one JSON object.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/tp_launcher.h"
#include "api/protocol/speculative_protocol.h"
#include "core/cli_args.h"
#include "scheduler/engine.h"

namespace earnserve::cli {
namespace {

constexpr const char* kHelp =
    "usage: earnserve generate --model DIR [--prompt TEXT] [options]\n"
    "  --prompt TEXT        the prompt (default: empty, i.e. generation from BOS)\n"
    "  --max-tokens N       tokens to generate at most (default 100)\n"
    "  --temperature T      0 = greedy (default 0)\n"
    "  --top-p P, --top-k K, --min-p P, --seed S, --n N\n"
    "  --beam-width W       beam search with W beams (returns the best --n); speculative\n"
    "                       with --draft-model (\"speculative\" in --json: its stats)\n"
    "  --json               print one JSON object\n";

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve generate: %s\n", s.message().c_str());
  return 1;
}

// The sampling (or beam search) parameters of --max-tokens, --temperature, ..., --beam-width;
// a beam search speculates with `speculative` (the --draft-model defaults) when set.
StatusOr<SamplingParams> sampling_params_from_args(
    const CliArgs& args, const std::optional<SpeculativeParams>& speculative) {
  SamplingParams params;
  auto max_tokens = args.get_int("--max-tokens", 100);
  auto temperature = args.get_double("--temperature", 0.0);
  auto top_p = args.get_double("--top-p", 1.0);
  auto top_k = args.get_int("--top-k", 0);
  auto min_p = args.get_double("--min-p", 0.0);
  auto n = args.get_int("--n", 1);
  auto beam = args.get_int("--beam-width", 0);
  auto length_penalty = args.get_double("--length-penalty", 1.0);
  for (const Status& s : {max_tokens.status(), temperature.status(), top_p.status(), top_k.status(),
                          min_p.status(), n.status(), beam.status(), length_penalty.status()}) {
    if (!s.ok()) return s;
  }
  params.max_tokens = static_cast<int>(*max_tokens);
  params.temperature = static_cast<float>(*temperature);
  params.top_p = static_cast<float>(*top_p);
  params.top_k = static_cast<int>(*top_k);
  params.min_p = static_cast<float>(*min_p);
  params.n = static_cast<int>(*n);
  params.ignore_eos = args.flag("--ignore-eos");
  if (*beam > 0) {
    params.use_beam_search = true;
    params.beam_width = static_cast<int>(*beam);
    params.length_penalty = static_cast<float>(*length_penalty);
    // With --draft-model a beam search speculates (strict: the same beams, fewer target calls).
    params.speculative = speculative;
    if (params.speculative) {
      params.speculative->num_draft_beams =
          std::max(params.speculative->num_draft_beams, params.beam_width);
    }
  }
  if (auto seed = args.get_int("--seed", -1); !seed.ok()) {
    return seed.status();
  } else if (*seed >= 0) {
    params.seed = static_cast<uint64_t>(*seed);
  }
  ES_RETURN_IF_ERROR(params.validate());
  return params;
}

}  // namespace

int run_generate(const Args& raw) {
  auto command =
      parse_engine_command("generate", raw,
                           {"--prompt", "--max-tokens", "--temperature", "--top-p", "--top-k",
                            "--min-p", "--seed", "--n", "--beam-width", "--length-penalty"},
                           {"--json", "--ignore-eos"}, kHelp);
  if (const int* code = std::get_if<int>(&command)) return *code;
  const CliArgs& args = std::get<EngineCommand>(command).args;
  EngineOptions* options = &std::get<EngineCommand>(command).options;

  StatusOr<SamplingParams> sampling =
      sampling_params_from_args(args, std::get<EngineCommand>(command).speculative);
  if (!sampling.ok()) return fail(sampling.status());
  const SamplingParams& params = *sampling;

  const Clock::time_point load_start = Clock::now();
  // Worker ranks first: Engine::create waits for them (tensor parallelism only).
  auto ranks = start_tensor_parallel("generate", args, *options);
  if (const int* code = std::get_if<int>(&ranks)) return *code;
  StatusOr<std::unique_ptr<Engine>> engine = Engine::create(*options);
  if (!engine.ok()) return fail(engine.status());
  const Clock::time_point load_end = Clock::now();

  EngineRequest request;
  request.request_id = "generate-0";
  const std::string prompt = args.get_or("--prompt", "");
  request.prompt_token_ids = (*engine)->tokenizer().encode(prompt, /*add_special_tokens=*/true);
  if (request.prompt_token_ids.empty()) {
    std::optional<int32_t> bos = (*engine)->tokenizer().bos_token_id();
    if (!bos) return fail(invalid_argument("the prompt is empty and the model has no BOS token"));
    request.prompt_token_ids.push_back(*bos);
  }
  request.params = params;
  StatusOr<std::vector<RequestOutput>> outputs = (*engine)->generate({request});
  if (!outputs.ok()) return fail(outputs.status());
  const RequestOutput& out = outputs->front();
  if (!out.error.ok()) return fail(out.error);

  const RequestMetrics& m = out.metrics;
  const Clock::time_point first = m.first_token.value_or(m.arrival);
  const Clock::time_point end = m.finished.value_or(first);
  const double prefill_ms = ms_between(m.arrival, first);
  const double decode_ms = ms_between(first, end);
  const int generated = out.outputs.empty() ? 0 : static_cast<int>(out.outputs[0].token_ids.size());

  if (args.flag("--json")) {
    nlohmann::json j;
    j["prompt"] = prompt;
    j["prompt_token_ids"] = out.prompt_token_ids;
    const SequenceOutput& best = out.outputs.front();
    j["token_ids"] = best.token_ids;
    j["text"] = best.text;
    j["finish_reason"] = finish_reason_name(best.finish_reason);
    j["cumulative_logprob"] = best.cumulative_logprob;
    if (out.outputs.size() > 1 || params.use_beam_search) {
      nlohmann::json choices = nlohmann::json::array();
      for (const SequenceOutput& o : out.outputs) {
        choices.push_back({{"index", o.index},
                           {"token_ids", o.token_ids},
                           {"text", o.text},
                           {"cumulative_logprob", o.cumulative_logprob},
                           {"score", o.score},
                           {"finish_reason", finish_reason_name(o.finish_reason)}});
      }
      j["choices"] = choices;
    }
    if (out.speculative) j["speculative"] = api::speculative_json(*out.speculative);
    j["timings"] = {{"load_ms", ms_between(load_start, load_end)},
                    {"prefill_ms", prefill_ms},
                    {"decode_ms", decode_ms},
                    {"prompt_tokens", out.prompt_token_ids.size()},
                    {"generated_tokens", generated},
                    {"decode_tokens_per_second",
                     generated > 1 && decode_ms > 0 ? (generated - 1) * 1000.0 / decode_ms : 0.0}};
    std::cout << j.dump() << std::endl;
  } else {
    for (const SequenceOutput& o : out.outputs) {
      if (out.outputs.size() > 1) std::cout << "--- " << o.index << " (" << o.score << ")\n";
      std::cout << prompt << o.text << std::endl;
    }
  }
  return 0;
}

}  // namespace earnserve::cli
