#include "api/protocol/fields.h"

#include <cmath>

#include "api/protocol/speculative_protocol.h"
#include "model/tokenizer/utf8.h"

namespace earnserve::api {
namespace {

using nlohmann::json;

// `d` without trailing zeros ("2", "0.5").
std::string trim(double d) {
  std::string s = std::to_string(d);
  while (s.size() > 1 && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

json ApiError::to_json() const {
  json e = {{"message", message}, {"type", type}};
  e["param"] = param.empty() ? json(nullptr) : json(param);
  e["code"] = code.empty() ? json(nullptr) : json(code);
  return {{"error", e}};
}

ApiError bad_request(std::string message, std::string param) {
  return ApiError{400, "invalid_request_error", std::move(message), std::move(param), ""};
}

ApiError error_from_status(const Status& status, std::string param) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kOutOfRange:
    case StatusCode::kResourceExhausted:
      return bad_request(status.message(), std::move(param));
    case StatusCode::kNotFound:
      return ApiError{404, "invalid_request_error", status.message(), std::move(param),
                      "not_found"};
    case StatusCode::kUnavailable:
      return ApiError{503, "server_error", status.message(), "", "service_unavailable"};
    default:
      return ApiError{500, "server_error", status.message(), "", "internal_error"};
  }
}

bool FieldReader::present(const char* name) const {
  auto it = object_.find(name);
  return it != object_.end() && !it->is_null();
}

std::optional<ApiError> FieldReader::read_int(const char* name, int64_t min, int64_t max,
                                              int& out) const {
  if (!present(name)) return std::nullopt;
  const std::string param = prefix_ + name;
  const json& v = object_.at(name);
  if (v.is_boolean() ||
      !(v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                  v.get<double>() == std::floor(v.get<double>())))) {
    return bad_request(param + " must be an integer", param);
  }
  const double d = v.get<double>();
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    return bad_request(param + " must be in [" + std::to_string(min) + ", " + std::to_string(max) +
                           "], got " + v.dump(),
                       param);
  }
  out = static_cast<int>(v.get<int64_t>());
  return std::nullopt;
}

std::optional<ApiError> FieldReader::read_float(const char* name, double min, double max,
                                                bool min_open, float& out) const {
  if (!present(name)) return std::nullopt;
  const std::string param = prefix_ + name;
  const json& v = object_.at(name);
  if (!v.is_number() || v.is_boolean()) return bad_request(param + " must be a number", param);
  const double d = v.get<double>();
  if (!std::isfinite(d) || d > max || d < min || (min_open && d == min)) {
    return bad_request(param + " must be in " + (min_open ? "(" : "[") + trim(min) + ", " +
                           trim(max) + "], got " + v.dump(),
                       param);
  }
  out = static_cast<float>(d);
  return std::nullopt;
}

std::optional<ApiError> FieldReader::read_bool(const char* name, bool& out) const {
  if (!present(name)) return std::nullopt;
  const std::string param = prefix_ + name;
  const json& v = object_.at(name);
  if (!v.is_boolean()) return bad_request(param + " must be a boolean", param);
  out = v.get<bool>();
  return std::nullopt;
}

std::optional<ApiError> check_token_ids(const json& list, const ProtocolContext& ctx,
                                        const char* param, std::vector<int32_t>& out) {
  out.clear();
  for (const json& t : list) {
    if (!t.is_number_integer()) {
      return bad_request(std::string(param) + " must hold integer token ids", param);
    }
    const int64_t id = t.get<int64_t>();
    if (t.is_number_unsigned() ? t.get<uint64_t>() >= static_cast<uint64_t>(ctx.vocab_size)
                               : (id < 0 || id >= ctx.vocab_size)) {
      return bad_request("token id " + t.dump() + " is outside the vocabulary [0, " +
                             std::to_string(ctx.vocab_size) + ")",
                         param);
    }
    out.push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

std::optional<ApiError> check_text(std::string_view text, const char* param) {
  if (!is_valid_utf8(text)) return bad_request(std::string(param) + " is not valid UTF-8", param);
  return std::nullopt;
}

ApiOr<json> parse_json_body(const std::string& body) {
  if (!is_valid_utf8(body)) return bad_request("the request body is not valid UTF-8");
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad_request("the request body is not valid JSON");
  if (!j.is_object()) {
    return ApiError{422, "invalid_request_error", "the request body must be a JSON object", "",
                    "unprocessable_entity"};
  }
  return j;
}

std::optional<ApiError> check_model(const json& body, const ProtocolContext& ctx) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) return bad_request("model must be a string", "model");
  if (it->get<std::string>() != ctx.served_model_name) {
    return ApiError{404, "invalid_request_error",
                    "the model '" + it->get<std::string>() + "' does not exist", "model",
                    "model_not_found"};
  }
  return std::nullopt;
}

json usage_json(int64_t prompt_tokens, int64_t completion_tokens, std::span<const int> kv_blocks,
                const std::optional<SpeculativeStats>& speculative) {
  json usage = {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens}};
  if (!kv_blocks.empty()) usage["kv_blocks"] = std::vector<int>(kv_blocks.begin(), kv_blocks.end());
  if (speculative) usage["speculative"] = speculative_json(*speculative);
  return usage;
}

}  // namespace earnserve::api
