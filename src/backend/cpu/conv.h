#pragma once
// Convolution-family primitives of the video VAEs on host F32 tensors laid out [C, T, H, W]
// (channels outermost, frames, then rows): the CPU backend's VAE ops (backend.h) call these with
// arguments already checked by Backend (backend.cpp).
//
// conv3d is an im2col + GEMM over tiles of output pixels of one frame at a time, so the scratch
// memory stays bounded (a few MB) whatever the frame size; fp32 accumulation, OpenMP over output
// channels and pixel tiles.
#include <cstdint>

#include "backend/backend.h"
#include "core/tensor.h"

namespace fisdit::cpu {

using fisdit::conv3d_output_shape;
using fisdit::Conv3dParams;

// out[co, t, i, j] = bias[co] + sum over (ci, dt, dh, dw) of
//   w[co, ci, dt, dh, dw] * x[ci, t*st + dt, i*sh - pad_top + dh, j*sw - pad_left + dw]
// (zero outside the frame). `out` must have conv3d_output_shape; bias may be null.
void conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
            Tensor& out);

// Nearest-neighbour 2x spatial upsampling of every frame: [C, T, H, W] -> [C, T, 2H, 2W]
// (for an exact factor 2 'nearest' and 'nearest-exact' pick the same source pixel).
void upsample_nearest2x(const Tensor& x, Tensor& out);

// The Wan VAE RMS_norm: over the channels of every pixel, x / max(||x||_2, 1e-12) * sqrt(C) *
// gamma[c] (F.normalize, not an RMS with eps), then SiLU when `silu`. x and out [C, N...].
void channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out);

// Single-head attention over the pixels of each frame: q, k, v [C, T, H, W] (channels first);
// out[:, t] = softmax(q_t^T k_t / sqrt(C)) v_t per frame t, same layout.
void frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);

// [C, T1, ...] and [C, T2, ...] -> [C, T1 + T2, ...] (either may have zero frames).
Tensor concat_frames(const Tensor& a, const Tensor& b);
// Frames [begin, end) of x [C, T, ...] as a new tensor.
Tensor slice_frames(const Tensor& x, int64_t begin, int64_t end);

// See Backend::avg_down3d / dup_up3d / space_to_channels2.
void avg_down3d(const Tensor& x, int ft, int fs, Tensor& out);
void dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out);
void space_to_channels2(const Tensor& x, Tensor& out, bool inverse);

}  // namespace fisdit::cpu
