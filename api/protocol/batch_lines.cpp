#include "api/protocol/batch_lines.h"

namespace earnserve::api {

using nlohmann::json;

namespace {

// The field `name` of `object`, or null when absent or JSON null.
const json* find_field(const json& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace

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
  // Fields are checked for type before they are read: json::value() throws on a mismatch.
  const json* url = find_field(*doc, "url");
  const json* method = find_field(*doc, "method");
  if (const json* body = find_field(*doc, "body")) line.body = *body;
  if (url && url->is_string()) line.url = url->get<std::string>();
  if (line.custom_id.empty()) {
    line.error = bad_request(where + ": custom_id must be a non-empty string", "custom_id");
  } else if (url && !url->is_string()) {
    line.error = bad_request(where + ": url must be a string", "url");
  } else if (method && !method->is_string()) {
    line.error = bad_request(where + ": method must be a string", "method");
  } else if (method && method->get<std::string>() != "POST") {
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

bool BatchProgress::answered(const std::string& custom_id, const std::string& id) const {
  return custom_id.empty() ? ids.count(id) > 0 : custom_ids.count(custom_id) > 0;
}

StatusOr<BatchProgress> scan_batch_output(std::istream& in) {
  BatchProgress progress;
  std::string text;
  int64_t line_number = 0;
  // getline sets eof on a last line without its newline: that one is torn.
  while (std::getline(in, text) && !in.eof()) {
    ++line_number;
    if (text.find_first_not_of(" \t\r") != std::string::npos) {
      json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
      const json* id = doc.is_object() ? find_field(doc, "id") : nullptr;
      if (!id || !id->is_string() || !doc.contains("custom_id") || !doc.contains("response")) {
        return invalid_argument("line " + std::to_string(line_number) +
                                " is not an output line of earnserve batch");
      }
      const json& custom_id = doc["custom_id"];
      if (custom_id.is_string() && !custom_id.get<std::string>().empty()) {
        progress.custom_ids.insert(custom_id.get<std::string>());
      } else {
        progress.ids.insert(id->get<std::string>());
      }
      ++progress.num_lines;
    }
    progress.complete_bytes += static_cast<int64_t>(text.size()) + 1;
  }
  return progress;
}

}  // namespace earnserve::api
