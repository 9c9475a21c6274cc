#pragma once
// The flow-matching Euler schedule of the Wan 2.2 Lightning 4-step recipe and the A14B
// mixture-of-experts switch. The sampling loop (all solvers, CFG) is in sched/denoise.h.
#include <vector>

namespace fisdit::sched {

struct EulerSchedule {
  std::vector<float> sigmas;     // N + 1 values, the last 0
  std::vector<float> timesteps;  // N model timesteps, sigma * 1000
};

// t_k = linspace(1000, 0, N+1) (float32); u = t/1000; sigma = shift*u / (1 + (shift-1)*u).
EulerSchedule flow_euler_schedule(int steps, float shift);

// A step uses the high-noise expert while its timestep >= boundary * 1000.
bool use_high_noise_expert(float timestep, float boundary);

}  // namespace fisdit::sched
