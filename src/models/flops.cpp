#include "models/flops.h"

namespace fisdit::models {

RunFlops run_flops(const ModelInfo& info, int width, int height, int frames, int steps,
                   const accel::FisConfig& fis, int forwards_per_step) {
  const LatentGrid grid = info.latent_grid(width, height, frames);
  const accel::FisPlan plan(fis, info.num_blocks, steps, static_cast<int>(info.plan_frames(grid)));
  RunFlops r;
  const double dense = info.forward_flops(grid, nullptr, false, 1);
  for (int k = 0; k < steps; ++k) {
    const double planned = info.forward_flops(grid, &plan, plan.step_open(k), 1);
    r.dense += dense * forwards_per_step;
    r.planned += planned * forwards_per_step;
    r.per_step_planned.push_back(planned * forwards_per_step);
  }
  return r;
}

}  // namespace fisdit::models
