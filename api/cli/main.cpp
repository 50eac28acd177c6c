// earnserve: serving engine for LLM-based generative recommendation. Dispatches subcommands.
#include <cstdio>
#include <string>

#include "api/cli/commands.h"

namespace {

constexpr const char* kUsage =
    "usage: earnserve <command> [options]\n"
    "commands:\n"
    "  generate   generate text from a prompt with a Hugging Face model directory\n"
    "  tokenize   print the token ids of a text\n"
    "  eval       Recall@K and NDCG@K of a recommendation model on a test set\n"
    "  batch      run a JSONL file of OpenAI batch requests offline\n"
    "  serve      serve the OpenAI-compatible HTTP API\n"
    "  info       CPU features, kernel path, GEMM library, threads and GPUs this machine gives\n"
    "run 'earnserve <command> --help' for a command's options\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  std::string command = argv[1];
  earnserve::cli::Args args(argv + 2, argv + argc);
  if (command == "generate") return earnserve::cli::run_generate(args);
  if (command == "tokenize") return earnserve::cli::run_tokenize(args);
  if (command == "eval") return earnserve::cli::run_eval(args);
  if (command == "batch") return earnserve::cli::run_batch(args);
  if (command == "serve") return earnserve::cli::run_serve(args);
  if (command == "info") return earnserve::cli::run_info(args);
  if (command == "worker") return earnserve::cli::run_worker(args);
  if (command == "--help" || command == "-h" || command == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  std::fprintf(stderr, "earnserve: unknown command '%s'\n%s", command.c_str(), kUsage);
  return 2;
}
