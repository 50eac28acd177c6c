// `earnserve serve`: loads a model into an Engine and serves the OpenAI-compatible HTTP API until
// SIGTERM or SIGINT, then stops admitting requests, drains those in flight and exits 0. With
// --tensor-parallel-size N it first starts N-1 worker ranks (api/cli/tp_launcher.h); if one of them
// dies or stops answering, the engine fails its requests (503), /health turns 503, and the server
// exits 1 a few seconds later.
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <thread>

#include "api/cli/commands.h"
#include "api/cli/engine_args.h"
#include "api/cli/tp_launcher.h"
#include "api/protocol/protocol_context.h"
#include "api/server/http_server.h"
#include "core/cli_args.h"
#include "core/logging.h"
#include "kernels/backend_info.h"
#include "scheduler/engine.h"

namespace earnserve::cli {
namespace {

constexpr const char* kHelp =
    "usage: earnserve serve --model DIR [options]\n"
    "  --host H                     address to listen on (default 127.0.0.1)\n"
    "  --port P                     port (default 8000; 0 picks a free one)\n"
    "  --served-model-name NAME     the model name clients send (default: the model dir's name)\n"
    "  --api-key KEY                require 'Authorization: Bearer KEY' on every route but\n"
    "                               /health and /metrics (repeatable; also EARNSERVE_API_KEY)\n"
    "  --protect-metrics            /metrics needs a key too\n"
    "  --max-queue N                requests in flight (queued or running) at most; more get\n"
    "                               429 (default 256)\n"
    "  --request-timeout-s S        abort a request not answered within S seconds: 408, or an\n"
    "                               error event ending its stream (default 0: no limit)\n"
    "  --max-body-bytes N           largest request body; larger gets 413 (default 4MiB)\n"
    "  --drain-timeout-s S          on SIGTERM, seconds to wait for in-flight requests (default "
    "60)\n"
    "  --log-format text|json       the access log on stdout, one line per request: method, path,\n"
    "                               status, latency, tokens, request id (default text)\n"
    "  --no-access-log              no access log\n"
    "The playground page (catalogue search, recommendations, streamed completions) is at\n"
    "http://HOST:PORT/.\n";

int g_signal_pipe[2] = {-1, -1};
constexpr char kSignalByte = 's';
constexpr char kStopByte = 'x';
constexpr char kEngineFailedByte = 'f';
// After an engine failure the server keeps answering (503, /health included) this long, so that
// clients and health checks see why, then drains and exits.
constexpr std::chrono::seconds kFailureLinger{2};
constexpr std::chrono::seconds kFailureDrain{5};

void on_signal(int) {
  const char byte = kSignalByte;
  [[maybe_unused]] ssize_t written = write(g_signal_pipe[1], &byte, 1);
}

int fail(const Status& s) {
  std::fprintf(stderr, "earnserve serve: %s\n", s.message().c_str());
  return 1;
}

// Takes every `--api-key KEY` / `--api-key=KEY` out of `args` (CliArgs keeps one value per
// option), then adds EARNSERVE_API_KEY when set.
StatusOr<std::vector<std::string>> take_api_keys(Args& args) {
  constexpr std::string_view kOption = "--api-key";
  std::vector<std::string> keys;
  Args rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == kOption) {
      if (i + 1 >= args.size()) return invalid_argument("option --api-key needs a value");
      keys.push_back(args[++i]);
    } else if (args[i].rfind(std::string(kOption) + "=", 0) == 0) {
      keys.push_back(args[i].substr(kOption.size() + 1));
    } else {
      rest.push_back(args[i]);
    }
  }
  if (const char* env = std::getenv("EARNSERVE_API_KEY"); env && *env) keys.emplace_back(env);
  for (const std::string& key : keys) {
    if (key.empty()) return invalid_argument("--api-key must not be empty");
  }
  args = std::move(rest);
  return keys;
}

}  // namespace

int run_serve(const Args& raw) {
  Args rest = raw;
  StatusOr<std::vector<std::string>> api_keys = take_api_keys(rest);
  if (!api_keys.ok()) return fail(api_keys.status());
  auto command = parse_engine_command(
      "serve", rest,
      {"--host", "--port", "--served-model-name", "--max-queue", "--max-body-bytes",
       "--drain-timeout-s", "--request-timeout-s", "--log-format"},
      {"--protect-metrics", "--no-access-log"}, kHelp);
  if (const int* code = std::get_if<int>(&command)) return *code;
  const CliArgs& args = std::get<EngineCommand>(command).args;
  EngineOptions* options = &std::get<EngineCommand>(command).options;

  api::HttpServerOptions server_options;
  server_options.host = args.get_or("--host", server_options.host);
  auto port = args.get_int("--port", server_options.port);
  auto max_queue = args.get_int("--max-queue", server_options.max_queue);
  auto drain_s = args.get_int("--drain-timeout-s", 60);
  auto timeout_s = args.get_double("--request-timeout-s", 0);
  for (const Status& s :
       {port.status(), max_queue.status(), drain_s.status(), timeout_s.status()}) {
    if (!s.ok()) return fail(s);
  }
  if (*port < 0 || *port > 65535) return fail(invalid_argument("--port must be in [0, 65535]"));
  if (*max_queue < 1) return fail(invalid_argument("--max-queue must be positive"));
  if (*drain_s < 0) return fail(invalid_argument("--drain-timeout-s must be >= 0"));
  if (!(*timeout_s >= 0 && *timeout_s <= 1e7)) {
    return fail(invalid_argument("--request-timeout-s must be in [0, 1e7] (0: no limit)"));
  }
  if (args.flag("--protect-metrics") && api_keys->empty()) {
    return fail(invalid_argument("--protect-metrics needs --api-key or EARNSERVE_API_KEY"));
  }
  server_options.port = static_cast<int>(*port);
  server_options.max_queue = static_cast<int>(*max_queue);
  server_options.request_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(std::ceil(*timeout_s * 1000)));
  server_options.api_keys = std::move(*api_keys);
  server_options.protect_metrics = args.flag("--protect-metrics");
  StatusOr<api::LogFormat> log_format = api::parse_log_format(args.get_or("--log-format", "text"));
  if (!log_format.ok()) return fail(log_format.status());
  server_options.access_log = *log_format;
  if (args.flag("--no-access-log")) server_options.access_log.reset();
  if (server_options.api_keys.empty() && server_options.host != "127.0.0.1" &&
      server_options.host != "localhost" && server_options.host != "::1") {
    ES_LOG(Warning) << "earnserve serve: listening on " << server_options.host
                    << " without --api-key: anyone who can reach it can use it (README: "
                       "exposing the server)";
  }
  if (auto bytes = args.get("--max-body-bytes")) {
    StatusOr<int64_t> b = parse_bytes(*bytes);
    if (!b.ok()) return fail(b.status().with_prefix("--max-body-bytes"));
    server_options.max_body_bytes = *b;
  }

  // Worker ranks first: Engine::create waits for them (tensor parallelism only).
  auto ranks = start_tensor_parallel("serve", args, *options);
  if (const int* code = std::get_if<int>(&ranks)) return *code;

  // SIGTERM/SIGINT write a byte to a pipe that one thread waits on (worker threads may exist
  // before this point, so blocking the signals per thread would not cover them).
  if (pipe(g_signal_pipe) != 0) return fail(internal_error("cannot create the signal pipe"));
  struct sigaction action = {};
  action.sa_handler = on_signal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  ES_LOG(Info) << "earnserve serve: backend: " << backend_info_line(backend_info());
  StatusOr<std::unique_ptr<Engine>> engine = Engine::create(*options);
  if (!engine.ok()) return fail(engine.status());
  StatusOr<api::ProtocolContext> context = api::make_protocol_context(
      **engine, options->model_dir, args.get_or("--served-model-name", ""));
  if (!context.ok()) return fail(context.status());
  context->speculative = std::get<EngineCommand>(command).speculative;

  api::HttpServer server(**engine, server_options, *context);
  StatusOr<int> bound = server.bind();
  if (!bound.ok()) return fail(bound.status());
  (*engine)->set_failure_callback([](const Status&) {
    const char byte = kEngineFailedByte;
    [[maybe_unused]] ssize_t written = write(g_signal_pipe[1], &byte, 1);
  });
  (*engine)->start();

  bool engine_failed = false;
  std::thread signal_thread([&] {
    char byte = 0;
    while (read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
    if (byte == kStopByte) return;
    if (byte == kEngineFailedByte) {
      engine_failed = true;
      std::fprintf(stderr, "earnserve serve: %s; exiting\n", (*engine)->health().message().c_str());
      std::this_thread::sleep_for(kFailureLinger);
      server.shutdown(kFailureDrain);
      return;
    }
    ES_LOG(Info) << "earnserve serve: signal received, draining " << server.num_in_flight()
                 << " in-flight requests";
    server.shutdown(std::chrono::seconds(*drain_s));
  });
  std::printf("earnserve serve: model '%s' listening on http://%s:%d\n",
              context->served_model_name.c_str(), server_options.host.c_str(), *bound);
  std::fflush(stdout);
  server.serve();
  // serve() also returns when listening failed; wake the signal thread so it can finish.
  const char stop = kStopByte;
  [[maybe_unused]] ssize_t written = write(g_signal_pipe[1], &stop, 1);
  signal_thread.join();
  (*engine)->stop();
  std::printf("earnserve serve: stopped\n");
  std::fflush(stdout);
  return engine_failed ? 1 : 0;
}

}  // namespace earnserve::cli
