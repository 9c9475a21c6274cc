// The CUDA backend's norm ops next to their kernels (norm.cu): LayerNorm with the adaLN
// modulation, RMSNorm, Wan's 3D RoPE from a cached (cos, sin) table, and the fused q/k RMSNorm +
// RoPE (one read and one write of q or k) with the two separate ops as its fallback.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/norm.cuh"
#include "backend/cuda/profile.h"

namespace fisdit::cuda {

namespace {
// A LayerNorm's optional affine weight and bias: both or neither, on the GPU, of one dtype (F32
// when absent).
EType affine_type(const Tensor* weight, const Tensor* bias, const char* op) {
  require((weight == nullptr) == (bias == nullptr), op, "weight and bias come together");
  if (!weight) return EType::F32;
  require_device(*weight, op, "weight");
  require_device(*bias, op, "bias");
  require(bias->dtype() == weight->dtype(), op, "weight and bias dtypes differ");
  return etype(weight->dtype(), op, "weight");
}
}  // namespace

void CudaBackend::do_layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                float eps, Tensor& y, ModChunk shift, ModChunk scale) {
  const char* op = "layer_norm";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(y, op, "output");
  const int64_t rows = x.dim(0), d = x.dim(1);
  const EType wt = affine_type(weight, bias, op);
  launch_layer_norm(x.data_as<float>(), y.raw(), etype(y.dtype(), op, "output"), rows, d,
                    weight ? weight->raw() : nullptr, bias ? bias->raw() : nullptr, wt, eps,
                    mod_arg(shift, op), mod_arg(scale, op), stream());
}

Fp8Rows CudaBackend::do_layer_norm_fp8(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                       float eps, ModChunk shift, ModChunk scale) {
  const char* op = "layer_norm_fp8";
  require_device(x, op, "input");
  const int64_t rows = x.dim(0), d = x.dim(1);
  const EType wt = affine_type(weight, bias, op);
  Fp8Rows q{alloc_device(ctx_, {rows, d}, DType::F8_E4M3, op),
            alloc_device(ctx_, {rows}, DType::F32, op)};
  {
    OpScope scope(stream(), op, profiling() ? "K=" + std::to_string(d) : std::string());
    // The fused kernel rounds to bf16 first: it stands for layer_norm into BF16 activations.
    if (activation_dtype() == DType::BF16 &&
        launch_layer_norm_e4m3(x.data_as<float>(), q.codes.data_as<uint8_t>(),
                               q.scales.data_as<float>(), rows, d, weight ? weight->raw() : nullptr,
                               bias ? bias->raw() : nullptr, wt, eps, mod_arg(shift, op),
                               mod_arg(scale, op), stream()))
      return q;
  }
  return Backend::do_layer_norm_fp8(x, weight, bias, eps, shift, scale);  // wide rows: two ops
}

void CudaBackend::do_rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const char* op = "rms_norm";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(y, op, "output");
  require_device(weight, op, "weight");
  const int64_t rows = x.dim(0), d = x.dim(1);
  launch_rms_norm(x.raw(), etype(x.dtype(), op, "input"), y.raw(), etype(y.dtype(), op, "output"),
                  weight.raw(), etype(weight.dtype(), op, "weight"), rows, d, eps, stream());
}

const float* CudaBackend::rope_table(int64_t head_dim, const RopeGrid& grid, int positions) {
  const std::array<int, 3> parts = grid.pairs_for(head_dim);
  if (rope_table_.defined() && rope_head_dim_ == head_dim && positions <= rope_positions_ &&
      rope_pairs_ == parts && rope_theta_ == grid.theta)
    return rope_table_.data_as<float>();
  positions = std::max(positions, 256);
  const int64_t c = head_dim / 2;
  std::vector<double> freq;
  for (int p = 0; p < 3; ++p)
    for (int i = 0; i < parts[p]; ++i)
      freq.push_back(std::pow(grid.theta, -static_cast<double>(2 * i) / (2.0 * parts[p])));
  Tensor host = Tensor::zeros({positions, c, 2});
  float* t = host.f32();
  for (int pos = 0; pos < positions; ++pos)
    for (int64_t j = 0; j < c; ++j) {  // angles in float64, as the CPU reference
      const double a = pos * freq[static_cast<size_t>(j)];
      t[(pos * c + j) * 2] = static_cast<float>(std::cos(a));
      t[(pos * c + j) * 2 + 1] = static_cast<float>(std::sin(a));
    }
  // The old table stays: queued kernels and recorded graphs (Backend::capture) may read it.
  if (rope_table_.defined()) rope_tables_old_.push_back(rope_table_);
  rope_table_ = upload(host, DType::F32);
  rope_head_dim_ = head_dim;
  rope_positions_ = positions;
  rope_pairs_ = parts;
  rope_theta_ = grid.theta;
  return rope_table_.data_as<float>();
}

void CudaBackend::do_rope_3d(Tensor& x, const RopeGrid& grid) {
  const char* op = "rope_3d";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  const int64_t tokens = x.dim(0), heads = x.dim(1), d = x.dim(2);
  int max_pos = std::max(grid.height, grid.width);
  for (int32_t f : grid.frames) max_pos = std::max(max_pos, f + 1);
  const FrameList frames = frame_list(grid.frames, op);
  const float* table = rope_table(d, grid, max_pos);
  const std::array<int, 3> parts = grid.pairs_for(d);
  launch_rope_3d(x.raw(), etype(x.dtype(), op, "input"), tokens, heads, d, parts[0], parts[1],
                 frames, grid.height, grid.width, table, stream());
}

void CudaBackend::do_rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                                   const RopeGrid& grid) {
  const char* op = "rms_norm_rope";
  require_device(x, op, "input");
  require_device(weight, op, "weight");
  const int64_t tokens = x.dim(0), d = x.dim(1), head_dim = d / heads;
  int max_pos = std::max(grid.height, grid.width);
  for (int32_t f : grid.frames) max_pos = std::max(max_pos, f + 1);
  const float* table = rope_table(head_dim, grid, max_pos);
  const std::array<int, 3> parts = grid.pairs_for(head_dim);
  bool fused = false;
  {
    OpScope scope(stream(), op);
    const FrameList frames = frame_list(grid.frames, op);
    fused = launch_rms_norm_rope(x.raw(), etype(x.dtype(), op, "input"), weight.raw(),
                                 etype(weight.dtype(), op, "weight"), tokens, d, head_dim, parts[0],
                                 parts[1], eps, frames, grid.height, grid.width, table, stream());
  }
  if (!fused) Backend::do_rms_norm_rope(x, weight, eps, heads, grid);
}

}  // namespace fisdit::cuda
