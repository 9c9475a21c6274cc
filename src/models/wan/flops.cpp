#include "models/wan/flops.h"

namespace fisdit::wan {

double block_flops(const WanConfig& cfg, double n, double* attention) {
  const double d = cfg.dim, f = cfg.ffn_dim, lt = cfg.text_len;
  const double attn = 4.0 * n * n * d + 4.0 * n * lt * d;  // self + cross: QK^T and PV
  const double linear = 8.0 * n * d * d                    // self q, k, v, o
                        + 4.0 * n * d * d   // cross q, o (k, v of the text: text_kv_flops)
                        + 4.0 * n * d * f;  // FFN
  if (attention) *attention += attn;
  return attn + linear;
}

ForwardFlops forward_flops(const WanConfig& cfg, int64_t gf, int64_t gh, int64_t gw,
                           const accel::FisPlan* plan, bool step_open, int64_t timestep_rows) {
  const double d = cfg.dim, tokens = static_cast<double>(gf * gh * gw);
  const double per_frame = static_cast<double>(gh * gw), rows = static_cast<double>(timestep_rows);
  const auto& p = cfg.patch_size;
  const double patch = static_cast<double>(p[0]) * p[1] * p[2];
  ForwardFlops out;
  out.embeddings = 2.0 * tokens * cfg.in_dim * patch * d +
                   rows * (2.0 * cfg.freq_dim * d + 2.0 * d * d + 2.0 * d * 6.0 * d);
  for (int l = 0; l < cfg.num_layers; ++l) {
    double n = tokens;
    if (plan) {
      const accel::BlockPlan bp = plan->plan_for(step_open, l);
      if (bp.sparse) n = static_cast<double>(bp.anchors.size()) * per_frame;
    }
    out.blocks += block_flops(cfg, n, &out.attention);
  }
  out.head = 2.0 * tokens * d * patch * cfg.out_dim;
  return out;
}

double text_embedding_flops(const WanConfig& cfg) {
  return 2.0 * cfg.text_len * cfg.text_dim * cfg.dim + 2.0 * cfg.text_len * cfg.dim * cfg.dim;
}

double text_kv_flops(const WanConfig& cfg) {
  return cfg.num_layers * 4.0 * cfg.text_len * cfg.dim * cfg.dim;
}

}  // namespace fisdit::wan
