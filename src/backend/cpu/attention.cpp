// The CPU backend's attention: exact softmax(q k^T / sqrt(d)) v per head and query, fp32 scores
// and double accumulation, the reference of cuDNN's fused attention.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::do_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  const float* pq = q.f32();
  const float* pk = k.f32();
  const float* pv = v.f32();
  float* po = out.f32();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(lk));
    std::vector<double> acc(static_cast<size_t>(d));
#pragma omp for collapse(2) schedule(static)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < lq; ++i) {
        const float* qi = pq + (i * heads + h) * d;
        float mx = -INFINITY;
        for (int64_t j = 0; j < lk; ++j) {
          const float* kj = pk + (j * heads + h) * d;
          float s = 0;
          for (int64_t c = 0; c < d; ++c) s += qi[c] * kj[c];
          s *= scale;
          scores[j] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (int64_t j = 0; j < lk; ++j) {
          scores[j] = std::exp(scores[j] - mx);
          sum += scores[j];
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < lk; ++j) {
          const float* vj = pv + (j * heads + h) * d;
          const double p = scores[j];
          for (int64_t c = 0; c < d; ++c) acc[c] += p * vj[c];
        }
        float* oi = po + (i * heads + h) * d;
        for (int64_t c = 0; c < d; ++c) oi[c] = static_cast<float>(acc[c] / sum);
      }
    }
  }
  flops_.attention += 4.0 * static_cast<double>(lq) * static_cast<double>(lk) *
                      static_cast<double>(heads) * static_cast<double>(d);
}

}  // namespace fisdit
