// Timing, medians and device memory for fisdit bench.
#include "bench_util.h"

#include <algorithm>
#include <cstdio>

#ifdef FISDIT_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace fisdit::cli {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double since_ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

Timer::Timer(Backend& b) : backend_(b) {
#ifdef FISDIT_WITH_CUDA
  if (b.device() == Device::CUDA) events_ = std::make_unique<cuda::EventTimer>(b);
#endif
}

Timer::~Timer() = default;

void Timer::start() {
#ifdef FISDIT_WITH_CUDA
  if (events_) return events_->start();
#endif
  backend_.synchronize();
  t0_ = std::chrono::steady_clock::now();
}

double Timer::stop_ms() {
#ifdef FISDIT_WITH_CUDA
  if (events_) return events_->stop_ms();
#endif
  backend_.synchronize();
  return since_ms(t0_);
}

Memory memory(const Backend& b) {
  Memory m;
  const int64_t in_use = b.memory_in_use(), peak = b.memory_peak();
  m.known = in_use >= 0 && peak >= 0;  // device backends; the CPU does not track memory
  if (m.known) {
    m.in_use_gib = static_cast<double>(in_use) / 1073741824.0;
    m.peak_gib = static_cast<double>(peak) / 1073741824.0;
  }
  return m;
}

std::string gib_text(bool known, double gib) {
  if (!known) return "-";
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", gib);
  return text;
}

std::string take_op_profile() {
#ifdef FISDIT_WITH_CUDA
  return cuda::op_profile_report(/*reset=*/true);
#else
  return "";
#endif
}

}  // namespace fisdit::cli
