// Reads one sample out of the Prometheus text exposition of GET /metrics, for the ServerMetrics
// tests. Free function over a string; thread-safe.
#pragma once

#include <string>

namespace earnserve::api {

// The value of the first sample line of `name` in the exposition text, or -1 when absent.
inline double metric_sample(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + "{");
  if (at == std::string::npos) return -1.0;
  const size_t space = text.find("} ", at);
  return std::stod(text.substr(space + 2, text.find('\n', space) - space - 2));
}

}  // namespace earnserve::api
