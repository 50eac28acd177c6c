// The lines of an `earnserve batch` file, in the OpenAI batch file format (as vLLM's run_batch):
// each input line {"custom_id", "method": "POST", "url", "body": {...}} and each output line
// {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}.
// A bad line gets an error response of its own. Free functions; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "api/protocol/fields.h"
#include "api/protocol/protocol_context.h"

namespace earnserve::api {

// One input line, checked as far as the endpoint: the url is routed by the caller.
struct BatchLine {
  std::string custom_id;  // empty when the line has none (its output line says null)
  std::string url;
  nlohmann::json body;
  std::optional<ApiError> error;  // set: the line does not run and is answered with it
};

// Reads input line number `line_number` (1-based; errors name it): malformed JSON, a missing
// custom_id, a method other than POST, a body that is not an object, or another model are errors.
BatchLine parse_batch_line(const std::string& text, int64_t line_number,
                           const ProtocolContext& ctx);

// The output line of a request `request_id` (the batch's own id of the line): `response` is the
// endpoint's response body (status 200) or its error.
nlohmann::json batch_output_line(const std::string& request_id, const std::string& custom_id,
                                 const ApiOr<nlohmann::json>& response);

}  // namespace earnserve::api
