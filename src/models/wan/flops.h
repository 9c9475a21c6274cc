#pragma once
// Analytic matrix-multiply FLOPs (2 per multiply-add) of the Wan DiT, counting exactly the
// products the engine runs: every linear layer and both attention products. Elementwise work
// (norms, RoPE, modulation) is not counted, as in the paper's FLOPs figures.
#include "accel/fis.h"
#include "models/wan/config.h"

namespace fisdit::wan {

struct ForwardFlops {
  double embeddings = 0;  // patch embedding, time embedding/projection (per forward)
  double blocks = 0;
  double head = 0;
  double attention = 0;  // part of blocks: QK^T and PV products
  double total() const { return embeddings + blocks + head; }
};

// One block on `tokens` query tokens (a sparse block: the anchor tokens).
double block_flops(const WanConfig& cfg, double tokens, double* attention = nullptr);
// One forward over grid (f, h, w) tokens with `timestep_rows` distinct timesteps, blocks as
// `plan` says for a step with gate `step_open` (dense without a plan).
ForwardFlops forward_flops(const WanConfig& cfg, int64_t grid_f, int64_t grid_h, int64_t grid_w,
                           const accel::FisPlan* plan, bool step_open, int64_t timestep_rows = 1);
// The text embedding of one prompt (padded to text_len), run once per prompt and expert.
double text_embedding_flops(const WanConfig& cfg);

struct RunFlops {
  double dense = 0;    // the denoising loop without FIS
  double planned = 0;  // with the given FIS plan
  std::vector<double> per_step_planned;
};
// A denoising run of `steps` steps at video size (width x height, frames), `forwards_per_step`
// DiT runs per step (2 with classifier-free guidance). DiT forwards only.
RunFlops run_flops(const WanConfig& cfg, int video_width, int video_height, int video_frames,
                   int steps, const accel::FisConfig& fis, int forwards_per_step = 1);

}  // namespace fisdit::wan
