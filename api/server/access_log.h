// AccessLog: one line per HTTP request the server answers (method, path, status, latency,
// prompt and completion tokens, request id, client address), as text or as one JSON object per
// line (`earnserve serve --log-format text|json`), written to a FILE (stdout for the server).
// The entry of a request is filled by the server's handlers while it runs and written once its
// response (a whole stream included) has been sent; see api/server/http_server.cpp.
// AccessLog::write is thread-safe (one write per line under a mutex); the free functions are
// pure.
#pragma once

#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

#include "core/status.h"

namespace earnserve::api {

enum class LogFormat { kText, kJson };

// "text" or "json"; anything else is an error naming the choices.
StatusOr<LogFormat> parse_log_format(std::string_view name);

struct AccessEntry {
  std::string method;
  std::string path;  // without the query string
  int status = 0;
  double latency_s = 0;  // from the request's routing to its last byte written
  // Tokens of the request's engine call; -1 when it made none (GET routes, errors, tokenize).
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = -1;
  std::string request_id;  // the X-Request-Id of the response
  std::string remote_addr;
};

// Whether a client's X-Request-Id may be echoed and logged as it is: 1 to 128 characters of
// [A-Za-z0-9._:-]. Others are replaced by one the server makes.
bool is_valid_request_id(std::string_view id);

// The line of `entry` without its newline. Text:
//   2026-12-03T13:05:01.042Z 127.0.0.1 "POST /v1/recommendations" 200 12.3ms prompt_tokens=38
//   completion_tokens=40 request_id=rec-...
// JSON: {"time", "remote_addr", "method", "path", "status", "latency_ms", "prompt_tokens",
// "completion_tokens", "request_id"} (token counts null when absent).
std::string format_access_line(const AccessEntry& entry, LogFormat format);

class AccessLog {
 public:
  // Borrows `out`, which must outlive the log.
  AccessLog(LogFormat format, std::FILE* out) : format_(format), out_(out) {}
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  void write(const AccessEntry& entry);

 private:
  // Constant after construction
  const LogFormat format_;
  std::FILE* const out_;
  std::mutex mu_;  // one line at a time
};

}  // namespace earnserve::api
