// Progress: how far a long command (`earnserve eval`, `earnserve batch`) has got, on stderr.
// On a terminal one line is redrawn in place (done/total, requests per second, ETA) a few times
// a second; anywhere else (a log file, a pipe) a plain line is written every `plain_interval`;
// both end with one final line. `--quiet` turns it off (enabled = false).
// Not thread-safe: one thread (the command's) updates it.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace earnserve::cli {

struct ProgressOptions {
  bool enabled = true;
  bool tty = false;  // redraw one line in place (true) or write plain lines (false)
  std::chrono::milliseconds tty_interval{200};
  std::chrono::milliseconds plain_interval{10000};
  std::FILE* out = stderr;  // borrowed
};

// The options for stderr: tty when stderr is a terminal; disabled when `quiet`.
ProgressOptions stderr_progress_options(bool quiet);

// "eval: 120/3553 (3.4%), 41.2/s, ETA 1m23s"; with total 0 (unknown) "batch: 120 done, 41.2/s".
std::string format_progress(const std::string& label, size_t done, size_t total, double seconds);

class Progress {
 public:
  // `total` 0: unknown (no percentage, no ETA).
  Progress(std::string label, size_t total, ProgressOptions options);
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` items so far; writes when the interval for this kind of output has passed.
  void update(size_t done);
  // The final line ("... done in 12.3 s"); later calls do nothing.
  void finish(size_t done);

 private:
  void write(size_t done, bool final);

  // Constant after construction
  const std::string label_;
  const size_t total_;
  const ProgressOptions options_;
  const std::chrono::steady_clock::time_point start_;

  std::chrono::steady_clock::time_point last_write_;
  bool finished_ = false;
};

}  // namespace earnserve::cli
