// `earnserve info`: what this machine gives the engine -- CPU features, the CPU kernels' SIMD
// path, the GEMM library and the kernel set chosen for it, threads, CUDA devices. The same facts
// are logged when `serve` starts and exported as earnserve:backend_info.
#include <cstdio>

#include "api/cli/commands.h"
#include "core/cli_args.h"
#include "core/threading.h"
#include "kernels/backend_info.h"

namespace earnserve::cli {
namespace {

constexpr const char* kHelp =
    "usage: earnserve info [--json] [--threads N]\n"
    "  --json        one JSON object instead of lines\n"
    "  --threads N   the CPU threads to report (as the other commands take it; default: all "
    "cores)\n";

}  // namespace

int run_info(const Args& args) {
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    }
  }
  auto parsed = CliArgs::parse(args, {"--threads"}, {"--json"});
  if (!parsed.ok()) {
    std::fprintf(stderr, "earnserve info: %s\n%s", parsed.status().message().c_str(), kHelp);
    return 2;
  }
  auto threads = parsed->get_int("--threads", 0);
  if (!threads.ok() || *threads < 0) {
    std::fprintf(stderr, "earnserve info: --threads must be a non-negative integer\n");
    return 2;
  }
  if (*threads > 0) set_num_threads(static_cast<int>(*threads));
  const BackendInfo info = backend_info();
  if (parsed->flag("--json")) {
    std::printf("%s\n", backend_info_json(info).c_str());
  } else {
    std::fputs(backend_info_text(info).c_str(), stdout);
  }
  return 0;
}

}  // namespace earnserve::cli
