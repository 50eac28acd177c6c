// libFuzzer target over one line of an `earnserve batch` input file (api/protocol/batch_lines.h):
// the line is parsed, its url routed through the route table and its body parsed for that
// endpoint, as `earnserve batch` does before it submits anything; the output line is built from
// the error or the immediate answer. Uses the tiny-rec fixture's context; no engine. Any crash or
// sanitizer report, or an error that is not a 4xx with a message, is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "api/protocol/batch_lines.h"
#include "api/service/routes.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace api = earnserve::api;
  const api::ProtocolContext& ctx = earnserve::fuzz::tiny_rec_context();
  const std::string text(reinterpret_cast<const char*>(data), size);
  api::BatchLine line = api::parse_batch_line(text, /*line_number=*/7, ctx);
  auto check_error = [](const api::ApiError& e) {
    ES_CHECK(e.http_status >= 400 && e.http_status < 500) << e.http_status;
    ES_CHECK(!e.message.empty());
  };
  if (line.error) {
    check_error(*line.error);
    (void)api::batch_output_line("batch_req_0", line.custom_id, *line.error).dump();
    return 0;
  }
  const api::Route* route = api::find_route(line.url);
  if (!route || !route->in_batch) return 0;
  api::ApiOr<api::ApiCall> call = api::parse_call(route->endpoint, line.body, ctx);
  if (!call.ok()) {
    check_error(call.error());
    return 0;
  }
  call->disable_stream();
  if (call->needs_engine()) {
    for (const auto& r : call->engine_requests("fuzz")) ES_CHECK(!r.prompt_token_ids.empty());
  }
  return 0;
}
