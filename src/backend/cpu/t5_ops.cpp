// The CPU backend's umT5 ops: attention with relative position bias and key mask, and the
// elementwise product of the gated FFN (fp32).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/cpu/cpu_backend.h"

namespace fisdit {

// T5Attention.forward for one sequence: logits q.k (no 1/sqrt(head_dim) scaling) plus the
// relative position bias of bucket(j - i); masked keys get float's lowest value as
// masked_fill(finfo.min) gives them; softmax over keys in fp32; out = p.v.
// q, k, v, out: [L, heads, head_dim]; table: [num_buckets, heads]; bucket_of[(j - i) + L - 1].
void CpuBackend::do_attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& table, const std::vector<int32_t>& bucket_of,
                                       const std::vector<uint8_t>& key_valid, Tensor& out) {
  const int64_t len = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  const float* pq = q.f32();
  const float* pk = k.f32();
  const float* pv = v.f32();
  const float* pt = table.f32();
  float* po = out.f32();
  const float masked = std::numeric_limits<float>::lowest();  // torch.finfo(float32).min
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(len));
    std::vector<double> acc(static_cast<size_t>(hd));
#pragma omp for collapse(2) schedule(static)
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < len; ++i) {
        const float* qi = pq + (i * heads + h) * hd;
        float mx = -INFINITY;
        for (int64_t j = 0; j < len; ++j) {
          const float* kj = pk + (j * heads + h) * hd;
          float s = 0;
          for (int64_t c = 0; c < hd; ++c) s += qi[c] * kj[c];
          const float bias =
              key_valid[static_cast<size_t>(j)]
                  ? pt[static_cast<int64_t>(bucket_of[static_cast<size_t>(j - i + len - 1)]) *
                           heads +
                       h]
                  : masked;
          s += bias;
          scores[static_cast<size_t>(j)] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (int64_t j = 0; j < len; ++j) {
          const float p = std::exp(scores[static_cast<size_t>(j)] - mx);
          scores[static_cast<size_t>(j)] = p;
          sum += p;
        }
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < len; ++j) {
          const double p = scores[static_cast<size_t>(j)];
          if (p == 0) continue;
          const float* vj = pv + (j * heads + h) * hd;
          for (int64_t c = 0; c < hd; ++c) acc[static_cast<size_t>(c)] += p * vj[c];
        }
        float* oi = po + (i * heads + h) * hd;
        for (int64_t c = 0; c < hd; ++c)
          oi[c] = static_cast<float>(acc[static_cast<size_t>(c)] / sum);
      }
    }
  }
}

void CpuBackend::do_mul(Tensor& x, const Tensor& y) {
  float* px = x.f32();
  const float* py = y.f32();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) px[i] *= py[i];
}

}  // namespace fisdit
