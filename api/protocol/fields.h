// Fields and errors of the OpenAI-compatible protocol, shared by every endpoint family: the
// OpenAI-style error `{"error": {"message", "type", "param", "code"}}` with its HTTP status, the
// mapping of engine Status codes onto it, ApiOr<T>, the reader of a request body's typed fields,
// the body and model checks every endpoint starts with, and the `usage` object responses end with.
// Free functions over plain data; thread-safe as long as the context's pointees are.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "api/protocol/protocol_context.h"
#include "core/status.h"
#include "scheduler/request.h"

namespace earnserve::api {

struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // empty: null
  std::string code;   // empty: null

  nlohmann::json to_json() const;
};

ApiError bad_request(std::string message, std::string param = "");
// Maps an engine Status: InvalidArgument/ResourceExhausted/OutOfRange -> 400, NotFound -> 404,
// Unavailable -> 503, Aborted -> 499-style 400 never reaches a client, anything else -> 500.
ApiError error_from_status(const Status& status, std::string param = "");

// Either a T or an ApiError.
template <typename T>
class ApiOr {
 public:
  ApiOr(ApiError error) : value_(std::move(error)) {}  // NOLINT: implicit by design
  ApiOr(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  bool ok() const { return value_.index() == 0; }
  const ApiError& error() const { return std::get<1>(value_); }
  // REQUIRES: ok().
  T& operator*() { return std::get<0>(value_); }
  const T& operator*() const { return std::get<0>(value_); }
  T* operator->() { return &std::get<0>(value_); }
  const T* operator->() const { return &std::get<0>(value_); }

 private:
  std::variant<T, ApiError> value_;
};

// Returns the ApiError of `expr` (a std::optional<ApiError>) from the calling function, if any.
#define ES_API_RETURN_IF(expr)                 \
  do {                                         \
    if (std::optional<ApiError> e_ = (expr)) { \
      return *e_;                              \
    }                                          \
  } while (0)

// Fields of one JSON object, read with type and range checks whose errors name the field
// (`prefix` + name: "speculative." for the fields of body["speculative"]). Absent and null
// fields leave `out` as it is. Borrows the object.
class FieldReader {
 public:
  explicit FieldReader(const nlohmann::json& object, std::string prefix = "")
      : object_(object), prefix_(std::move(prefix)) {}

  bool present(const char* name) const;
  std::optional<ApiError> read_int(const char* name, int64_t min, int64_t max, int& out) const;
  // A number in [min, max], or (min, max] when `min_open`.
  std::optional<ApiError> read_float(const char* name, double min, double max, bool min_open,
                                     float& out) const;
  std::optional<ApiError> read_bool(const char* name, bool& out) const;

 private:
  const nlohmann::json& object_;
  const std::string prefix_;
};

// The token ids of `list` (a JSON array) into `out`: 400 naming `param` for a non-integer or an
// id outside [0, ctx.vocab_size).
std::optional<ApiError> check_token_ids(const nlohmann::json& list, const ProtocolContext& ctx,
                                        const char* param, std::vector<int32_t>& out);
// 400 naming `param` unless `text` is well-formed UTF-8.
std::optional<ApiError> check_text(std::string_view text, const char* param);

// The body as a JSON object: 400 for invalid UTF-8 or malformed JSON, 422 for a non-object.
ApiOr<nlohmann::json> parse_json_body(const std::string& body);

// 404 unless `model` is absent, null or the served model name.
std::optional<ApiError> check_model(const nlohmann::json& body, const ProtocolContext& ctx);

// --- Responses. ---

struct ResponseMeta {
  std::string id;
  int64_t created = 0;
  std::string model;
};

// Token counts; with kv_blocks (per KV group, the most pages the request held: EARN models have
// two groups, the layers below the split and the register/generated-token layers above it) also
// "kv_blocks".
// With `speculative` also "speculative": {"rounds", "accepted_steps", ...} (speculative_json in
// api/protocol/speculative_protocol.h).
nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens,
                          std::span<const int> kv_blocks = {},
                          const std::optional<SpeculativeStats>& speculative = std::nullopt);

}  // namespace earnserve::api
