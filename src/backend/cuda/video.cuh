#pragma once
// Launchers of video.cu: the kernels of the video VAE ops on channels-last [T, H, W, C] tensors
// of dtype `t` (F32 or BF16; fp32 math, results rounded to nearest once), and the transpose,
// padding, channel slice and row softmax that video_engine.cpp runs between its library calls.
// "pixels" counts the T H W positions of a tensor (all its dims but the channels).
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

// y[p, c] += bias[c] in place (bias F32).
void launch_channel_bias(void* y, EType t, const float* bias, int64_t pixels, int64_t c,
                         cudaStream_t s);
// dst[p * dst_pitch + c] = src[p * src_pitch + c] (+ bias[c] when not null) for c < channels
// (pitches in elements; src and dst point at their first channel).
void launch_take_channels(const void* src, int64_t src_pitch, void* dst, int64_t dst_pitch, EType t,
                          int64_t pixels, int64_t channels, const float* bias, cudaStream_t s);
// y[p, :] = x[p, :] / max(||x[p, :]||, 1e-12) * sqrt(c) * gamma (then SiLU); gamma F32.
void launch_channel_rms_norm(const void* x, EType t, const float* gamma, void* y, int64_t pixels,
                             int64_t c, bool silu, cudaStream_t s);
// [frames, h, w, c] -> [frames, 2h, 2w, c].
void launch_upsample_nearest2x(const void* x, void* y, EType t, int64_t frames, int64_t h,
                               int64_t w, int64_t c, cudaStream_t s);
// y [ys] from x [xs] (both [T, H, W, C], ys >= xs in T and C) placed at frame 0, row `top`,
// column `left`, channel 0; zeros elsewhere.
void launch_pad_zero(const void* x, void* y, EType t, const std::array<int64_t, 4>& xs,
                     const std::array<int64_t, 4>& ys, int top, int left, cudaStream_t s);
// Wan 2.2 AvgDown3D / DupUp3D (Backend::avg_down3d / dup_up3d); frames, h, w, c of x.
void launch_avg_down3d(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                       int64_t c, int64_t out_c, int ft, int fs, cudaStream_t s);
void launch_dup_up3d(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                     int64_t c, int64_t out_c, int ft, int fs, int skip, cudaStream_t s);
// Small side [frames, h, w, 4c] <-> big side [frames, 2h, 2w, c] (Backend::space_to_channels2);
// frames, h, w of the small side, c of the big side.
void launch_space_to_channels2(const void* x, void* y, EType t, int64_t frames, int64_t h,
                               int64_t w, int64_t c, bool inverse, cudaStream_t s);
// HunyuanVideo 1.5 VAE: replicate padding of [frames, h, w, c] to
// [frames + front, h + 2 side, w + 2 side, c].
void launch_pad_replicate(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                          int64_t c, int front, int side, cudaStream_t s);
// "c (t r1) (h r2) (w r3) <-> (r1 r2 r3 c) t h w" channels-last: small [frames, h, w, 4 rt c] <->
// big [frames rt, 2h, 2w, c]; frames, h, w of the small side, c of the big side.
void launch_space_to_channels(const void* x, void* y, EType t, int64_t frames, int64_t h, int64_t w,
                              int64_t c, int rt, bool inverse, cudaStream_t s);
// [pixels, c groups] -> [pixels, c]: the mean of each run of `groups` channels.
void launch_channel_group_mean(const void* x, void* y, EType t, int64_t pixels, int64_t c,
                               int groups, cudaStream_t s);
// [pixels, c] -> [pixels, c repeats]: every channel `repeats` times in a row.
void launch_channel_repeat(const void* x, void* y, EType t, int64_t pixels, int64_t c, int repeats,
                           cudaStream_t s);
// out[b, c, r] = in[b, r, c] for in [batch, rows, cols].
void launch_transpose(const void* in, void* out, EType t, int64_t batch, int64_t rows, int64_t cols,
                      cudaStream_t s);
// probs[r, :] = softmax(scale * scores[r, :]) for rows of `cols` fp32 logits, written as `t`
// (F32 probs may be the scores themselves: in place).
void launch_softmax_rows(const float* scores, void* probs, EType t, int64_t rows, int64_t cols,
                         float scale, cudaStream_t s);

}  // namespace fisdit::cuda
