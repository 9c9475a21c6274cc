#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace fisdit {

Progress::Progress(std::string stage, int total, bool enabled)
    : stage_(std::move(stage)),
      total_(std::max(total, 1)),
      enabled_(enabled),
      tty_(isatty(fileno(stderr)) != 0),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() {
  if (open_) std::fputc('\n', stderr);
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int done, const std::string& detail) {
  if (!enabled_) return;
  done = std::clamp(done, 0, total_);
  constexpr int kWidth = 24;
  const int filled = done * kWidth / total_;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(kWidth - filled), '-');
  const double secs = elapsed();
  // Remaining time from the mean rate so far; unknown before the first unit.
  std::string eta;
  if (done > 0 && done < total_) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " eta %.0fs", secs / done * (total_ - done));
    eta = buf;
  }
  char head[64];
  std::snprintf(head, sizeof head, "%d/%d %.1fs", done, total_, secs);
  const std::string line =
      stage_ + " [" + bar + "] " + head + eta + (detail.empty() ? std::string() : "  " + detail);
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line.c_str());
    open_ = true;
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

double Progress::finish(const std::string& detail) {
  const double secs = elapsed();
  if (enabled_) {
    if (open_) std::fputc('\n', stderr);
    open_ = false;
    char buf[48];
    std::snprintf(buf, sizeof buf, " done in %.2fs", secs);
    std::fprintf(stderr, "%s%s%s\n", stage_.c_str(), buf,
                 detail.empty() ? "" : ("  " + detail).c_str());
    std::fflush(stderr);
  }
  enabled_ = false;
  return secs;
}

}  // namespace fisdit
