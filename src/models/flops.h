#pragma once
// Analytic DiT FLOPs of a sampling run, from a model's per-forward count (ModelInfo::
// forward_flops): dense and with an FIS plan, per step. DiT forwards only.
#include <vector>

#include "accel/fis.h"
#include "models/model.h"

namespace fisdit::models {

struct RunFlops {
  double dense = 0;    // the denoising loop without FIS
  double planned = 0;  // with the given FIS plan
  std::vector<double> per_step_planned;
};

// `steps` steps at video size (width x height, frames), `forwards_per_step` DiT runs per step
// (2 with classifier-free guidance). Throws ParamError (frames, size) when the video does not fit.
RunFlops run_flops(const ModelInfo& info, int width, int height, int frames, int steps,
                   const accel::FisConfig& fis, int forwards_per_step = 1);

}  // namespace fisdit::models
