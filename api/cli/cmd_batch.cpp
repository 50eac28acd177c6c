// `earnserve batch`: offline bulk jobs in the OpenAI batch file format, as vLLM's run_batch.
// Each input line: {"custom_id", "method": "POST", "url": "/v1/completions" |
// "/v1/chat/completions" | "/v1/recommendations", "body": {...}}. Each output line, in input
// order: {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}.
// A bad line gets an error response of its own; every other line still runs. All valid lines
// run together under continuous batching.
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/cli_args.h"
#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/tp_launcher.h"
#include "api/protocol/openai_protocol.h"
#include "api/protocol/protocol_context.h"
#include "scheduler/engine.h"

namespace earnserve::cli {
namespace {

using nlohmann::json;

constexpr const char* kHelp =
    "usage: earnserve batch --model DIR --input FILE --output FILE [engine options]\n"
    "  --input FILE    JSONL: {custom_id, method, url, body} per line ('-' = stdin)\n"
    "  --output FILE   JSONL results in input order ('-' = stdout)\n";

enum class Kind { kCompletion, kChat, kRecommendation };

struct Line {
  std::string custom_id;
  Kind kind = Kind::kCompletion;
  std::optional<api::ApiError> error;
  api::CompletionRequest completion;
  std::vector<std::string> request_ids;  // engine request ids, in prompt order
  std::vector<std::shared_ptr<RequestStream>> streams;
};

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve batch: %s\n", s.message().c_str());
  return 1;
}

json error_body(const api::ApiError& e) { return e.to_json(); }

}  // namespace

int run_batch(const Args& raw) {
  auto command = parse_engine_command("batch", raw, {"--input", "--output", "--served-model-name"},
                                      {}, kHelp);
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

  std::vector<Line> lines;
  std::string text;
  int64_t line_number = 0;
  while (std::getline(*in, text)) {
    ++line_number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    Line line;
    const std::string where = "line " + std::to_string(line_number);
    api::ApiOr<json> doc = api::parse_json_body(text);
    if (!doc.ok()) {
      line.error = doc.error();
      lines.push_back(std::move(line));
      continue;
    }
    if (doc->contains("custom_id") && (*doc)["custom_id"].is_string()) {
      line.custom_id = (*doc)["custom_id"].get<std::string>();
    }
    const std::string url = doc->value("url", "");
    const json body = doc->value("body", json());
    if (line.custom_id.empty()) {
      line.error = api::bad_request(where + ": custom_id must be a non-empty string", "custom_id");
    } else if (doc->value("method", "POST") != "POST") {
      line.error = api::bad_request(where + ": method must be POST", "method");
    } else if (!body.is_object()) {
      line.error = api::bad_request(where + ": body must be a JSON object", "body");
    } else if (std::optional<api::ApiError> e = api::check_model(body, *context)) {
      line.error = *e;
    } else if (url == "/v1/completions" || url == "/v1/chat/completions") {
      line.kind = url == "/v1/completions" ? Kind::kCompletion : Kind::kChat;
      api::ApiOr<api::CompletionRequest> req = line.kind == Kind::kCompletion
                                                   ? api::parse_completion_request(body, *context)
                                                   : api::parse_chat_request(body, *context);
      if (!req.ok()) {
        line.error = req.error();
      } else {
        line.completion = std::move(*req);
        line.completion.stream = false;
        for (EngineRequest& r : line.completion.engine_requests("batch-" + std::to_string(lines.size()))) {
          line.request_ids.push_back(r.request_id);
          r.stream = false;
          StatusOr<std::shared_ptr<RequestStream>> s = (*engine)->add_request(std::move(r));
          if (!s.ok()) {
            line.error = api::error_from_status(s.status(), "prompt");
            break;
          }
          line.streams.push_back(*s);
        }
      }
    } else if (url == "/v1/recommendations") {
      line.kind = Kind::kRecommendation;
      api::ApiOr<api::ParsedRecommendation> req = api::parse_recommendation_request(body, *context);
      if (!req.ok()) {
        line.error = req.error();
      } else {
        EngineRequest r = std::move(req->request);
        r.request_id = "batch-" + std::to_string(lines.size());
        line.request_ids.push_back(r.request_id);
        StatusOr<std::shared_ptr<RequestStream>> s = (*engine)->add_request(std::move(r));
        if (!s.ok()) {
          line.error = api::error_from_status(s.status(), "history");
        } else {
          line.streams.push_back(*s);
        }
      }
    } else {
      line.error = api::bad_request(where + ": url must be /v1/completions, "
                                    "/v1/chat/completions or /v1/recommendations", "url");
      line.error->http_status = 404;
    }
    // A line that failed half-way (a later prompt rejected) drops its admitted prompts.
    if (line.error) {
      for (const std::string& id : line.request_ids) (*engine)->abort_request(id);
      line.streams.clear();
    }
    lines.push_back(std::move(line));
  }

  while ((*engine)->has_unfinished()) {
    StatusOr<bool> ran = (*engine)->step();
    if (!ran.ok()) return fail(ran.status());
  }

  std::ofstream file_out;
  std::ostream* out = &std::cout;
  if (*output_path != "-") {
    file_out.open(*output_path);
    if (!file_out) return fail(invalid_argument(*output_path + ": cannot open output"));
    out = &file_out;
  }
  const int64_t created = static_cast<int64_t>(std::time(nullptr));
  int failed = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    Line& line = lines[i];
    const std::string id = "batch_req_" + std::to_string(i);
    json response = {{"request_id", id}};
    if (!line.error) {
      std::vector<RequestOutput> outputs;
      for (auto& stream : line.streams) {
        std::optional<RequestOutput> last;
        while (auto o = stream->next(std::chrono::milliseconds(0))) last = std::move(o);
        if (!last || !last->error.ok()) {
          line.error = api::error_from_status(last ? last->error : internal_error("no output"));
          break;
        }
        outputs.push_back(std::move(*last));
      }
      if (!line.error) {
        api::ResponseMeta meta{id, created, context->served_model_name};
        if (line.kind == Kind::kRecommendation) {
          const RequestOutput& o = outputs.front();
          int64_t completion_tokens = 0;
          for (const SequenceOutput& s : o.outputs) completion_tokens += s.token_ids.size();
          response["body"] = api::recommendation_response(
              meta, context->recommendation->items(o),
              static_cast<int64_t>(o.prompt_token_ids.size()), completion_tokens,
              o.metrics.peak_kv_blocks, o.speculative);
        } else {
          response["body"] =
              api::completion_response(meta, line.completion, outputs, (*engine)->tokenizer());
        }
        response["status_code"] = 200;
      }
    }
    if (line.error) {
      ++failed;
      response["status_code"] = line.error->http_status;
      response["body"] = error_body(*line.error);
    }
    json record = {{"id", id},
                   {"custom_id", line.custom_id.empty() ? json() : json(line.custom_id)},
                   {"response", response},
                   {"error", nullptr}};
    *out << record.dump() << "\n";
  }
  out->flush();
  std::fprintf(stderr, "earnserve batch: %zu lines, %d failed\n", lines.size(), failed);
  return 0;
}

}  // namespace earnserve::cli
