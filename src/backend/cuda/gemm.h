#pragma once
// The cuBLASLt engine of Backend::linear and linear_fp8 (gemm.cpp): bf16 and E4M3 GEMMs with
// fused bias / GELU epilogues, descriptors and algorithms cached per shape. A CudaBackend owns
// one (cuda_internal.h).
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
// The same with E4M3 x and w and one fp32 scale per row of each (x_scales [M], w_scales [N]):
// y[i, j] = x_scales[i] w_scales[j] sum_k x[i, k] w[j, k], fp32 sums, then bias and GELU. Where
// cuBLASLt applies the scales itself (outer-vector scaling) it does; what it could not do is left
// to the caller, as the result says. Throws when cuBLASLt has no fp8 GEMM for the shape at all.
enum class Fp8Gemm {
  Done,           // y is complete
  NeedsEpilogue,  // y is scaled; bias and GELU are still to apply
  NeedsScales,    // y holds the plain sums: scales, bias and GELU are still to apply
};
Fp8Gemm gemm_fp8(GemmEngine& e, const void* x, const float* x_scales, const void* w,
                 const float* w_scales, void* y, bool y_f32, int64_t m, int64_t n, int64_t k,
                 const void* bias, bool gelu, const std::string& ctx);

}  // namespace fisdit::cuda
