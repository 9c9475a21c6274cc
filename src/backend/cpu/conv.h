#pragma once
// Convolution-family primitives of the video VAEs on host F32 video tensors laid out [T, H, W, C]
// (channels fastest): the CPU backend's VAE ops (backend.h) call these with arguments already
// checked by Backend (backend.cpp).
//
// conv3d is an im2col + GEMM over tiles of output pixels of one frame at a time, so the scratch
// memory stays bounded (a few MB) whatever the frame size; fp32 accumulation in the weight's k
// order, OpenMP over output channels and pixel tiles.
#include <cstdint>

#include "backend/backend.h"
#include "core/tensor.h"

namespace fisdit::cpu {

using fisdit::conv3d_output_shape;
using fisdit::Conv3dParams;

// out[t, i, j, co] = bias[co] + sum over (dt, dh, dw, ci) of
//   w[co, dt, dh, dw, ci] * x[t*st + dt, i*sh - pad_top + dh, j*sw - pad_left + dw, ci]
// (zero outside the frame). `out` must have conv3d_output_shape; bias may be null.
void conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
            Tensor& out);

// Nearest-neighbour 2x spatial upsampling of every frame: [T, H, W, C] -> [T, 2H, 2W, C]
// (for an exact factor 2 'nearest' and 'nearest-exact' pick the same source pixel).
void upsample_nearest2x(const Tensor& x, Tensor& out);

// The Wan VAE RMS_norm: over the channels of every pixel, x / max(||x||_2, 1e-12) * sqrt(C) *
// gamma[c] (F.normalize, not an RMS with eps), then SiLU when `silu`. x and out [..., C].
void channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out);

// Single-head attention over the pixels of each frame: q, k, v [T, H, W, C];
// out[t] = softmax(q_t k_t^T / sqrt(C)) v_t per frame t, same layout.
void frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);
// The same with every query seeing the pixels of its own and the earlier frames.
void causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);

// See Backend::avg_down3d / dup_up3d / space_to_channels2.
void avg_down3d(const Tensor& x, int ft, int fs, Tensor& out);
void dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out);
void space_to_channels2(const Tensor& x, Tensor& out, bool inverse);

}  // namespace fisdit::cpu
