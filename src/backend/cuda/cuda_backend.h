#pragma once
// The CUDA backend (Hopper-first): cuBLASLt GEMMs, cuDNN attention, own fused kernels.
// bf16 weights and activations, fp32 residual stream, modulation and norm statistics.
#include <cstdint>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace fisdit {
// Throws fisdit::Error when no usable GPU is present.
std::unique_ptr<Backend> make_cuda_backend();
// The number of CUDA devices this process can use (0 when there is no driver or no GPU).
int cuda_device_count();
}  // namespace fisdit

namespace fisdit::cuda {

// Device memory of a CUDA backend's stream-ordered pool (tensors and library workspaces).
struct MemoryStats {
  size_t in_use = 0;    // bytes held by live allocations now
  size_t peak = 0;      // most bytes held at once since the last reset_peak_memory
  size_t reserved = 0;  // bytes the pool holds from the driver
  // Bytes recorded graphs hold for their own tensors (Backend::capture), now and at most since
  // the last reset; memory_in_use and memory_peak count them with the pool's.
  size_t graphs = 0, graphs_peak = 0;
  size_t device_total = 0;
};
// (Backend::memory_in_use / memory_peak / reset_memory_peak read and reset these.)

// With FISDIT_CUDA_PROFILE=1 every op synchronizes around itself and its time is summed per op
// (and per GEMM shape): a breakdown for performance work, not for timing runs. Returns the table
// since the last reset ("" when profiling is off).
std::string op_profile_report(bool reset);

// Times device work on the backend's stream with CUDA events.
class EventTimer {
 public:
  explicit EventTimer(Backend& backend);
  ~EventTimer();
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  void start();
  double stop_ms();  // waits for the stop event

 private:
  void* stream_;
  void* begin_;
  void* end_;
};

}  // namespace fisdit::cuda
