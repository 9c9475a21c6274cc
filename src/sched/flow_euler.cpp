#include "sched/flow_euler.h"

#include "fisdit/error.h"

namespace fisdit::sched {

EulerSchedule flow_euler_schedule(int steps, float shift) {
  if (steps < 1) throw ParamError("steps", ": must be >= 1, got " + std::to_string(steps));
  if (!(shift > 0)) throw ParamError("shift", ": must be > 0");
  EulerSchedule s;
  for (int k = 0; k <= steps; ++k) {
    // linspace(1000, 0, N+1) in float32: the step is (end - start) / N.
    const float t =
        k == steps ? 0.0f : static_cast<float>(1000.0 - 1000.0 * k / static_cast<double>(steps));
    const float u = t / 1000.0f;
    const float sigma = shift * u / (1.0f + (shift - 1.0f) * u);
    s.sigmas.push_back(sigma);
    if (k < steps) s.timesteps.push_back(sigma * 1000.0f);
  }
  s.sigmas.back() = 0.0f;
  return s;
}

bool use_high_noise_expert(float timestep, float boundary) {
  return timestep >= boundary * 1000.0f;
}

}  // namespace fisdit::sched
