// The CPU backend's attention: exact softmax(q k^T / sqrt(d)) v per head and query, fp32 scores
// and double accumulation, the reference of cuDNN's fused attention.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

namespace {
// One query against `keys` keys: softmax(q k^T * scale) v with fp32 dot products and exp, the
// weighted sum of values in fp64. Key/value row j of this head starts at k + j * stride.
void attend(const float* q, const float* k, const float* v, int64_t keys, int64_t stride, int64_t d,
            float scale, std::vector<float>& scores, std::vector<double>& acc, float* out) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < keys; ++j) {
    const float* kj = k + j * stride;
    float s = 0;
    for (int64_t c = 0; c < d; ++c) s += q[c] * kj[c];
    s *= scale;
    scores[j] = s;
    mx = std::max(mx, s);
  }
  double sum = 0;
  for (int64_t j = 0; j < keys; ++j) {
    scores[j] = std::exp(scores[j] - mx);
    sum += scores[j];
  }
  std::fill(acc.begin(), acc.end(), 0.0);
  for (int64_t j = 0; j < keys; ++j) {
    const float* vj = v + j * stride;
    const double p = scores[j];
    for (int64_t c = 0; c < d; ++c) acc[c] += p * vj[c];
  }
  for (int64_t c = 0; c < d; ++c) out[c] = static_cast<float>(acc[c] / sum);
}
}  // namespace

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
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < lq; ++i)
        attend(pq + (i * heads + h) * d, pk + h * d, pv + h * d, lk, heads * d, d, scale, scores,
               acc, po + (i * heads + h) * d);
  }
  flops_.attention += 4.0 * static_cast<double>(lq) * static_cast<double>(lk) *
                      static_cast<double>(heads) * static_cast<double>(d);
}

// Qwen2.5's attention as the reference: for query i of head h, the keys 0..i of key/value head
// h / (H / Hkv), with the arithmetic of do_attention.
void CpuBackend::do_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                     Tensor& out) {
  const int64_t len = q.dim(0), heads = q.dim(1), d = q.dim(2), kv_heads = k.dim(1);
  const int64_t group = heads / kv_heads;
  const float* pq = q.f32();
  const float* pk = k.f32();
  const float* pv = v.f32();
  float* po = out.f32();
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(len));
    std::vector<double> acc(static_cast<size_t>(d));
#pragma omp for collapse(2) schedule(dynamic, 16)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < len; ++i)
        attend(pq + (i * heads + h) * d, pk + (h / group) * d, pv + (h / group) * d, i + 1,
               kv_heads * d, d, scale, scores, acc, po + (i * heads + h) * d);
  }
  // The causal half of the products: sum over i of (i + 1) keys.
  flops_.attention += 4.0 * static_cast<double>(len) * static_cast<double>(len + 1) / 2.0 *
                      static_cast<double>(heads) * static_cast<double>(d);
}

}  // namespace fisdit
