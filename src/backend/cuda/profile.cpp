// FISDIT_CUDA_PROFILE=1: every op synchronizes around itself and its time is summed per op (and per
// GEMM shape), a breakdown for performance work, not for timing runs (profile.h, cuda_backend.h).
#include "backend/cuda/profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_backend.h"

namespace fisdit::cuda {

bool profiling() {
  static const bool on = [] {
    const char* v = std::getenv("FISDIT_CUDA_PROFILE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

namespace {
struct OpStats {
  int64_t calls = 0;
  double ms = 0;
};
std::map<std::string, OpStats>& op_stats() {
  static std::map<std::string, OpStats> m;
  return m;
}
}  // namespace

OpScope::OpScope(cudaStream_t s, const char* op) : stream_(s) {
  if (!profiling()) return;
  name_ = op;
  start();
}

OpScope::OpScope(cudaStream_t s, const char* op, const std::string& detail) : stream_(s) {
  if (!profiling()) return;
  name_ = std::string(op) + " " + detail;
  start();
}

OpScope::~OpScope() {
  if (name_.empty()) return;
  cudaStreamSynchronize(stream_);
  OpStats& st = op_stats()[name_];
  st.calls++;
  st.ms +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
}

void OpScope::start() {
  cudaStreamSynchronize(stream_);
  t0_ = std::chrono::steady_clock::now();
}

std::string op_profile_report(bool reset) {
  if (!profiling()) return "";
  std::vector<std::pair<double, std::string>> rows;
  double total = 0;
  for (const auto& [name, st] : op_stats()) {
    char line[256];
    std::snprintf(line, sizeof line, "%-40s %7lld calls %10.1f ms %8.3f ms/call", name.c_str(),
                  static_cast<long long>(st.calls), st.ms, st.ms / st.calls);
    rows.emplace_back(st.ms, line);
    total += st.ms;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::string out = "op profile (synchronized per op):\n";
  for (const auto& [ms, line] : rows) {
    char pct[32];
    std::snprintf(pct, sizeof pct, " %5.1f%%\n", 100.0 * ms / (total > 0 ? total : 1));
    out += "  " + line + pct;
  }
  if (reset) op_stats().clear();
  return out;
}

}  // namespace fisdit::cuda
