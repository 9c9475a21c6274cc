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

// The own FP8 attention (attention_fp8.cu): Hopper wgmma on E4M3 q, k and a transposed v, for
// head_dim 128 on a GPU of compute capability 9.0 when built for sm_90a (supported() says so).
// The slots are those of the cuDNN call above (the kDescale{Q,K,V} scales, made before).
bool attention_fp8_own_supported(int64_t head_dim);
// The keys of the transposed v: lk rounded up to the kernel's tile of 128.
int64_t attention_fp8_own_vt_keys(int64_t lk);
// v bf16 [lk, heads, 128] less vmean, divided by *scale (a device float) and rounded to E4M3,
// into vt [heads, 128, attention_fp8_own_vt_keys(lk)], keys past lk zero and each group of 32
// keys ordered by fp8_attention_vt_key.
void launch_quantize_vt_e4m3(const void* v, const float* vmean, const float* scale, uint8_t* vt,
                             int64_t lk, int64_t heads, cudaStream_t s);
// out bf16 [lq, heads, 128] = softmax(q k^T / sqrt(128)) v + vmean from the codes q8, k8
// [tokens, heads, 128] and vt8 (launch_quantize_vt_e4m3). `poly_exp`: half of the softmax's
// exponentials by a polynomial on the FMA units and half on the special-function unit (all there
// otherwise). `warp_specialized`: the variant with a loading warpgroup (tensor-memory-accelerator
// copies) and two computing warpgroups taking turns; false when the driver cannot describe its
// tensors (nothing launched). `wide_tiles` (with warp_specialized): tiles of 224 keys instead of
// 128, every exponential on the special-function unit (poly_exp not used).
bool launch_attention_fp8_own(const uint8_t* q8, const uint8_t* k8, const uint8_t* vt8, void* out,
                              const float* vmean, const float* slots, int64_t lq, int64_t lk,
                              int64_t heads, bool poly_exp, bool warp_specialized, bool wide_tiles,
                              cudaStream_t s);

// The order of keys within each group of 32 in the transposed v. wgmma's fp32 accumulator of
// S = Q K^T gives a thread, for each row it holds, keys 8j + 2 quad and 8j + 2 quad + 1 (j = 0..3,
// quad = lane % 4) of a group; the E4M3 A fragment of P V takes from it four bytes at columns
// 4 quad .. 4 quad + 3 and four at 16 + 4 quad ... Column p = 16 half + 4 quad + i of the
// fragment is therefore key 16 half + 8 (i / 2) + 2 quad + i % 2, and v^T stores that key at
// position p: the accumulator becomes the A operand by rounding in place.
constexpr int fp8_attention_vt_key(int position) {
  const int half = position / 16, quad = (position % 16) / 4, i = position % 4;
  return 16 * half + 8 * (i / 2) + 2 * quad + i % 2;
}
constexpr int fp8_attention_vt_position(int key) {
  const int half = key / 16, r = key % 16;
  return 16 * half + 4 * ((r % 8) / 2) + 2 * (r / 8) + r % 2;
}

// Reference attention (fp32 online softmax, one block per query and head): the fallback when
// cuDNN does not take a shape. q/k/v/out bf16 [tokens, heads, head_dim], head_dim <= 256.
void launch_attention_naive(const void* q, const void* k, const void* v, void* out, int64_t lq,
                            int64_t lk, int64_t heads, int64_t head_dim, cudaStream_t s);

// Backend::causal_attention with the same kernel: k/v [len, kv_heads, head_dim] (heads a
// multiple of kv_heads), query i sees keys 0..i.
void launch_causal_attention(const void* q, const void* k, const void* v, void* out, int64_t len,
                             int64_t heads, int64_t kv_heads, int64_t head_dim, cudaStream_t s);

}  // namespace fisdit::cuda
