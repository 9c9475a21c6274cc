#pragma once
// The library calls of the video VAE ops (video_engine.cpp): cuDNN 3D convolutions and the cuBLAS
// GEMMs of the per-frame attention and of the LoRA merge (add_low_rank). A CudaBackend makes one
// on its first VAE op (cuda_internal.h).
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <string>

namespace fisdit::cuda {

class VideoEngine;
VideoEngine* make_video_engine(cudaStream_t stream);  // owned by the caller: destroy()
void destroy(VideoEngine* e);

// FISDIT_VAE_TF32=0 turns TF32 tensor cores off for the VAE convolutions (plain fp32 FMA).
bool vae_tf32_enabled();
// FISDIT_VAE_CONV_LAYOUT: auto (default: per shape, the faster of the two as measured on the first
// call), ncdhw (cuDNN on the tensors as they are) or ndhwc (channels-last copies of input and
// weight for cuDNN, output transposed back). FISDIT_VAE_CONV_LOG=1 prints each shape's choice.
enum class ConvLayout { Auto, Ncdhw, Ndhwc };
ConvLayout vae_conv_layout();

// y = conv(x, w) without bias; x [C, T, H, W], w [Cout, Cin, kt, kh, kw], symmetric spatial
// padding, all F32.
void conv3d_forward(VideoEngine& e, const float* x, const std::array<int64_t, 4>& xs,
                    const float* w, const std::array<int64_t, 5>& ws, float* y,
                    const std::array<int64_t, 4>& ys, const std::array<int, 3>& stride, int pad_h,
                    int pad_w, const std::string& ctx);
// q, k, v, out [c, t, n]; `scores` holds rows * n floats (causal: rows * t * n). Each frame's
// queries attend that frame's pixels, or with `causal` the pixels of every frame up to theirs.
void frame_attention_forward(VideoEngine& e, const float* q, const float* k, const float* v,
                             float* out, int64_t c, int64_t t, int64_t n, float* scores,
                             int64_t rows, const std::string& ctx, bool causal = false);

// w [rows, cols] += scale * up [rows, rank] @ down [rank, cols], row-major F32, fp32 GEMM.
void low_rank_update(VideoEngine& e, float* w, const float* up, const float* down, int64_t rows,
                     int64_t cols, int64_t rank, float scale, const std::string& ctx);

}  // namespace fisdit::cuda
