#pragma once
// Launchers of t5.cu: the umT5 ops' kernels.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

// umT5 attention: q, k, v, out [len, heads, hd] (q/k/v of type t); table F32 [buckets, heads];
// bucket_of [2 len - 1], key_valid [len] I32 on the device. Shared memory: len + hd floats.
void launch_attention_rel_bias(const void* q, const void* k, const void* v, EType t,
                               const float* table, const int32_t* bucket_of,
                               const int32_t* key_valid, void* out, EType ot, int64_t len,
                               int64_t heads, int64_t hd, cudaStream_t s);
void launch_mul(void* x, EType xt, const void* y, EType yt, int64_t n, cudaStream_t s);

}  // namespace fisdit::cuda
