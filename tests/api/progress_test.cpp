// The progress line of long commands: its text, one line redrawn in place on a terminal, plain
// lines elsewhere, nothing when disabled (--quiet).
#include "api/cli/progress.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>

namespace earnserve::cli {
namespace {

// Everything written to a temporary FILE.
class Capture {
 public:
  Capture() : file_(std::tmpfile()) {}
  ~Capture() { std::fclose(file_); }
  std::FILE* file() { return file_; }
  std::string text() {
    std::fflush(file_);
    std::rewind(file_);
    std::string out;
    for (int c; (c = std::fgetc(file_)) != EOF;) out += static_cast<char>(c);
    return out;
  }

 private:
  std::FILE* file_;
};

TEST(ProgressTest, FormatsDoneTotalRateAndEta) {
  EXPECT_EQ(format_progress("eval", 100, 400, 10.0), "eval: 100/400 (25.0%), 10.0/s, ETA 30s");
  EXPECT_EQ(format_progress("eval", 10, 7210, 1.0), "eval: 10/7210 (0.1%), 10.0/s, ETA 12m00s");
  EXPECT_EQ(format_progress("eval", 0, 400, 0.0), "eval: 0/400 (0.0%), 0.0/s, ETA ?");
  EXPECT_EQ(format_progress("batch", 30, 0, 2.0), "batch: 30 done, 15.0/s");
}

// Options writing into `out`, on a terminal or not, with `interval` between updates.
ProgressOptions options_into(Capture& out, bool tty, std::chrono::milliseconds interval) {
  ProgressOptions options;
  options.tty = tty;
  options.tty_interval = options.plain_interval = interval;
  options.out = out.file();
  return options;
}

TEST(ProgressTest, PlainLinesWhenNotATerminal) {
  Capture out;
  Progress progress("batch", 3, options_into(out, false, std::chrono::milliseconds(0)));
  progress.update(1);
  progress.update(2);
  progress.finish(3);
  progress.finish(3);
  const std::string text = out.text();
  EXPECT_EQ(text.find('\r'), std::string::npos);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << text;
  EXPECT_NE(text.find("batch: 1/3 (33.3%)"), std::string::npos) << text;
  EXPECT_NE(text.find("batch: 3/3 (100.0%)"), std::string::npos) << text;
  EXPECT_NE(text.find("done in"), std::string::npos) << text;
}

TEST(ProgressTest, OneLineRedrawnOnATerminal) {
  Capture out;
  Progress progress("eval", 2, options_into(out, true, std::chrono::milliseconds(0)));
  progress.update(1);
  progress.finish(2);
  const std::string text = out.text();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;  // only after the last
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 2) << text;
  EXPECT_NE(text.find("\x1b[K"), std::string::npos);
  EXPECT_NE(text.find("eval: 2/2"), std::string::npos) << text;
}

TEST(ProgressTest, PlainLinesWaitForTheirInterval) {
  Capture out;
  Progress progress("eval", 10, options_into(out, false, std::chrono::hours(1)));
  for (size_t i = 0; i < 10; ++i) progress.update(i);
  EXPECT_EQ(out.text(), "");
  progress.finish(10);
  const std::string text = out.text();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
}

TEST(ProgressTest, QuietWritesNothing) {
  Capture out;
  ProgressOptions options = stderr_progress_options(/*quiet=*/true);
  options.out = out.file();
  options.plain_interval = options.tty_interval = std::chrono::milliseconds(0);
  Progress progress("eval", 2, options);
  progress.update(1);
  progress.finish(2);
  EXPECT_EQ(out.text(), "");
}

}  // namespace
}  // namespace earnserve::cli
