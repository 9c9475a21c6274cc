#pragma once
// The library calls of the video VAE ops (video_engine.cpp): cuDNN 3D convolutions and the cuBLAS
// GEMMs of the per-frame attention and of the LoRA merge (add_low_rank). A CudaBackend makes one
// on its first VAE op (cuda_internal.h). Video tensors are channels-last [T, H, W, C], F32 or
// BF16 (`bf16`), with fp32 accumulation.
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace fisdit::cuda {

class VideoEngine;
VideoEngine* make_video_engine(cudaStream_t stream);  // owned by the caller: destroy()
void destroy(VideoEngine* e);

// Environment of the video VAE ops:
// FISDIT_VAE_PRECISION: bf16 (the default) or fp32, the video dtype a CudaBackend starts with
// (Backend::video_dtype; set_video_dtype changes it later). Read when the backend is
// constructed: any other value makes the construction throw fisdit::Error naming the variable
// and the value.
DType vae_precision();
// FISDIT_VAE_TF32=0 turns TF32 tensor cores off for the F32 VAE convolutions (plain fp32 FMA).
// BF16 convolutions always run on the tensor cores (bf16 products, fp32 accumulation).
bool vae_tf32_enabled();
// FISDIT_VAE_CONV_LAYOUT: which layout cuDNN sees. auto (default: BF16 ndhwc; F32 per shape, the
// faster of the two as measured on the first call), ndhwc (the tensors as they are, channels
// padded to multiples of 8 where they are not) or ncdhw (channels-first copies of input and
// weight for cuDNN, output transposed back). FISDIT_VAE_CONV_LOG=1 prints each F32 shape's
// choice, and the API choice below.
enum class ConvLayout { Auto, Ncdhw, Ndhwc };
ConvLayout vae_conv_layout();
// FISDIT_VAE_CONV_API: which cuDNN API runs the convolution cuDNN sees (in the layout above).
// auto (default): per shape the faster of the legacy API's best algorithm
// (cudnnFindConvolutionForwardAlgorithmEx) and the best of the graph (backend) API's first
// engine configs, each measured on the shape's first call and kept in the tuning cache; the
// legacy API where the graph API has no engine for it, and the other way round. legacy: the
// legacy API only. graph: graph plans only; a shape without one throws fisdit::Error ("no cuDNN
// graph engine runs this convolution"). Read on every call; any other value throws naming the
// variable. FISDIT_VAE_CONV_LOG=1 prints each shape's times and choice.
enum class ConvApi { Auto, Legacy, Graph };
ConvApi vae_conv_api();

// out = conv(x, w) + bias as Backend::conv3d defines it, on device pointers.
struct Conv3dArgs {
  bool bf16 = false;  // x, w, y BF16 (else F32)
  const void* x = nullptr;
  std::array<int64_t, 4> xs{};  // [T, H, W, Cin]
  const void* w = nullptr;
  std::array<int64_t, 5> ws{};  // [Cout, kt, kh, kw, Cin]
  const float* bias = nullptr;  // [Cout] F32, or null
  void* y = nullptr;
  std::array<int64_t, 4> ys{};  // [To, Ho, Wo, Cout] (conv3d_output_shape)
  std::array<int, 3> stride{1, 1, 1};
  std::array<int, 4> pad{0, 0, 0, 0};  // top, bottom, left, right (zeros)
};
void conv3d_forward(VideoEngine& e, const Conv3dArgs& a, const std::string& ctx);

// q, k, v, out [t, n, c] (F32, or BF16 with `bf16`); each frame's queries attend that frame's
// pixels, or with `causal` the pixels of every frame up to theirs: softmax(q k^T / sqrt(c)) v.
// `scores` holds rows * keys floats (keys = n, causal: t * n), the query rows run in blocks of
// `rows`; `probs` rows * keys BF16 values for the BF16 probabilities (unused for F32, whose
// probabilities overwrite the scores).
void frame_attention_forward(VideoEngine& e, bool bf16, const void* q, const void* k, const void* v,
                             void* out, int64_t c, int64_t t, int64_t n, float* scores, void* probs,
                             int64_t rows, const std::string& ctx, bool causal);

// w [rows, cols] += scale * up [rows, rank] @ down [rank, cols], row-major F32, fp32 GEMM.
void low_rank_update(VideoEngine& e, float* w, const float* up, const float* down, int64_t rows,
                     int64_t cols, int64_t rank, float scale, const std::string& ctx);

}  // namespace fisdit::cuda
