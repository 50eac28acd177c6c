// `earnserve batch`: offline bulk jobs in the OpenAI batch file format, as vLLM's run_batch
// (line format: api/protocol/batch_lines.h). Each line's url is routed through the server's
// route table and its call runs through the server's submit-and-collect path
// (api/service/). A bad line gets an error response of its own; every other line still runs.
// All valid lines are submitted before the engine thread starts, so they run together under
// continuous batching. Output lines follow input order.
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/tp_launcher.h"
#include "api/protocol/openai_protocol.h"
#include "api/service/routes.h"
#include "api/service/submission.h"
#include "core/cli_args.h"
#include "scheduler/engine.h"

namespace earnserve::cli {
namespace {

using nlohmann::json;

constexpr const char* kHelp =
    "usage: earnserve batch --model DIR --input FILE --output FILE [engine options]\n"
    "  --input FILE    JSONL: {custom_id, method, url, body} per line ('-' = stdin)\n"
    "  --output FILE   JSONL results in input order ('-' = stdout)\n";

// One input line: refused with `error`, or its call submitted to the engine.
struct Line {
  std::string custom_id;
  std::optional<api::ApiError> error;
  api::ApiCall call;
  std::unique_ptr<api::Submission> submission;
};

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve batch: %s\n", s.message().c_str());
  return 1;
}

// Reads input line `line_number`, routes it, parses its body and submits its call with engine
// request ids "batch-<index>...".
Line submit_line(const std::string& text, int64_t line_number, size_t index, Engine& engine,
                 const api::ProtocolContext& context) {
  api::BatchLine in = api::parse_batch_line(text, line_number, context);
  Line line;
  line.custom_id = in.custom_id;
  if (in.error) {
    line.error = std::move(in.error);
    return line;
  }
  const api::Route* route = api::find_route(in.url);
  if (!route || !route->in_batch) {
    line.error = api::bad_request(
        "line " + std::to_string(line_number) + ": url must be " + api::batch_paths(), "url");
    line.error->http_status = 404;
    return line;
  }
  api::ApiOr<api::ApiCall> call = api::parse_call(route->endpoint, in.body, context);
  if (!call.ok()) {
    line.error = call.error();
    return line;
  }
  line.call = std::move(*call);
  line.call.disable_stream();
  api::ApiOr<std::unique_ptr<api::Submission>> submission =
      api::Submission::submit(engine, line.call, "batch-" + std::to_string(index));
  if (!submission.ok()) {
    line.error = submission.error();
  } else {
    line.submission = std::move(*submission);
  }
  return line;
}

// Every non-blank line of `in`, submitted (the engine thread is not running yet).
std::vector<Line> submit_lines(std::istream& in, Engine& engine,
                               const api::ProtocolContext& context) {
  std::vector<Line> lines;
  std::string text;
  int64_t line_number = 0;
  while (std::getline(in, text)) {
    ++line_number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    lines.push_back(submit_line(text, line_number, lines.size(), engine, context));
  }
  return lines;
}

// The output line of every input line, in order; an engine failure (the only way a submitted
// call ends in an error) fails the whole batch, as it stops the engine.
StatusOr<std::vector<json>> collect_lines(std::vector<Line>& lines,
                                          const api::ProtocolContext& context) {
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  std::vector<json> records;
  for (size_t i = 0; i < lines.size(); ++i) {
    Line& line = lines[i];
    const std::string id = "batch_req_" + std::to_string(i);
    if (line.error) {
      records.push_back(api::batch_output_line(id, line.custom_id, *line.error));
      continue;
    }
    api::ApiOr<std::vector<RequestOutput>> outputs = line.submission->collect();
    if (!outputs.ok()) return internal_error(outputs.error().message);
    const api::ResponseMeta meta{id, created, context.served_model_name};
    records.push_back(api::batch_output_line(
        id, line.custom_id, api::final_response(line.call, meta, *outputs, context)));
  }
  return records;
}

}  // namespace

int run_batch(const Args& raw) {
  auto command =
      parse_engine_command("batch", raw, {"--input", "--output", "--served-model-name"}, {}, kHelp);
  if (const int* code = std::get_if<int>(&command)) return *code;
  const CliArgs* parsed = &std::get<EngineCommand>(command).args;
  EngineOptions* options = &std::get<EngineCommand>(command).options;
  const std::optional<std::string> input_path = parsed->get("--input");
  const std::optional<std::string> output_path = parsed->get("--output");
  if (!input_path || !output_path) {
    std::fprintf(stderr, "earnserve batch: --input and --output are required\n%s", kHelp);
    return 2;
  }

  std::ifstream file_in;
  std::istream* in = &std::cin;
  if (*input_path != "-") {
    file_in.open(*input_path);
    if (!file_in) return fail(not_found(*input_path + ": cannot open input"));
    in = &file_in;
  }
  // Worker ranks first: Engine::create waits for them (tensor parallelism only).
  auto ranks = start_tensor_parallel("batch", *parsed, *options);
  if (const int* code = std::get_if<int>(&ranks)) return *code;
  StatusOr<std::unique_ptr<Engine>> engine = Engine::create(*options);
  if (!engine.ok()) return fail(engine.status());
  StatusOr<api::ProtocolContext> context = api::make_protocol_context(
      **engine, options->model_dir, parsed->get_or("--served-model-name", ""));
  if (!context.ok()) return fail(context.status());
  context->speculative = std::get<EngineCommand>(command).speculative;

  std::vector<Line> lines = submit_lines(*in, **engine, *context);
  (*engine)->start();
  StatusOr<std::vector<json>> records = collect_lines(lines, *context);
  if (!records.ok()) return fail(records.status());

  std::ofstream file_out;
  std::ostream* out = &std::cout;
  if (*output_path != "-") {
    file_out.open(*output_path);
    if (!file_out) return fail(invalid_argument(*output_path + ": cannot open output"));
    out = &file_out;
  }
  int failed = 0;
  for (const json& record : *records) {
    if (record["response"]["status_code"] != 200) ++failed;
    *out << record.dump() << "\n";
  }
  out->flush();
  std::fprintf(stderr, "earnserve batch: %zu lines, %d failed\n", lines.size(), failed);
  return 0;
}

}  // namespace earnserve::cli
