#include "api/cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace earnserve::cli {

namespace {

std::string format_duration(double seconds) {
  const long long s = std::llround(std::max(0.0, seconds));
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", s / 3600, (s % 3600) / 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%llds", s);
  }
  return buf;
}

}  // namespace

ProgressOptions stderr_progress_options(bool quiet) {
  ProgressOptions options;
  options.enabled = !quiet;
  options.tty = isatty(STDERR_FILENO) == 1;
  return options;
}

std::string format_progress(const std::string& label, size_t done, size_t total, double seconds) {
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  char buf[160];
  if (total == 0) {
    std::snprintf(buf, sizeof(buf), "%s: %zu done, %.1f/s", label.c_str(), done, rate);
    return buf;
  }
  const double percent = 100.0 * static_cast<double>(done) / static_cast<double>(total);
  const std::string eta = done >= total ? std::string("0s")
                          : rate > 0    ? format_duration(static_cast<double>(total - done) / rate)
                                        : std::string("?");
  std::snprintf(buf, sizeof(buf), "%s: %zu/%zu (%.1f%%), %.1f/s, ETA %s", label.c_str(), done,
                total, percent, rate, eta.c_str());
  return buf;
}

Progress::Progress(std::string label, size_t total, ProgressOptions options)
    : label_(std::move(label)),
      total_(total),
      options_(options),
      start_(std::chrono::steady_clock::now()),
      last_write_(start_) {}

void Progress::update(size_t done) {
  if (!options_.enabled || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const auto interval = options_.tty ? options_.tty_interval : options_.plain_interval;
  if (now - last_write_ < interval) return;
  last_write_ = now;
  write(done, /*final=*/false);
}

void Progress::finish(size_t done) {
  if (!options_.enabled || finished_) return;
  finished_ = true;
  write(done, /*final=*/true);
}

void Progress::write(size_t done, bool final) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string line = format_progress(label_, done, total_, seconds);
  if (final) {
    char tail[48];
    std::snprintf(tail, sizeof(tail), ", done in %.1f s", seconds);
    if (const size_t eta = line.rfind(", ETA"); eta != std::string::npos) line.resize(eta);
    line += tail;
  }
  if (options_.tty) {
    // Back to the line's start, the text, then erase what a longer earlier line left.
    std::fprintf(options_.out, "\r%s\x1b[K%s", line.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(options_.out, "%s\n", line.c_str());
  }
  std::fflush(options_.out);
}

}  // namespace earnserve::cli
