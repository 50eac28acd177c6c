// The engine options every command that loads a model accepts (--model, --weight-dtype,
// --block-size, --kv-cache-memory, --max-num-seqs, ...), parsed into EngineOptions.
#pragma once

#include <set>
#include <string>

#include "api/cli_args.h"
#include "scheduler/engine.h"

namespace earnserve::cli {

// Names of the value options handled by engine_options_from_args (without --model).
const std::set<std::string>& engine_value_options();
const std::set<std::string>& engine_flag_options();
std::string engine_options_help();

// REQUIRES: args were parsed with engine_value_options() and engine_flag_options() included.
StatusOr<EngineOptions> engine_options_from_args(const CliArgs& args);

// Reads a byte count like "512MiB", "2GiB", "1000000".
StatusOr<int64_t> parse_bytes(const std::string& text);

}  // namespace earnserve::cli
