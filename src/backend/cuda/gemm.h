#pragma once
// The cuBLASLt engine of Backend::linear (gemm.cpp): bf16 GEMMs with fused bias / GELU epilogues,
// descriptors and algorithms cached per shape. A CudaBackend owns one (cuda_internal.h).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace fisdit::cuda {

class GemmEngine;
GemmEngine* make_gemm_engine(cudaStream_t stream);  // owned by the caller: destroy()
void destroy(GemmEngine* e);

// y[M,N] = x[M,K] w[N,K]^T (+ bias when not null) (GELU-tanh when `gelu`), x/w BF16, y BF16 or
// F32, fp32 compute; bias and GELU run as the GEMM's fused epilogue.
void gemm_bf16(GemmEngine& e, const void* x, const void* w, void* y, bool y_f32, int64_t m,
               int64_t n, int64_t k, const void* bias, bool gelu, const std::string& ctx);

}  // namespace fisdit::cuda
