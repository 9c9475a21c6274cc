#pragma once
// Flow-matching Euler sampling with a shifted schedule, as the Wan 2.2 Lightning 4-step recipe
// uses it, plus the A14B mixture-of-experts switch and classifier-free guidance.
#include <functional>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "models/wan/dit.h"

namespace fisdit::sched {

struct EulerSchedule {
  std::vector<float> sigmas;     // N + 1 values, the last 0
  std::vector<float> timesteps;  // N model timesteps, sigma * 1000
};

// t_k = linspace(1000, 0, N+1) (float32); u = t/1000; sigma = shift*u / (1 + (shift-1)*u).
EulerSchedule flow_euler_schedule(int steps, float shift);

// A step uses the high-noise expert while its timestep >= boundary * 1000.
bool use_high_noise_expert(float timestep, float boundary);

struct DenoiseInputs {
  Tensor x;            // host noise [C, F, H, W]
  Tensor context;      // host [L, text_dim]
  Tensor context_neg;  // host, optional (needed when guidance != 1)
  Tensor y;            // host, i2v conditioning [C_y, F, H, W], optional
};

struct DenoiseOptions {
  int steps = 4;
  float shift = 5.0f;
  float guidance = 1.0f;
  float boundary = 0.875f;
  accel::FisConfig fis;
};

struct StepInfo {
  int step = 0, steps = 0;
  float timestep = 0, sigma = 0, sigma_next = 0;
  bool high_noise_expert = true;
  bool fis_step_open = false;
  double seconds = 0;
};
using StepCallback = std::function<void(const StepInfo&)>;

// The sampling loop. `low` may be null (one model for every step). Returns the final latent on
// the host. With guidance g != 1: v = uncond + g * (cond - uncond), both sharing one FIS plan.
Tensor denoise(wan::WanDiT& high, wan::WanDiT* low, const DenoiseInputs& in,
               const DenoiseOptions& opt, const StepCallback& on_step = {});

}  // namespace fisdit::sched
