#include "analysis/redundancy.h"

#include <cmath>
#include <limits>

#include "fisdit/error.h"

namespace fisdit::analysis {

namespace {

struct Layout {
  int64_t frames, tokens_per_frame, channels;
};

Layout layout_of(const Tensor& hidden, int64_t frames) {
  if (hidden.dtype() != DType::F32) throw Error("analysis: hidden state must be F32 on the host");
  if (frames < 1) throw Error("analysis: need at least one frame");
  if (hidden.ndim() != 2 && hidden.ndim() != 3)
    throw Error("analysis: hidden state must be [tokens, C] or [T, tokens, C], got " +
                shape_str(hidden.shape()));
  const int64_t channels = hidden.dim(-1), tokens = hidden.numel() / std::max<int64_t>(channels, 1);
  if (channels < 1 || tokens % frames != 0)
    throw Error("analysis: hidden state " + shape_str(hidden.shape()) + " does not split into " +
                std::to_string(frames) + " frames");
  return {frames, tokens / frames, channels};
}

double ratio(double num, double den) {
  if (den > 0) return num / den;
  return num > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

}  // namespace

std::vector<std::vector<double>> token_norms(const Tensor& hidden, int64_t frames) {
  const Layout l = layout_of(hidden, frames);
  const float* p = hidden.f32();
  std::vector<std::vector<double>> m(static_cast<size_t>(l.frames),
                                     std::vector<double>(static_cast<size_t>(l.tokens_per_frame)));
  for (int64_t f = 0; f < l.frames; ++f)
    for (int64_t t = 0; t < l.tokens_per_frame; ++t) {
      const float* row = p + (f * l.tokens_per_frame + t) * l.channels;
      double sum = 0;
      for (int64_t c = 0; c < l.channels; ++c) sum += static_cast<double>(row[c]) * row[c];
      m[static_cast<size_t>(f)][static_cast<size_t>(t)] = std::sqrt(sum);
    }
  return m;
}

std::vector<double> adjacent_change(const Tensor& hidden, int64_t frames) {
  const std::vector<std::vector<double>> m = token_norms(hidden, frames);
  std::vector<double> r;
  for (size_t f = 0; f + 1 < m.size(); ++f) {
    double diff = 0, base = 0;
    for (size_t t = 0; t < m[f].size(); ++t) {
      const double d = m[f + 1][t] - m[f][t];
      diff += d * d;
      base += m[f][t] * m[f][t];
    }
    r.push_back(ratio(std::sqrt(diff), std::sqrt(base)));
  }
  return r;
}

double coefficient_of_variation(const std::vector<double>& values) {
  if (values.size() < 2) return 0.0;
  double mean = 0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  if (mean == 0 || !std::isfinite(mean)) return mean == 0 ? 0.0 : mean;
  double var = 0;
  for (double v : values) var += (v - mean) * (v - mean);
  var /= static_cast<double>(values.size());
  return std::sqrt(var) / mean;
}

std::vector<double> frame_relative_error(const Tensor& sparse, const Tensor& dense,
                                         int64_t frames) {
  if (sparse.shape() != dense.shape())
    throw Error("analysis: sparse output " + shape_str(sparse.shape()) + " and dense output " +
                shape_str(dense.shape()) + " differ in shape");
  const Layout l = layout_of(dense, frames);
  layout_of(sparse, frames);
  const int64_t per_frame = l.tokens_per_frame * l.channels;
  const float *ps = sparse.f32(), *pd = dense.f32();
  std::vector<double> err;
  for (int64_t f = 0; f < l.frames; ++f) {
    double diff = 0, base = 0;
    for (int64_t i = f * per_frame; i < (f + 1) * per_frame; ++i) {
      const double d = static_cast<double>(ps[i]) - pd[i];
      diff += d * d;
      base += static_cast<double>(pd[i]) * pd[i];
    }
    err.push_back(ratio(std::sqrt(diff), std::sqrt(base)));
  }
  return err;
}

}  // namespace fisdit::analysis
