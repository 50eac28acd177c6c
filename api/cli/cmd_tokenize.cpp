// `earnserve tokenize`: prints the token ids of a text (or of each line of a file) with a
// Hugging Face tokenizer, as space-separated ids or a JSON array per line.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/cli/commands.h"
#include "model/tokenizer/tokenizer.h"

namespace earnserve::cli {
namespace {

constexpr const char* kTokenizeUsage =
    "usage: earnserve tokenize (--tokenizer PATH | --model DIR) (--text T | --file F)\n"
    "                          [--json] [--add-special-tokens]\n"
    "  --tokenizer PATH      a directory with tokenizer.json (and tokenizer_config.json),\n"
    "                        or a tokenizer.json file\n"
    "  --model DIR           a Hugging Face model directory (uses its tokenizer files)\n"
    "  --text T              the text to tokenize\n"
    "  --file F              tokenize each line of F ('-': standard input); one output line each\n"
    "  --json                print a JSON array instead of space-separated ids\n"
    "  --add-special-tokens  add the tokenizer's special tokens (e.g. a leading BOS)\n";

struct TokenizeOptions {
  std::optional<std::string> tokenizer;
  std::optional<std::string> model;
  std::optional<std::string> text;
  std::optional<std::string> file;
  bool json = false;
  bool add_special_tokens = false;
  bool help = false;
};

// Parses `args`; on bad usage returns nullopt after writing the reason to *error.
std::optional<TokenizeOptions> parse_options(const Args& args, std::string* error) {
  TokenizeOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (size_t eq = name.find('='); name.starts_with("--") && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    std::optional<std::string>* target = name == "--tokenizer" ? &options.tokenizer
                                         : name == "--model"   ? &options.model
                                         : name == "--text"    ? &options.text
                                         : name == "--file"    ? &options.file
                                                               : nullptr;
    if (target != nullptr) {
      if (inline_value) {
        *target = *inline_value;
      } else if (i + 1 < args.size()) {
        *target = args[++i];
      } else {
        *error = "option " + name + " needs a value";
        return std::nullopt;
      }
      continue;
    }
    bool* flag = name == "--json"                   ? &options.json
                 : name == "--add-special-tokens"   ? &options.add_special_tokens
                 : name == "--help" || name == "-h" ? &options.help
                                                    : nullptr;
    if (flag == nullptr || inline_value) {
      *error = "unknown option '" + args[i] + "'";
      return std::nullopt;
    }
    *flag = true;
  }
  if (options.help) return options;
  if (options.tokenizer.has_value() == options.model.has_value()) {
    *error = "give exactly one of --tokenizer and --model";
    return std::nullopt;
  }
  if (options.text.has_value() == options.file.has_value()) {
    *error = "give exactly one of --text and --file";
    return std::nullopt;
  }
  return options;
}

std::string format_ids(const std::vector<int32_t>& ids, bool json) {
  std::string out = json ? "[" : "";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += json ? ", " : " ";
    out += std::to_string(ids[i]);
  }
  if (json) out += "]";
  return out;
}

StatusOr<std::unique_ptr<Tokenizer>> load(const TokenizeOptions& options) {
  if (options.model) return Tokenizer::from_dir(*options.model);
  std::error_code error;
  if (std::filesystem::is_regular_file(*options.tokenizer, error)) {
    return Tokenizer::from_file(*options.tokenizer);
  }
  return Tokenizer::from_dir(*options.tokenizer);
}

}  // namespace

int run_tokenize(const Args& args) {
  std::string usage_error;
  std::optional<TokenizeOptions> options = parse_options(args, &usage_error);
  if (!options) {
    std::fprintf(stderr, "earnserve tokenize: %s (see --help)\n", usage_error.c_str());
    return 2;
  }
  if (options->help) {
    std::fputs(kTokenizeUsage, stdout);
    return 0;
  }
  StatusOr<std::unique_ptr<Tokenizer>> tokenizer = load(*options);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "earnserve tokenize: %s\n", tokenizer.status().message().c_str());
    return 1;
  }
  if (options->text) {
    std::string line = format_ids((*tokenizer)->encode(*options->text, options->add_special_tokens),
                                  options->json);
    std::fprintf(stdout, "%s\n", line.c_str());
    return 0;
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (*options->file != "-") {
    file.open(*options->file, std::ios::binary);
    if (!file) {
      std::fprintf(stderr, "earnserve tokenize: %s: cannot open file\n", options->file->c_str());
      return 1;
    }
    in = &file;
  }
  // One output line per input line; a CRLF line ending is not part of the text.
  for (std::string line; std::getline(*in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::string ids =
        format_ids((*tokenizer)->encode(line, options->add_special_tokens), options->json);
    std::fprintf(stdout, "%s\n", ids.c_str());
  }
  if (in->bad()) {
    std::fprintf(stderr, "earnserve tokenize: %s: read error\n", options->file->c_str());
    return 1;
  }
  return 0;
}

}  // namespace earnserve::cli
