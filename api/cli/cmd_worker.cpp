// `earnserve worker`: one tensor-parallel worker rank (scheduler/parallel/tp_worker.h). Hidden from
// the usage text: rank 0's command starts it (api/cli/tp_launcher.h) with the engine and
// tensor-parallel options it needs. Exits 0 when rank 0 shuts the group down, 1 with a one-line
// error otherwise.
#include <cstdio>

#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/tp_args.h"
#include "scheduler/parallel/tp_worker.h"

namespace earnserve::cli {

int run_worker(const Args& raw) {
  std::set<std::string> values = engine_value_options();
  values.insert(tensor_parallel_value_options().begin(), tensor_parallel_value_options().end());
  values.insert("--rank");
  StatusOr<CliArgs> args = CliArgs::parse(raw, values, engine_flag_options());
  if (!args.ok()) {
    std::fprintf(stderr, "earnserve worker: %s\n", args.status().message().c_str());
    return 2;
  }
  StatusOr<EngineOptions> options = engine_options_from_args(*args);
  StatusOr<int64_t> rank = args->get_int("--rank", -1);
  Status status = !options.ok() ? options.status() : rank.status();
  if (status.ok() && (*rank < 1 || *rank >= options->tensor_parallel.size)) {
    status =
        invalid_argument("--rank must be in [1, " + std::to_string(options->tensor_parallel.size) +
                         "), got " + std::to_string(*rank));
  }
  if (status.ok()) status = run_tp_worker(*options, static_cast<int>(*rank));
  if (!status.ok()) {
    std::fprintf(stderr, "earnserve worker %lld: %s\n",
                 static_cast<long long>(rank.ok() ? *rank : -1), status.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace earnserve::cli
