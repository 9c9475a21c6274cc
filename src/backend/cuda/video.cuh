#pragma once
// Launchers of video.cu: the kernels of the video VAE ops on F32 [C, T, H, W] tensors, and the
// transpose / row softmax that video_engine.cpp runs between its library calls.
#include <cuda_runtime.h>

#include <cstdint>

namespace fisdit::cuda {

void launch_channel_bias(float* y, const float* bias, int64_t c, int64_t inner, cudaStream_t s);
void launch_channel_rms_norm(const float* x, const float* gamma, float* y, int64_t c, int64_t n,
                             bool silu, cudaStream_t s);
void launch_upsample_nearest2x(const float* x, float* y, int64_t planes, int64_t h, int64_t w,
                               cudaStream_t s);
void launch_pad_spatial(const float* x, float* y, int64_t planes, int64_t h, int64_t w, int top,
                        int bottom, int left, int right, cudaStream_t s);
void launch_avg_down3d(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                       int64_t out_c, int ft, int fs, cudaStream_t s);
void launch_dup_up3d(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                     int64_t out_c, int ft, int fs, int skip, cudaStream_t s);
// Index space of the small side [4C, T, H, W] (c, h, w of the small side).
void launch_space_to_channels2(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                               bool inverse, cudaStream_t s);
// HunyuanVideo 1.5 VAE: replicate padding of [c, t, h, w] to [c, t + front, h + 2 side, ...].
void launch_pad_replicate(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                          int front, int side, cudaStream_t s);
// "c (t r1) (h r2) (w r3) <-> (r1 r2 r3 c) t h w"; c, t, h, w of the small side's grid and the
// big side's channels.
void launch_space_to_channels(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                              int rt, bool inverse, cudaStream_t s);
void launch_channel_group_mean(const float* x, float* y, int64_t c, int64_t n, int groups,
                               cudaStream_t s);
void launch_channel_repeat(const float* x, float* y, int64_t c, int64_t n, int repeats,
                           cudaStream_t s);
// out[b, c, r] = in[b, r, c] for in [batch, rows, cols] (F32).
void launch_transpose(const float* in, float* out, int64_t batch, int64_t rows, int64_t cols,
                      cudaStream_t s);
// In place: every row of `cols` logits becomes softmax(scale * row).
void launch_softmax_rows(float* scores, int64_t rows, int64_t cols, float scale, cudaStream_t s);

}  // namespace fisdit::cuda
