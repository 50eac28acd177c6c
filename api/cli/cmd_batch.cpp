// `earnserve batch`: offline bulk jobs in the OpenAI batch file format, as vLLM's run_batch
// (line format: api/protocol/batch_lines.h). Each line's url is routed through the server's
// route table and its call runs through the server's submit-and-collect path
// (api/service/). A bad line gets an error response of its own; every other line still runs.
//
// Lines are read as they are needed: up to a window of them (a few times --max-num-seqs) run in
// the engine at once under continuous batching, and each output line is written and flushed as
// soon as it and every line before it are answered, so output lines follow input order. A run
// killed at any point leaves complete lines (and perhaps one torn last line); `--resume` cuts
// the torn line off, skips the lines already answered (by custom_id) and appends the rest.
// Progress (lines answered out of the input file's, lines/s, ETA) goes to stderr unless --quiet.
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/progress.h"
#include "api/cli/tp_launcher.h"
#include "api/protocol/batch_lines.h"
#include "api/protocol/openai_protocol.h"
#include "api/service/routes.h"
#include "api/service/submission.h"
#include "core/cli_args.h"
#include "scheduler/engine.h"

namespace earnserve::cli {
namespace {

using nlohmann::json;

constexpr const char* kHelp =
    "usage: earnserve batch --model DIR --input FILE --output FILE [--resume] [engine options]\n"
    "  --input FILE    JSONL: {custom_id, method, url, body} per line ('-' = stdin)\n"
    "  --output FILE   JSONL results in input order, each written as soon as it is known\n"
    "                  ('-' = stdout)\n"
    "  --resume        keep the lines OUTPUT already answers (by custom_id; a torn last line\n"
    "                  from a killed run is cut off) and append the others\n";

// How long the writer waits for the line to write next, and how often it collects the lines
// behind it that have finished.
constexpr auto kWaitInterval = std::chrono::milliseconds(100);

// One input line in flight: running in the engine, or answered and waiting for its turn to be
// written.
struct Line {
  std::string id;  // "batch_req_<index>", index counting the non-blank input lines
  std::string custom_id;
  api::ApiCall call;
  std::unique_ptr<api::Submission> submission;  // set while running
  std::optional<json> record;                   // the output line, once answered
};

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve batch: %s\n", s.message().c_str());
  return 1;
}

// Routes `in` (a parsed input line), parses its body and submits its call with engine request
// ids "batch-<index>...". A refused line is answered at once.
Line start_line(api::BatchLine in, int64_t line_number, size_t index, Engine& engine,
                const api::ProtocolContext& context) {
  Line line;
  line.id = "batch_req_" + std::to_string(index);
  line.custom_id = in.custom_id;
  auto refuse = [&](const api::ApiError& e) {
    line.record = api::batch_output_line(line.id, line.custom_id, e);
    return std::move(line);
  };
  if (in.error) return refuse(*in.error);
  const api::Route* route = api::find_route(in.url);
  if (!route || !route->in_batch) {
    api::ApiError e = api::bad_request(
        "line " + std::to_string(line_number) + ": url must be " + api::batch_paths(), "url");
    e.http_status = 404;
    return refuse(e);
  }
  api::ApiOr<api::ApiCall> call = api::parse_call(route->endpoint, in.body, context);
  if (!call.ok()) return refuse(call.error());
  line.call = std::move(*call);
  line.call.disable_stream();
  api::ApiOr<std::unique_ptr<api::Submission>> submission =
      api::Submission::submit(engine, line.call, "batch-" + std::to_string(index));
  if (!submission.ok()) return refuse(submission.error());
  line.submission = std::move(*submission);
  return line;
}

// The output file: what an earlier run answered (--resume), then opened to append to it.
struct Output {
  std::ofstream file;
  std::ostream* stream = &std::cout;
  api::BatchProgress done;
};

Status open_output(const std::string& path, bool resume, Output& out) {
  if (path == "-") {
    if (resume) return invalid_argument("--resume needs an --output file, not stdout");
    return Status::Ok();
  }
  std::ios::openmode mode = std::ios::binary | std::ios::trunc;
  if (resume && std::filesystem::exists(path)) {
    std::ifstream previous(path, std::ios::binary);
    if (!previous) return invalid_argument(path + ": cannot read the output to resume");
    StatusOr<api::BatchProgress> done = api::scan_batch_output(previous);
    if (!done.ok()) return done.status().with_prefix(path + ": cannot resume");
    out.done = std::move(*done);
    previous.close();
    std::error_code ec;
    if (std::filesystem::file_size(path, ec) != static_cast<uintmax_t>(out.done.complete_bytes)) {
      // The torn last line of a killed run.
      std::filesystem::resize_file(path, static_cast<uintmax_t>(out.done.complete_bytes), ec);
      if (ec)
        return invalid_argument(path + ": cannot cut off its torn last line: " + ec.message());
    }
    mode = std::ios::binary | std::ios::app;
  }
  out.file.open(path, mode);
  if (!out.file) return invalid_argument(path + ": cannot open output");
  out.stream = &out.file;
  return Status::Ok();
}

struct Counts {
  size_t num_lines = 0;    // answered by this run
  size_t num_failed = 0;   // of those, answered with an error
  size_t num_skipped = 0;  // answered by an earlier run (--resume)
};

// Runs every input line not answered yet and writes its output line; an engine failure (the only
// way a submitted call ends in an error) stops the batch, as it stops the engine.
Status run_lines(std::istream& in, Engine& engine, const api::ProtocolContext& context, Output& out,
                 Counts& counts, Progress& progress) {
  // Lines submitted and not finished: enough that the engine's waiting queue stays long
  // (continuous batching picks from it) while the writer waits for the line to write next.
  const int max_num_seqs = engine.options().max_num_seqs;
  const size_t max_running = static_cast<size_t>(std::max(4 * max_num_seqs, 64));
  const size_t max_pending = 4 * max_running;
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  std::deque<Line> pending;  // in input order
  size_t num_running = 0;
  size_t next_index = 0;
  int64_t line_number = 0;
  bool input_done = false;
  bool started = false;
  Clock::time_point last_sweep = Clock::now();

  auto fill = [&] {
    std::string text;
    while (!input_done && num_running < max_running && pending.size() < max_pending) {
      if (!std::getline(in, text)) {
        input_done = true;
        break;
      }
      ++line_number;
      if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
      const size_t index = next_index++;
      api::BatchLine parsed = api::parse_batch_line(text, line_number, context);
      if (out.done.answered(parsed.custom_id, "batch_req_" + std::to_string(index))) {
        ++counts.num_skipped;
        continue;
      }
      pending.push_back(start_line(std::move(parsed), line_number, index, engine, context));
      if (pending.back().submission) ++num_running;
    }
  };
  auto finish = [&](Line& line) -> Status {
    api::ApiOr<std::vector<RequestOutput>> outputs = line.submission->collect();
    line.submission.reset();
    --num_running;
    if (!outputs.ok()) return internal_error(outputs.error().message);
    const api::ResponseMeta meta{line.id, created, context.served_model_name};
    line.record = api::batch_output_line(line.id, line.custom_id,
                                         api::final_response(line.call, meta, *outputs, context));
    return Status::Ok();
  };

  while (true) {
    fill();
    // The first window is submitted before the engine thread starts, so it runs together.
    if (!started) {
      engine.start();
      started = true;
    }
    if (pending.empty() && input_done) return Status::Ok();
    // Wait for the line to be written next (output follows input order). When the engine's
    // queue runs short, also collect the lines behind it that have finished, so that their
    // places in the window go to new lines (polling every line often costs more than it saves).
    if (Line& next = pending.front(); next.submission && next.submission->poll(kWaitInterval)) {
      ES_RETURN_IF_ERROR(finish(next));
    }
    if (Clock::now() - last_sweep >= kWaitInterval && !input_done &&
        engine.stats().num_waiting < max_num_seqs) {
      for (Line& line : pending) {
        if (line.submission && line.submission->poll()) ES_RETURN_IF_ERROR(finish(line));
      }
      last_sweep = Clock::now();
    }
    while (!pending.empty() && pending.front().record) {
      const json& record = *pending.front().record;
      ++counts.num_lines;
      if (record["response"]["status_code"] != 200) ++counts.num_failed;
      // One flushed write per line: a kill leaves at most the last line torn.
      const std::string text = record.dump() + "\n";
      out.stream->write(text.data(), static_cast<std::streamsize>(text.size()));
      out.stream->flush();
      if (!*out.stream) return internal_error("cannot write the output");
      pending.pop_front();
    }
    progress.update(counts.num_lines + counts.num_skipped);
  }
}

// The non-blank lines of the input file (the progress total); 0 (unknown) for stdin.
size_t count_lines(const std::string& path) {
  if (path == "-") return 0;
  std::ifstream in(path, std::ios::binary);
  size_t num_lines = 0;
  std::string text;
  while (std::getline(in, text)) {
    if (text.find_first_not_of(" \t\r") != std::string::npos) ++num_lines;
  }
  return num_lines;
}

}  // namespace

int run_batch(const Args& raw) {
  auto command = parse_engine_command("batch", raw, {"--input", "--output", "--served-model-name"},
                                      {"--resume"}, kHelp);
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
  Output out;
  if (Status s = open_output(*output_path, parsed->flag("--resume"), out); !s.ok()) return fail(s);
  // Worker ranks first: Engine::create waits for them (tensor parallelism only).
  auto ranks = start_tensor_parallel("batch", *parsed, *options);
  if (const int* code = std::get_if<int>(&ranks)) return *code;
  StatusOr<std::unique_ptr<Engine>> engine = Engine::create(*options);
  if (!engine.ok()) return fail(engine.status());
  StatusOr<api::ProtocolContext> context = api::make_protocol_context(
      **engine, options->model_dir, parsed->get_or("--served-model-name", ""));
  if (!context.ok()) return fail(context.status());
  context->speculative = std::get<EngineCommand>(command).speculative;

  Counts counts;
  Progress progress("batch", count_lines(*input_path),
                    stderr_progress_options(parsed->flag("--quiet")));
  if (Status s = run_lines(*in, **engine, *context, out, counts, progress); !s.ok()) return fail(s);
  progress.finish(counts.num_lines + counts.num_skipped);
  std::fprintf(stderr, "earnserve batch: %zu lines, %zu failed", counts.num_lines,
               counts.num_failed);
  if (parsed->flag("--resume")) {
    std::fprintf(stderr, ", %zu answered before (--resume)", counts.num_skipped);
  }
  std::fprintf(stderr, "\n");
  return 0;
}

}  // namespace earnserve::cli
