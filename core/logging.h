// Logging to stderr and ES_CHECK invariants. Thread-safe: each message is written with one call.
// The level comes from EARNSERVE_LOG_LEVEL (debug, info, warning, error; default info).
#pragma once

#include <sstream>
#include <string>

namespace earnserve {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

LogLevel log_level();
void set_log_level(LogLevel level);

// Collects one message and writes it on destruction; kFatal aborts after writing.
class LogMessage {
 public:
  LogMessage(const char* file, int line, LogLevel level);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  const char* file_;
  int line_;
  LogLevel level_;
  std::ostringstream stream_;
};

// Swallows a stream expression; lets `ES_CHECK(x) << "detail"` compile to nothing when x holds.
struct LogVoidify {
  void operator&(std::ostream&) {}
};

}  // namespace earnserve

#define ES_LOG(level)                                               \
  if (::earnserve::LogLevel::k##level < ::earnserve::log_level()) { \
  } else                                                            \
    ::earnserve::LogMessage(__FILE__, __LINE__, ::earnserve::LogLevel::k##level).stream()

// Aborts with file:line and the condition when `cond` is false. For invariants only, never for
// input a user can get wrong.
#define ES_CHECK(cond)                                                                             \
  (cond) ? (void)0                                                                                 \
         : ::earnserve::LogVoidify() &                                                             \
               ::earnserve::LogMessage(__FILE__, __LINE__, ::earnserve::LogLevel::kFatal).stream() \
                   << "Check failed: " #cond " "

#define ES_CHECK_EQ(a, b) ES_CHECK((a) == (b)) << "(" << (a) << " vs " << (b) << ") "
#define ES_CHECK_NE(a, b) ES_CHECK((a) != (b)) << "(" << (a) << " vs " << (b) << ") "
#define ES_CHECK_LT(a, b) ES_CHECK((a) < (b)) << "(" << (a) << " vs " << (b) << ") "
#define ES_CHECK_LE(a, b) ES_CHECK((a) <= (b)) << "(" << (a) << " vs " << (b) << ") "
#define ES_CHECK_GT(a, b) ES_CHECK((a) > (b)) << "(" << (a) << " vs " << (b) << ") "
#define ES_CHECK_GE(a, b) ES_CHECK((a) >= (b)) << "(" << (a) << " vs " << (b) << ") "
#define ES_CHECK_OK(expr)                                            \
  do {                                                               \
    ::earnserve::Status es_check_status_ = (expr);                   \
    ES_CHECK(es_check_status_.ok()) << es_check_status_.to_string(); \
  } while (0)
