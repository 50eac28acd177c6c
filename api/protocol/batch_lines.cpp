#include "api/protocol/batch_lines.h"

namespace earnserve::api {

using nlohmann::json;

BatchLine parse_batch_line(const std::string& text, int64_t line_number,
                           const ProtocolContext& ctx) {
  BatchLine line;
  const std::string where = "line " + std::to_string(line_number);
  ApiOr<json> doc = parse_json_body(text);
  if (!doc.ok()) {
    line.error = doc.error();
    return line;
  }
  if (doc->contains("custom_id") && (*doc)["custom_id"].is_string()) {
    line.custom_id = (*doc)["custom_id"].get<std::string>();
  }
  line.url = doc->value("url", "");
  line.body = doc->value("body", json());
  if (line.custom_id.empty()) {
    line.error = bad_request(where + ": custom_id must be a non-empty string", "custom_id");
  } else if (doc->value("method", "POST") != "POST") {
    line.error = bad_request(where + ": method must be POST", "method");
  } else if (!line.body.is_object()) {
    line.error = bad_request(where + ": body must be a JSON object", "body");
  } else if (std::optional<ApiError> e = check_model(line.body, ctx)) {
    line.error = *e;
  }
  return line;
}

json batch_output_line(const std::string& request_id, const std::string& custom_id,
                       const ApiOr<json>& response) {
  json r = {{"request_id", request_id}};
  if (response.ok()) {
    r["status_code"] = 200;
    r["body"] = *response;
  } else {
    r["status_code"] = response.error().http_status;
    r["body"] = response.error().to_json();
  }
  return {{"id", request_id},
          {"custom_id", custom_id.empty() ? json() : json(custom_id)},
          {"response", r},
          {"error", nullptr}};
}

}  // namespace earnserve::api
