#pragma once
// The op profile of FISDIT_CUDA_PROFILE=1 (report: op_profile_report in cuda_backend.h). Each op
// file opens an OpScope for the work it queues; with profiling on, the scope synchronizes the
// stream around it and adds its time to its op's row. Off, a scope costs one flag test.
#include <cuda_runtime.h>

#include <chrono>
#include <string>

namespace fisdit::cuda {

bool profiling();  // FISDIT_CUDA_PROFILE is set (read once)

class OpScope {
 public:
  OpScope(cudaStream_t s, const char* op);
  // `detail` (e.g. a GEMM shape) gets its own row; build it only when profiling().
  OpScope(cudaStream_t s, const char* op, const std::string& detail);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  void start();
  cudaStream_t stream_;
  std::string name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace fisdit::cuda
