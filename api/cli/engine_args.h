// The engine options every command that loads a model accepts (--model, --weight-dtype,
// --block-size, --kv-cache-memory, --max-num-seqs, ..., and the speculative beam search options
// --draft-model, --draft-kv-cache-memory, --num-draft-beams, --num-speculative-steps,
// --speculative-verification, --speculative-policy), parsed into EngineOptions and the server's
// SpeculativeParams. Stateless functions; thread-compatible.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <variant>

#include "api/cli/commands.h"
#include "core/cli_args.h"
#include "scheduler/engine.h"

namespace earnserve::cli {

// Names of the value options handled by engine_options_from_args (without --model).
const std::set<std::string>& engine_value_options();
const std::set<std::string>& engine_flag_options();
std::string engine_options_help();

// REQUIRES: args were parsed with engine_value_options() and engine_flag_options() included.
StatusOr<EngineOptions> engine_options_from_args(const CliArgs& args);

// The speculative beam search defaults of a command: set iff --draft-model was given, with
// draft_model = that directory and --num-draft-beams (40), --num-speculative-steps (3),
// --speculative-verification (strict) and --speculative-policy (auto). Errors name the option:
// out-of-range values, speculative options without --draft-model. REQUIRES: as
// engine_options_from_args.
StatusOr<std::optional<SpeculativeParams>> speculative_defaults_from_args(const CliArgs& args);

struct EngineCommand {
  CliArgs args;
  EngineOptions options;
  // Set iff a draft model is loaded: eval and recommendation requests then speculate with these
  // parameters unless they say otherwise; completions speculate only when they ask.
  std::optional<SpeculativeParams> speculative;
};

// Parses a model-loading command's arguments: its own `values` and `flags` plus the engine
// options, then --help. Prints help (exit code 0), a usage error with `help` (2) or a bad engine
// option (1) as "earnserve <command>: ..." itself; returns the exit code when the command should
// stop there, else the parsed arguments and options.
std::variant<EngineCommand, int> parse_engine_command(const std::string& command, const Args& raw,
                                                      std::set<std::string> values,
                                                      std::set<std::string> flags,
                                                      const char* help);

// Reads a byte count like "512MiB", "2GiB", "1000000".
StatusOr<int64_t> parse_bytes(const std::string& text);

// --weight-dtype's value: f32 (float32), bf16 (bfloat16) or int8 (CPU only). The error lists
// them.
StatusOr<DType> parse_weight_dtype(const std::string& text);
// The --weight-dtype value that parses back to `dtype` (worker command lines).
const char* weight_dtype_option(DType dtype);

}  // namespace earnserve::cli
