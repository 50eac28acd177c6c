// Subcommands of the `earnserve` command line. Each takes the arguments after its name and
// returns the process exit code; errors are printed as one line on stderr.
#pragma once

#include <string>
#include <vector>

namespace earnserve::cli {

using Args = std::vector<std::string>;

int run_generate(const Args& args);
int run_tokenize(const Args& args);
int run_eval(const Args& args);
int run_batch(const Args& args);
int run_serve(const Args& args);
int run_info(const Args& args);
// Hidden: one tensor-parallel worker rank, started by the commands above (api/cli/tp_launcher.h).
int run_worker(const Args& args);

}  // namespace earnserve::cli
