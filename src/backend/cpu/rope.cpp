// The CPU backend's 3D RoPE, in float64 as the official code computes its angles.
#include <cmath>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

// 3D RoPE (Wan: wan/modules/model.py rope_params/rope_apply; HunyuanVideo 1.5: posemb_layers.py
// get_nd_rotary_pos_embed): head_dim d has c = d/2 adjacent channel pairs, split over the frame,
// row and column axes as grid.pairs_for(d) says. Each part has its own frequency base over its
// own width w = 2 * pairs: freq_j = theta^(-2j / w). Angles in float64 (Wan's official code
// computes them so; HunyuanVideo's fp32 angles differ from these by ~1e-6).
void CpuBackend::do_rope_3d(Tensor& x, const RopeGrid& grid) {
  const int64_t tokens = x.dim(0), heads = x.dim(1), d = x.dim(2);
  const int64_t c = d / 2;
  const std::array<int, 3> parts = grid.pairs_for(d);
  std::vector<double> freq(static_cast<size_t>(c));
  std::vector<int> part_of(static_cast<size_t>(c));
  for (int64_t p = 0, j = 0; p < 3; ++p) {
    for (int64_t i = 0; i < parts[p]; ++i, ++j) {
      freq[j] = std::pow(grid.theta, -static_cast<double>(2 * i) / (2.0 * parts[p]));
      part_of[j] = static_cast<int>(p);
    }
  }
  const int64_t per_frame = static_cast<int64_t>(grid.height) * grid.width;
  float* px = x.f32();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t in_frame = t % per_frame;
    const double pos[3] = {static_cast<double>(grid.frames[t / per_frame]),
                           static_cast<double>(in_frame / grid.width),
                           static_cast<double>(in_frame % grid.width)};
    for (int64_t j = 0; j < c; ++j) {
      const double angle = pos[part_of[j]] * freq[j];
      const double cs = std::cos(angle), sn = std::sin(angle);
      for (int64_t h = 0; h < heads; ++h) {
        float* pair = px + (t * heads + h) * d + 2 * j;
        const double re = pair[0], im = pair[1];
        pair[0] = static_cast<float>(re * cs - im * sn);
        pair[1] = static_cast<float>(re * sn + im * cs);
      }
    }
  }
}

}  // namespace fisdit
