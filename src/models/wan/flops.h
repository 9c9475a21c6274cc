#pragma once
// Analytic matrix-multiply FLOPs (2 per multiply-add) of the Wan DiT, counting exactly the
// products the engine runs: every linear layer and both attention products. Elementwise work
// (norms, RoPE, modulation) is not counted, as in the paper's FLOPs figures. A whole run:
// models/flops.h over the model's ModelInfo.
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

// One block on `tokens` query tokens (a sparse block: the anchor tokens), without the
// cross-attention keys and values of the text (text_kv_flops).
double block_flops(const WanConfig& cfg, double tokens, double* attention = nullptr);
// One forward over grid (f, h, w) tokens with `timestep_rows` distinct timesteps, blocks as
// `plan` says for a step with gate `step_open` (dense without a plan).
ForwardFlops forward_flops(const WanConfig& cfg, int64_t grid_f, int64_t grid_h, int64_t grid_w,
                           const accel::FisPlan* plan, bool step_open, int64_t timestep_rows = 1);
// The text embedding of one prompt (padded to text_len), run once per prompt and expert.
double text_embedding_flops(const WanConfig& cfg);
// Every block's cross-attention keys and values of that embedding: once per prompt and expert
// beside it (WanDiT::embed_text of a TextContext), or in every forward where the DiT does not
// keep them (the Tensor forward, streamed blocks, a --gpu-memory-limit run).
double text_kv_flops(const WanConfig& cfg);

}  // namespace fisdit::wan
