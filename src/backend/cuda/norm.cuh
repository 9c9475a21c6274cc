#pragma once
// Launchers of norm.cu: LayerNorm (+ adaLN modulation), RMSNorm, 3D RoPE and the fused q/k
// RMSNorm + RoPE.
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

void launch_layer_norm(const float* x, void* y, EType yt, int64_t rows, int64_t d,
                       const void* weight, const void* bias, EType wt, float eps, ModArg shift,
                       ModArg scale, cudaStream_t s);
// LayerNorm (+ modulation) of x rounded to bf16, then quantized per row to E4M3 codes [rows, d]
// and scales [rows] as launch_quantize_rows_e4m3 does it from that bf16 row, in one kernel; false
// (nothing launched) when the row is too wide or x / codes misaligned.
bool launch_layer_norm_e4m3(const float* x, uint8_t* codes, float* scales, int64_t rows, int64_t d,
                            const void* weight, const void* bias, EType wt, float eps, ModArg shift,
                            ModArg scale, cudaStream_t s);
void launch_rms_norm(const void* x, EType xt, void* y, EType yt, const void* weight, EType wt,
                     int64_t rows, int64_t d, float eps, cudaStream_t s);
// Fused q/k RMSNorm + RoPE in place on bf16 x [rows, d]; false (nothing launched) when the
// fused kernel does not apply (dtype, width or alignment).
bool launch_rms_norm_rope(void* x, EType xt, const void* weight, EType wt, int64_t rows, int64_t d,
                          int64_t head_dim, int frame_pairs, int row_pairs, float eps,
                          const FrameList& frames, int height, int width, const float* table,
                          cudaStream_t s);
// x [tokens, heads, head_dim] in place; `table` float2 (cos, sin) [positions, head_dim / 2]; the
// first frame_pairs pairs of a head rotate with the frame, the next row_pairs with the row, the
// rest with the column.
void launch_rope_3d(void* x, EType xt, int64_t tokens, int64_t heads, int64_t head_dim,
                    int frame_pairs, int row_pairs, const FrameList& frames, int height, int width,
                    const float* table, cudaStream_t s);

}  // namespace fisdit::cuda
