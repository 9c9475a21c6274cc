#pragma once
// The attention of Backend::attention: cuDNN's fused flash attention (attention.cpp), and the
// reference kernel it falls back to when cuDNN declines a shape (attention.cu). A CudaBackend owns
// one engine (cuda_internal.h); bench/sdpa builds attention.cpp on its own against this header.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace fisdit::cuda {

class AttentionEngine;
AttentionEngine* make_attention_engine(cudaStream_t stream);  // owned by the caller: destroy()
void destroy(AttentionEngine* e);

// q/k/v/out bf16 [tokens, heads, head_dim]; false when cuDNN cannot run the shape (the caller
// falls back).
bool attention_cudnn(AttentionEngine& e, const void* q, const void* k, const void* v, void* out,
                     int64_t lq, int64_t lk, int64_t heads, int64_t head_dim,
                     const std::string& ctx);

// FP8 attention (Backend::attention_fp8). The scalars live on the device, one float per 16-byte
// slot (cuDNN takes 16-byte aligned tensors), made by the kernels of elementwise.cuh before the
// call: the per-tensor scales of q, k and v (amax / 448, as the host), the probabilities' scale
// (448: P in [0, 1] fills E4M3's range) and its inverse, the output's scale and, after the call,
// the amaxes cuDNN reports.
enum Fp8AttnSlot : int {
  kDescaleQ,
  kDescaleK,
  kDescaleV,
  kDescaleS,
  kScaleS,
  kScaleO,
  kDescaleO,
  kAmaxS,
  kAmaxO,
  kAmaxQ,
  kAmaxK,
  kAmaxV,
  kFp8AttnSlots
};
constexpr int kFp8AttnSlotFloats = 4;  // 16 bytes

// Whether cuDNN runs the fp8 graph (bf16 or fp8 output) at this shape: the plan is built and
// cached here, before any input is quantized.
bool attention_cudnn_fp8_ready(AttentionEngine& e, bool fp8_out, int64_t lq, int64_t lk,
                               int64_t heads, int64_t head_dim);
// q8/k8/v8 E4M3 codes [tokens, heads, head_dim]; out bf16 (fp8_out false) or E4M3 codes scaled by
// slot kScaleO (fp8_out true: the caller widens them with kDescaleO); false when cuDNN cannot run
// the graph (the caller falls back).
bool attention_cudnn_fp8(AttentionEngine& e, const void* q8, const void* k8, const void* v8,
                         void* out, bool fp8_out, float* slots, int64_t lq, int64_t lk,
                         int64_t heads, int64_t head_dim, const std::string& ctx);

// Reference attention (fp32 online softmax, one block per query and head): the fallback when
// cuDNN does not take a shape. q/k/v/out bf16 [tokens, heads, head_dim], head_dim <= 256.
void launch_attention_naive(const void* q, const void* k, const void* v, void* out, int64_t lq,
                            int64_t lk, int64_t heads, int64_t head_dim, cudaStream_t s);

// Backend::causal_attention with the same kernel: k/v [len, kv_heads, head_dim] (heads a
// multiple of kv_heads), query i sees keys 0..i.
void launch_causal_attention(const void* q, const void* k, const void* v, void* out, int64_t len,
                             int64_t heads, int64_t kv_heads, int64_t head_dim, cudaStream_t s);

}  // namespace fisdit::cuda
