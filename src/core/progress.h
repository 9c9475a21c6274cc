#pragma once
// Progress of long work on stderr: a bar redrawn in place on a terminal, one line per update
// otherwise (logs, CI, pipes), so stdout stays machine-readable.
#include <chrono>
#include <string>

namespace fisdit {

class Progress {
 public:
  // `stage` names the work ("encode", "denoise", "decode"); `total` units of it.
  Progress(std::string stage, int total, bool enabled = true);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // `done` units finished; `detail` says what the last one was ("step 2/4 high-noise fis on").
  void update(int done, const std::string& detail = {});
  // Ends the bar (a newline on a terminal) and returns the seconds since construction.
  double finish(const std::string& detail = {});
  double elapsed() const;

 private:
  std::string stage_;
  int total_;
  bool enabled_, tty_, open_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace fisdit
