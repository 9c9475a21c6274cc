#pragma once
// What the two modes of fisdit bench share: device timing, medians, device memory, and the VAE
// mode's entry (bench_vae.cpp) for the command (cmd_bench.cpp).
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cli.h"

namespace fisdit::cuda {
class EventTimer;
}

namespace fisdit::cli {

double median(std::vector<double> v);  // 0 for none
// Host milliseconds since `t0`.
double since_ms(std::chrono::steady_clock::time_point t0);

// Device timing: CUDA events on the backend's stream, else a host clock after synchronize().
class Timer {
 public:
  explicit Timer(Backend& backend);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  void start();
  double stop_ms();

 private:
  Backend& backend_;
  std::chrono::steady_clock::time_point t0_;
#ifdef FISDIT_WITH_CUDA
  std::unique_ptr<cuda::EventTimer> events_;  // on a CUDA backend
#endif
};

// Device memory in GiB; `known` is false on the CPU, which does not track it.
struct Memory {
  bool known = false;
  double in_use_gib = 0, peak_gib = 0;
};
Memory memory(const Backend& backend);
// "%.2f" of `gib`, or "-" when memory is not known.
std::string gib_text(bool known, double gib);

// The FISDIT_CUDA_PROFILE per-op report since the last call (CUDA builds; "" otherwise), and a
// reset: the next report counts from here.
std::string take_op_profile();

// fisdit bench --vae: a VAE decode (or encode) of a random input of the real size with random
// weights of the released VAE's shapes.
struct VaeBenchOptions {
  std::string vae;  // wan2.1, wan2.2 or hunyuan15
  bool encode = false;
  DeviceFlags device;  // --device, --vae-precision
  int width = 0, height = 0, frames = 0, warmup = 0, repeats = 0;
  std::optional<std::string> label;  // default "<vae>-vae-<op>"
};
void run_vae_bench(const VaeBenchOptions& options);

}  // namespace fisdit::cli
