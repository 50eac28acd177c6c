// The lines of an `earnserve batch` file, in the OpenAI batch file format (as vLLM's run_batch):
// each input line {"custom_id", "method": "POST", "url", "body": {...}} and each output line
// {"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error": null}.
// A bad line gets an error response of its own; a killed run is resumed from what its output file
// holds. Free functions; thread-safe.
#pragma once

#include <cstdint>
#include <istream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
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

// What an earlier run of a batch left in its output file (`earnserve batch --resume`): the lines
// it answered, and where its last complete line ends (a run killed mid-write leaves a torn last
// line without its newline, which the next run cuts off).
struct BatchProgress {
  std::set<std::string> custom_ids;  // of the answered lines that have one
  std::set<std::string> ids;         // "batch_req_<index>" of answered lines without a custom_id
  int64_t num_lines = 0;             // complete output lines
  int64_t complete_bytes = 0;        // the length of the complete lines; the rest is torn
  bool answered(const std::string& custom_id, const std::string& id) const;
};

// Reads an output file of `earnserve batch`: an error names the first complete line that is not
// an output line (the file is something else; resuming would append to it).
StatusOr<BatchProgress> scan_batch_output(std::istream& in);

}  // namespace earnserve::api
