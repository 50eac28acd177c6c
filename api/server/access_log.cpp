#include "api/server/access_log.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

namespace earnserve::api {

namespace {

// The current UTC time as 2026-12-03T13:05:01.042Z.
std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(millis));
  return buf;
}

// A path as the text format shows it: bytes outside printable ASCII, quotes and backslashes
// escaped, so one request stays one line.
std::string printable(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace

StatusOr<LogFormat> parse_log_format(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return invalid_argument("--log-format must be text or json, got '" + std::string(name) + "'");
}

bool is_valid_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string format_access_line(const AccessEntry& entry, LogFormat format) {
  const double latency_ms = entry.latency_s * 1000.0;
  if (format == LogFormat::kJson) {
    auto tokens = [](int64_t n) { return n < 0 ? nlohmann::json(nullptr) : nlohmann::json(n); };
    nlohmann::ordered_json j = {{"time", utc_now()},
                                {"remote_addr", entry.remote_addr},
                                {"method", entry.method},
                                {"path", entry.path},
                                {"status", entry.status},
                                {"latency_ms", std::round(latency_ms * 1000.0) / 1000.0},
                                {"prompt_tokens", tokens(entry.prompt_tokens)},
                                {"completion_tokens", tokens(entry.completion_tokens)},
                                {"request_id", entry.request_id}};
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  char latency[32];
  std::snprintf(latency, sizeof(latency), "%.1fms", latency_ms);
  std::string line = utc_now() + " " + printable(entry.remote_addr) + " \"" +
                     printable(entry.method) + " " + printable(entry.path) + "\" " +
                     std::to_string(entry.status) + " " + latency;
  if (entry.prompt_tokens >= 0) line += " prompt_tokens=" + std::to_string(entry.prompt_tokens);
  if (entry.completion_tokens >= 0) {
    line += " completion_tokens=" + std::to_string(entry.completion_tokens);
  }
  return line + " request_id=" + printable(entry.request_id);
}

void AccessLog::write(const AccessEntry& entry) {
  const std::string line = format_access_line(entry, format_) + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace earnserve::api
