#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const char* op = "attention";
  cpu::require(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, op,
               "expects [tokens, heads, head_dim] tensors");
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  cpu::require(k.dim(1) == heads && k.dim(2) == d && v.shape() == k.shape(), op,
               "q " + shape_str(q.shape()) + ", k " + shape_str(k.shape()) + ", v " +
                   shape_str(v.shape()) + " do not agree");
  cpu::require(out.shape() == q.shape(), op, "output shape must equal q's");
  cpu::require(lk > 0, op, "no keys");
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
