#include "api/server/api_keys.h"

#include <cctype>
#include <optional>

#include "core/logging.h"

namespace earnserve::api {
namespace {

constexpr std::string_view kScheme = "bearer ";

// Equal in time that depends only on the candidate's length: every byte of it is compared
// (against the key cycled), and the lengths are part of the result.
bool constant_time_equal(std::string_view candidate, std::string_view key) {
  unsigned diff = candidate.size() == key.size() ? 0u : 1u;
  for (size_t i = 0; i < candidate.size(); ++i) {
    diff |=
        static_cast<unsigned char>(candidate[i]) ^ static_cast<unsigned char>(key[i % key.size()]);
  }
  return diff == 0;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The token of a "Bearer <token>" header, or nullopt for another scheme.
std::optional<std::string_view> bearer_token(std::string_view authorization) {
  authorization = trim(authorization);
  if (authorization.size() < kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) != kScheme[i]) {
      return std::nullopt;
    }
  }
  return trim(authorization.substr(kScheme.size()));
}

}  // namespace

ApiKeys::ApiKeys(std::vector<std::string> keys) : keys_(std::move(keys)) {
  for (const std::string& key : keys_) ES_CHECK(!key.empty()) << "an API key is empty";
}

bool ApiKeys::protects(std::string_view path, bool protect_metrics) {
  if (path == "/health" || path == "/") return false;
  if (path == "/metrics") return protect_metrics;
  return true;
}

bool ApiKeys::accepts(std::string_view authorization) const {
  if (keys_.empty()) return true;
  std::optional<std::string_view> token = bearer_token(authorization);
  if (!token || token->empty()) return false;
  // Every key is compared, so the time does not say which one matched.
  bool match = false;
  for (const std::string& key : keys_) match |= constant_time_equal(*token, key);
  return match;
}

ApiError ApiKeys::unauthorized(std::string_view authorization) {
  std::string message;
  if (trim(authorization).empty()) {
    message =
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).";
  } else if (!bearer_token(authorization)) {
    message = "The Authorization header must use the Bearer scheme (Authorization: Bearer KEY).";
  } else {
    message = "Incorrect API key provided.";
  }
  return ApiError{401, "invalid_request_error", std::move(message), "", "invalid_api_key"};
}

}  // namespace earnserve::api
