// Access control of `earnserve serve`: the bearer keys given with --api-key / EARNSERVE_API_KEY,
// which paths need one, and the OpenAI-style 401 that refuses a request without a right key.
// Keys are compared in constant time (the time depends on the length of the header sent, never
// on the keys' contents). Immutable after construction; thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "api/protocol/fields.h"

namespace earnserve::api {

class ApiKeys {
 public:
  // No keys: every request is accepted. REQUIRES: no key is empty.
  explicit ApiKeys(std::vector<std::string> keys = {});

  bool enabled() const { return !keys_.empty(); }
  // Whether `path` needs a key: every path but /health and / (the playground page, which holds
  // no data: its API calls carry the key), and /metrics unless `protect_metrics`.
  static bool protects(std::string_view path, bool protect_metrics);
  // Whether `authorization` (the Authorization header) is "Bearer <one of the keys>"; the scheme
  // is case-insensitive. True for anything when no key is set.
  bool accepts(std::string_view authorization) const;
  // The 401 for a request whose Authorization header is `authorization` (empty: none sent).
  static ApiError unauthorized(std::string_view authorization);

 private:
  // Constant after construction
  std::vector<std::string> keys_;
};

}  // namespace earnserve::api
