// The CPU backend's video VAE ops on [T, H, W, C] F32 tensors: thin wrappers of
// backend/cpu/conv.h (fp32 reference); their arguments are checked by Backend (backend.cpp).
#include <cstring>

#include "backend/cpu/conv.h"
#include "backend/cpu/cpu_backend.h"
#include "core/layout.h"

namespace fisdit {

void CpuBackend::do_conv3d(const Tensor& x, const Tensor& w, const Tensor* bias,
                           const Conv3dParams& p, Tensor& out) {
  cpu::conv3d(x, w, bias, p, out);
}

void CpuBackend::do_channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) {
  cpu::channel_rms_norm(x, gamma, silu, out);
}

void CpuBackend::do_upsample_nearest2x(const Tensor& x, Tensor& out) {
  cpu::upsample_nearest2x(x, out);
}

void CpuBackend::do_frame_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    Tensor& out) {
  cpu::frame_attention(q, k, v, out);
}

void CpuBackend::do_copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst,
                                int64_t dst_c, int64_t dst_f, int64_t channels, int64_t frames) {
  const int64_t cs = src.dim(-1), cd = dst.dim(-1);
  const int64_t pixels = src.dim(0) ? src.numel() / (src.dim(0) * cs) : 0;  // per frame
  if (!pixels || !channels || !frames) return;
  const float* ps = src.f32() + src_f * pixels * cs + src_c;
  float* pd = dst.f32() + dst_f * pixels * cd + dst_c;
  if (channels == cs && cs == cd) {  // whole frames: one block
    std::memcpy(pd, ps, static_cast<size_t>(frames * pixels * cs) * sizeof(float));
    return;
  }
#pragma omp parallel for schedule(static) if (frames * pixels * channels > (int64_t{1} << 20))
  for (int64_t i = 0; i < frames * pixels; ++i)
    std::memcpy(pd + i * cd, ps + i * cs, static_cast<size_t>(channels) * sizeof(float));
}

void CpuBackend::do_batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols,
                                    Tensor& out) {
  transpose_batched(x.f32(), out.f32(), batch, rows, cols);
}

void CpuBackend::do_fill_zero(Tensor& x) {
  if (x.numel()) std::memset(x.f32(), 0, x.nbytes());
}

void CpuBackend::do_avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  cpu::avg_down3d(x, ft, fs, out);
}

void CpuBackend::do_dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  cpu::dup_up3d(x, ft, fs, skip, out);
}

void CpuBackend::do_space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  cpu::space_to_channels2(x, out, inverse);
}

}  // namespace fisdit
