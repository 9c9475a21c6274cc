#pragma once
// Launchers of elementwise.cu: conversions, random fills, fp8 widening and per-row quantization,
// activations, gated residual adds and the linear op's bias epilogue and small-row GEMV (fp32
// math throughout).
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

void launch_convert(const void* src, EType st, void* dst, EType dt, int64_t n, cudaStream_t s);
void launch_random_normal(void* dst, EType dt, int64_t n, float mean, float stddev, uint64_t seed,
                          cudaStream_t s);
// dst[i] = dt(float(fp8 code src[i]) * scale); e5m2 selects F8_E5M2 codes, else F8_E4M3 (fn).
void launch_dequantize_fp8(const uint8_t* src, bool e5m2, float scale, void* dst, EType dt,
                           int64_t n, cudaStream_t s);
// Row r of x [rows, cols] (F32 or BF16) as E4M3 codes with scale amax / 448 (core/quantize.h):
// the same bits as quantize_rows_e4m3 on the host.
void launch_quantize_rows_e4m3(const void* x, EType xt, uint8_t* codes, float* scales, int64_t rows,
                               int64_t cols, cudaStream_t s);
// mean[c] of x [rows, cols] over its rows, deterministic (fixed chunks summed in order), with
// `scratch` of column_mean_scratch_floats(rows, cols) floats.
int64_t column_mean_scratch_floats(int64_t rows, int64_t cols);
void launch_column_mean(const void* x, EType xt, int64_t rows, int64_t cols, float* mean,
                        float* scratch, cudaStream_t s);
// The scalars of one fp8 attention call (attention_fp8_scalars, attention.h) in a device buffer of
// kFp8AttnSlots 16-byte slots (one float each): amax_tensor takes max(|x - mean|) over x's n
// values into the slot at `amax_slot` (zeroed first, as uint bits: atomicMax on non-negative
// floats); attention_fp8_scalars then derives every scale from the three amaxes; quantize_tensor
// rounds x - mean to E4M3 with the scale in the slot at `scale_slot` (without a mean: the bits
// of round_e4m3_per_tensor). `mean` (null: none) has one value per column of x [n / cols, cols].
void launch_amax_tensor(const void* x, EType xt, int64_t n, const float* mean, int64_t cols,
                        float* slots, int amax_slot, cudaStream_t s);
void launch_attention_fp8_scalars(float* slots, bool fp8_out, cudaStream_t s);
void launch_quantize_tensor_e4m3(const void* x, EType xt, uint8_t* codes, int64_t n,
                                 const float* mean, int64_t cols, const float* slots,
                                 int scale_slot, cudaStream_t s);
// dst[i] = dt(float(E4M3 code src[i]) * slots[scale_slot] + mean[i % cols]) (a scale that lives
// on the device; mean may be null).
void launch_dequantize_e4m3_slot(const uint8_t* src, const float* slots, int scale_slot,
                                 const float* mean, int64_t cols, void* dst, EType dt, int64_t n,
                                 cudaStream_t s);
// x[i] += mean[i % cols] in place.
void launch_add_column(void* x, EType xt, int64_t n, const float* mean, int64_t cols,
                       cudaStream_t s);
void launch_activation(const void* x, EType xt, void* y, EType yt, int64_t n, Activation act,
                       cudaStream_t s);
// y[r, :] = act(y[r, :] + bias) in place (bias may be null).
void launch_bias_act(void* y, EType yt, const void* bias, EType bt, int64_t rows, int64_t cols,
                     Activation act, cudaStream_t s);
// y[r, c] = act(y[r, c] * row_scale[r] * col_scale[c] + bias[c]) in place (bias may be null): the
// scales of an fp8 GEMM that cuBLASLt could not apply itself.
void launch_scale_bias_act(void* y, EType yt, const float* row_scale, const float* col_scale,
                           const void* bias, EType bt, int64_t rows, int64_t cols, Activation act,
                           cudaStream_t s);
// y[m, n] = act(sum_k x[m, k] w[n, k] + b[n]), x F32, w BF16, fp32 math; m <= 8.
void launch_gemv_rows(const float* x, const void* w, const void* bias, EType bt, void* y, EType yt,
                      int64_t m, int64_t n, int64_t k, Activation act, cudaStream_t s);
// x[r, i] += y[r, i] * gate (x F32)
void launch_add(float* x, const void* y, EType yt, int64_t rows, int64_t d, ModArg gate,
                cudaStream_t s);
void launch_mul_gate(void* x, EType xt, int64_t rows, int64_t d, ModArg gate, cudaStream_t s);
void launch_add_scaled(void* x, EType xt, const void* y, EType yt, float alpha, int64_t n,
                       cudaStream_t s);
void launch_sub(const void* a, EType at, const void* b, EType bt, void* out, EType ot, int64_t n,
                cudaStream_t s);
void launch_add_row(const void* a, EType at, const void* row, EType rt, void* out, EType ot,
                    int64_t n, int64_t d, cudaStream_t s);

}  // namespace fisdit::cuda
