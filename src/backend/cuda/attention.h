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

// Reference attention (fp32 online softmax, one block per query and head): the fallback when
// cuDNN does not take a shape. q/k/v/out bf16 [tokens, heads, head_dim], head_dim <= 256.
void launch_attention_naive(const void* q, const void* k, const void* v, void* out, int64_t lq,
                            int64_t lk, int64_t heads, int64_t head_dim, cudaStream_t s);

}  // namespace fisdit::cuda
