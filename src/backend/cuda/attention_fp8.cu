// The own FP8 flash attention for Hopper (Backend::attention_fp8 with head_dim 128 on sm_90a):
// wgmma tensor-core instructions on E4M3 q, k and v with fp32 accumulation and an fp32 online
// softmax. cuDNN's fp8 graph (attention.cpp) stays the fallback and the alternative
// (FISDIT_FP8_ATTENTION, matmul.cpp).
//
// One CTA of two warpgroups serves 128 queries of one head; each warpgroup owns 64 of them. Per
// tile of 128 keys:
//   S  = Q K^T                    wgmma m64n128k32, both operands in shared memory (4 k-steps)
//   P' = 448 exp2(c S - c m)      c = descale_q descale_k log2(e) / sqrt(d); m the running row max
//   O  = alpha O + P' V           P' rounded to E4M3 in registers (the A operand), V^T in shared
//   l  = alpha l + sum P'         memory; alpha = exp2(c (m_old - m_new))
// and at the end O descale_v / l, plus v's channel means (the inputs were centered), in bf16.
// P' spans E4M3's range (a weight of 1 is 448) and the 448 cancels in O / l.
//
// Operand layouts. wgmma reads shared memory in the 128-byte swizzle: a tile is rows of 128 bytes
// (one row of q or k, 128 E4M3 channels; or one channel of V^T, 128 keys), and the 16-byte chunk c
// of row r is stored at chunk c ^ (r % 8), the tile 1024-byte aligned. The cp.async loads place
// the chunks so. FP8 wgmma takes both shared operands K-major (no transpose), so V comes in
// transposed: vt [heads, 128 channels, keys rounded up to 128] from quantize_vt_kernel, which also
// orders the keys of each group of 32 (fp8_attention_vt_key, attention.h) so that the fp32
// accumulator fragment of S, rounded to E4M3 in place, is the A fragment of P' V without any
// register shuffle.
//
// The K and V^T tiles are triple-buffered: tile t + 2 is loaded (cp.async) while S of tile t + 1
// and P V of tile t compute.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_fp8.h>

#include <cmath>
#include <mutex>

#include "backend/cuda/attention.h"
#include "backend/cuda/kernel_util.cuh"

// wgmma exists on sm_90a only; elsewhere the kernel is compiled empty and reports itself absent.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FISDIT_FA8_WGMMA 1
#else
#define FISDIT_FA8_WGMMA 0
#endif

namespace fisdit::cuda {

namespace {

constexpr int kHeadDim = 128;
constexpr int kBlockM = 128;           // queries per CTA (64 per warpgroup)
constexpr int kBlockN = 128;           // keys per tile
constexpr int kFaThreads = 256;        // two warpgroups
constexpr int kTileBytes = 128 * 128;  // a Q, K or V^T tile: 128 rows of 128 E4M3 bytes
constexpr int kStages = 3;             // K/V^T buffers: tiles t, t + 1 and t + 2
constexpr int kSmemBytes = kTileBytes * (1 + 2 * kStages) + 1024;  // + alignment slack

[[maybe_unused]] __device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zero-filled (nothing read) when !valid.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
[[maybe_unused]] __device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// 128 rows of 128 bytes (row r at src + r * stride; rows >= valid_rows zero) into a swizzled tile.
[[maybe_unused]] __device__ __forceinline__ void load_tile(uint32_t tile, const uint8_t* src,
                                                           int64_t stride, int valid_rows) {
  for (int i = threadIdx.x; i < 128 * 8; i += kFaThreads) {
    const int r = i >> 3, c = i & 7;
    const bool valid = r < valid_rows;
    cp_async16(tile + r * 128 + ((c ^ (r & 7)) << 4), src + (valid ? r * stride : 0) + c * 16,
               valid);
  }
}

#if FISDIT_FA8_WGMMA
// The shared-memory matrix descriptor of a K-major operand in the 128-byte swizzle: start address
// (bits 0-13, in 16 bytes), leading byte offset (unused in this mode: 1), stride byte offset 1024
// (8 rows of 128 bytes), swizzle mode 1 (128 B) in bits 62-63. A k-step of 32 E4M3 values is 32
// bytes further: descriptor + 2.
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of an accumulator across a wgmma boundary (the
// instructions write their registers asynchronously).
template <int kRegs>
__device__ __forceinline__ void fence_regs(float (&d)[kRegs]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Four floats to four E4M3 bytes (saturating, nearest even), the first in the lowest byte.
__device__ __forceinline__ uint32_t e4m3x4(float a, float b, float c, float d) {
  const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(c, d), __NV_SATFINITE, __NV_E4M3);
  return lo | (hi << 16);
}

// The 64 fp32 accumulator registers of an m64n128 wgmma: their place in the instruction text
// (operands %0-%63) and the operands themselves, read and written.
#define FISDIT_WGMMA_D64                                                                       \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, " \
  "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, " \
  "%56, %57, %58, %59, %60, %61, %62, %63"
#define FISDIT_WGMMA_D112                                                         \
  FISDIT_WGMMA_D64                                                                \
  ", %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, " \
  "%79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, "   \
  "%94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, "      \
  "%107, %108, %109, %110, %111"
#define FISDIT_WGMMA_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define FISDIT_WGMMA_D16(i) \
  FISDIT_WGMMA_D4(i), FISDIT_WGMMA_D4(i + 4), FISDIT_WGMMA_D4(i + 8), FISDIT_WGMMA_D4(i + 12)
#define FISDIT_WGMMA_D64_OPERANDS \
  FISDIT_WGMMA_D16(0), FISDIT_WGMMA_D16(16), FISDIT_WGMMA_D16(32), FISDIT_WGMMA_D16(48)
#define FISDIT_WGMMA_D112_OPERANDS \
  FISDIT_WGMMA_D64_OPERANDS, FISDIT_WGMMA_D16(64), FISDIT_WGMMA_D16(80), FISDIT_WGMMA_D16(96)

__device__ __forceinline__ void wgmma_m64n128k32_ss(float (&d)[64], uint64_t a, uint64_t b,
                                                    int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {" FISDIT_WGMMA_D64
      "}, %64, %65, p, 1, 1;\n}\n"
      : FISDIT_WGMMA_D64_OPERANDS
      : "l"(a), "l"(b), "r"(accumulate));
}

// S for a tile of 224 keys: 112 accumulator registers.
__device__ __forceinline__ void wgmma_m64n224k32_ss(float (&d)[112], uint64_t a, uint64_t b,
                                                    int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %114, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n224k32.f32.e4m3.e4m3 {" FISDIT_WGMMA_D112
      "}, %112, %113, p, 1, 1;\n}\n"
      : FISDIT_WGMMA_D112_OPERANDS
      : "l"(a), "l"(b), "r"(accumulate));
}

__device__ __forceinline__ void wgmma_m64n128k32_rs(float (&d)[64], const uint32_t (&a)[4],
                                                    uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {" FISDIT_WGMMA_D64
      "}, {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
      : FISDIT_WGMMA_D64_OPERANDS
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(1));
}

// 2^x for x in [-125, 127] on the FMA pipe: x = n + f with n an integer and f in [-0.5, 0.5], 2^f
// by a cubic (relative error 1.4e-4, below E4M3's 2^-4 by far), 2^n added to the exponent bits.
// Smaller x (masked keys, -inf) give 2^-125. Half of the softmax's exponentials take this path
// with kPolyExp, so the special-function unit (a quarter of the FMA rate per SM) is not alone.
__device__ __forceinline__ float poly_exp2(float x) {
  x = fmaxf(x, -125.0f);
  const float shifter = 12582912.0f;  // 1.5 * 2^23: x + shifter rounds x to an integer
  const float t = x + shifter;
  const float f = x - (t - shifter);
  float p = fmaf(0.05502927f, f, 0.24225698f);
  p = fmaf(p, f, 0.69325305f);
  p = fmaf(p, f, 0.99995134f);
  return __int_as_float(__float_as_int(p) + ((__float_as_int(t) - 0x4B400000) << 23));
}

// The softmax of one tile of S (in place: S becomes P' = 448 exp2(c S - c m) in fp32), the new
// row maxima and sums, and alpha, the factor for what O holds so far. Register 4j + e of S holds
// row (lane / 4) + 8 (e / 2) of the warp's 16 and key 8j + 2 quad + e % 2; keys >= `left` are
// masked.
template <bool kPolyExp, int kN>
__device__ __forceinline__ void softmax_tile(float (&s)[kN / 2], float (&row_max)[2],
                                             float (&row_sum)[2], float (&alpha)[2], float c,
                                             int64_t left, int quad) {
  constexpr float kLog2P = 8.807354922057604f;  // log2(448): P' = 448 p fills E4M3's range
  if (left < kN) {
#pragma unroll
    for (int j = 0; j < kN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (8 * j + 2 * quad + (e & 1) >= left) s[4 * j + e] = -INFINITY;
  }
  float mx[2] = {row_max[0], row_max[1]};
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
    mx[0] = fmaxf(mx[0], fmaxf(s[4 * j], s[4 * j + 1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[4 * j + 2], s[4 * j + 3]));
  }
  float bias[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
    mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
    alpha[r] = fast_exp2((row_max[r] - mx[r]) * c);  // 0 on the first tile (-inf)
    row_max[r] = mx[r];
    bias[r] = kLog2P - mx[r] * c;
  }
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) {
    const int r = (i >> 1) & 1;
    const float x = fmaf(s[i], c, bias[r]);
    s[i] = kPolyExp && (i & 4) ? poly_exp2(x) : fast_exp2(x);
    sum[r] += s[i];
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) row_sum[r] = row_sum[r] * alpha[r] + sum[r];
}

// P' in E4M3 as the A fragments of the four k-steps of P' V: fragment register 0 is row lane / 4,
// columns 4 quad .. 4 quad + 3, register 1 the same columns 8 rows down, registers 2 and 3 columns
// 16 further; the accumulator holds keys 2 quad, 2 quad + 1, 8 + 2 quad, 9 + 2 quad there, and
// V^T's keys are ordered to match (fp8_attention_vt_key).
template <int kN>
__device__ __forceinline__ void pack_p(const float (&s)[kN / 2], uint32_t (&a)[kN / 32][4]) {
#pragma unroll
  for (int kk = 0; kk < kN / 32; ++kk) {
    const float* p = s + 16 * kk;
    a[kk][0] = e4m3x4(p[0], p[1], p[4], p[5]);
    a[kk][1] = e4m3x4(p[2], p[3], p[6], p[7]);
    a[kk][2] = e4m3x4(p[8], p[9], p[12], p[13]);
    a[kk][3] = e4m3x4(p[10], p[11], p[14], p[15]);
  }
}

// The epilogue of a warpgroup's 64 queries from row0: O descale_v / l + v's mean, in bf16.
// Register 4j + e of O holds row (lane / 4) + 8 (e / 2) of the warp's 16, channel 8j + 2 quad +
// e % 2; l is summed over the four threads of a row here.
__device__ __forceinline__ void store_output(const float (&o)[64], const float (&row_sum)[2],
                                             const float* slots, const float* vmean,
                                             __nv_bfloat16* out, int64_t row0, int64_t lq,
                                             int64_t heads, int64_t h) {
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3, quad = lane & 3;
  const float dv = slots[kFp8AttnSlotFloats * kDescaleV];
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = dv / l;
  }
  const float* mean = vmean + h * kHeadDim;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t row = row0 + warp * 16 + (lane >> 2) + 8 * r;
    if (row >= lq) continue;
    __nv_bfloat16* dst = out + (row * heads + h) * kHeadDim;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const int ch = 8 * j + 2 * quad;
      *reinterpret_cast<__nv_bfloat162*>(dst + ch) =
          __floats2bfloat162_rn(fmaf(o[4 * j + 2 * r], inv[r], mean[ch]),
                                fmaf(o[4 * j + 2 * r + 1], inv[r], mean[ch + 1]));
    }
  }
}

// One warpgroup's 64 queries through the tiles of kN keys (128, or 224 in the wide variant): O,
// the tile of S (then P'), P' in E4M3, the running row maxima and sums. Both kernels drive it;
// they differ only in how tiles arrive and how the warpgroups take turns. A V^T tile of 224 keys
// is two 128-key tiles (keys 0-127, then 128-255 of which the first 96 are used).
template <bool kPolyExp, int kN = kBlockN>
struct WarpgroupAttention {
  static_assert(kN == 128 || kN == 224, "tiles of 128 or 224 keys");
  float o[64], s[kN / 2];
  uint32_t a[kN / 32][4];
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f}, alpha[2];
  float c;  // descale_q descale_k log2(e) / sqrt(d)
  uint64_t q_desc;
  int quad;

  __device__ __forceinline__ WarpgroupAttention(float c_, uint32_t q_tile) : c(c_) {
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.0f;
    q_desc = sw128_desc(q_tile);
    quad = threadIdx.x & 3;
  }
  __device__ __forceinline__ void issue_s(uint32_t k_tile) {
    const uint64_t k_desc = sw128_desc(k_tile);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if constexpr (kN == 128)
        wgmma_m64n128k32_ss(s, q_desc + 2 * kk, k_desc + 2 * kk, kk);
      else
        wgmma_m64n224k32_ss(s, q_desc + 2 * kk, k_desc + 2 * kk, kk);
    }
    wgmma_commit();
  }
  __device__ __forceinline__ void issue_pv(uint32_t v_tile) {
#pragma unroll
    for (int kk = 0; kk < kN / 32; ++kk)
      wgmma_m64n128k32_rs(o, a[kk], sw128_desc(v_tile + (kk / 4) * kTileBytes) + 2 * (kk % 4));
    wgmma_commit();
  }
  // Tile 0: S_0, its softmax, P'_0 (`left`: the keys, masked past them).
  __device__ __forceinline__ void first(uint32_t k_tile, int64_t left) {
    fence_regs(s);
    wgmma_fence();
    issue_s(k_tile);
    wgmma_wait<0>();
    fence_regs(s);
    softmax_tile<kPolyExp, kN>(s, row_max, row_sum, alpha, c, left, quad);
    pack_p<kN>(s, a);
  }
  // S_{t+1} and O += P'_t V_t, both asynchronous (branch-free: ptxas serializes the wgmma
  // pipeline when a wait for one group of two sits behind a condition).
  __device__ __forceinline__ void issue(uint32_t k_next, uint32_t v_tile) {
    fence_regs(s);
    fence_regs(o);
    wgmma_fence();
    issue_s(k_next);
    issue_pv(v_tile);
  }
  // The softmax of S_{t+1} (keys past `left` masked) while P'_t V_t runs, then waits for it.
  __device__ __forceinline__ void finish_products(int64_t left) {
    wgmma_wait<1>();  // S_{t+1} (groups complete in order)
    fence_regs(s);
    softmax_tile<kPolyExp, kN>(s, row_max, row_sum, alpha, c, left, quad);
    wgmma_wait<0>();
    fence_regs(o);
  }
  // O rescaled to the new maxima; P'_{t+1} in E4M3.
  __device__ __forceinline__ void next_p() {
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] *= alpha[(i >> 1) & 1];
    pack_p<kN>(s, a);
  }
  // The last tile's P' V.
  __device__ __forceinline__ void last(uint32_t v_tile) {
    fence_regs(o);
    wgmma_fence();
    issue_pv(v_tile);
    wgmma_wait<0>();
    fence_regs(o);
  }
};
#endif  // FISDIT_FA8_WGMMA

// q8, k8 [tokens, heads, 128] E4M3 codes; vt8 [heads, 128, lk_pad]; out bf16 [lq, heads, 128].
// Grid (ceil(lq / 128), heads): the CTAs of one head run together and share its keys in L2.
//
// Iteration t (P'_t already in registers, S_{t+1} not yet computed):
//   load K, V^T of tile t + 2       (cp.async, lands during this iteration)
//   issue S_{t+1} = Q K_{t+1}^T; issue O += P'_t V_t    (both asynchronous)
//   wait for S_{t+1}; its softmax   (the exponentials run while P'_t V_t is on the tensor cores)
//   wait for P'_t V_t; O *= alpha_{t+1}; P'_{t+1} to E4M3
template <bool kPolyExp>
__global__ void __launch_bounds__(kFaThreads, 1)
    attention_fp8_kernel(const uint8_t* __restrict__ q8, const uint8_t* __restrict__ k8,
                         const uint8_t* __restrict__ vt8, __nv_bfloat16* __restrict__ out,
                         const float* __restrict__ vmean, const float* __restrict__ slots,
                         int64_t lq, int64_t lk, int64_t lk_pad, int64_t heads, float scale_log2) {
#if FISDIT_FA8_WGMMA
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t sq = (raw + 1023) & ~1023u;  // Q, then per stage K and V^T
  const auto sk = [&](int stage) { return sq + kTileBytes * (1 + 2 * stage); };
  const auto sv = [&](int stage) { return sq + kTileBytes * (2 + 2 * stage); };

  const int tid = threadIdx.x, wg = tid >> 7;
  const int64_t m0 = int64_t{blockIdx.x} * kBlockM, h = blockIdx.y;
  const int64_t row_stride = heads * kHeadDim;
  const uint8_t* k_head = k8 + h * kHeadDim;
  const uint8_t* vt_head = vt8 + h * kHeadDim * lk_pad;
  const int tiles = static_cast<int>((lk + kBlockN - 1) / kBlockN);
  const auto load_kv = [&](int t) {
    if (t >= tiles) return;
    const int stage = t % kStages;
    const int64_t n0 = int64_t{t} * kBlockN;
    load_tile(sk(stage), k_head + n0 * row_stride, row_stride,
              static_cast<int>(lk - n0 < kBlockN ? lk - n0 : kBlockN));
    load_tile(sv(stage), vt_head + n0, lk_pad, 128);
  };
  load_tile(sq, q8 + (m0 * heads + h) * kHeadDim, row_stride,
            static_cast<int>(lq - m0 < kBlockM ? lq - m0 : kBlockM));
  load_kv(0);
  cp_async_commit();
  load_kv(1);
  cp_async_commit();

  WarpgroupAttention<kPolyExp> w(
      slots[kFp8AttnSlotFloats * kDescaleQ] * slots[kFp8AttnSlotFloats * kDescaleK] * scale_log2,
      sq + wg * (kTileBytes / 2));
  cp_async_wait<1>();  // Q and tile 0
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  w.first(sk(0), lk);
  for (int t = 0; t + 1 < tiles; ++t) {
    // Tile t + 1 is in (loaded during the last iteration); every warpgroup is past iteration
    // t - 1, so the stage of tile t - 1 takes tile t + 2.
    cp_async_wait<0>();
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    load_kv(t + 2);
    cp_async_commit();
    w.issue(sk((t + 1) % kStages), sv(t % kStages));
    w.finish_products(lk - int64_t{t + 1} * kBlockN);
    w.next_p();
  }
  // The last tile's P'V (its V^T is in: waited for in the last iteration, or with tile 0).
  w.last(sv((tiles - 1) % kStages));
  store_output(w.o, w.row_sum, slots, vmean, out, m0 + wg * 64, lq, heads, h);
#endif
}

// v [lk, heads, 128] less its channel means, divided by the scale at scale_ptr and rounded to
// E4M3 (as quantize_tensor_kernel), written transposed: vt [heads, 128, lk_pad], keys >= lk zero,
// each group of 32 keys in the order of fp8_attention_vt_key. One block per 32 keys and head.
__global__ void quantize_vt_kernel(const __nv_bfloat16* __restrict__ v,
                                   const float* __restrict__ vmean,
                                   const float* __restrict__ scale_ptr, uint8_t* __restrict__ vt,
                                   int64_t lk, int64_t lk_pad, int64_t heads) {
  __shared__ uint8_t tile[kHeadDim][32 + 4];
  const float scale = *scale_ptr;
  const int64_t g = blockIdx.x, h = blockIdx.y;
  for (int i = threadIdx.x; i < 32 * kHeadDim; i += blockDim.x) {
    const int key = i / kHeadDim, ch = i % kHeadDim;
    const int64_t token = g * 32 + key;
    uint8_t code = 0;
    if (token < lk) {
      const float x =
          __bfloat162float(v[(token * heads + h) * kHeadDim + ch]) - vmean[h * kHeadDim + ch];
      code = __nv_cvt_float_to_fp8(__fdiv_rn(x, scale), __NV_SATFINITE, __NV_E4M3);
    }
    tile[ch][fp8_attention_vt_position(key)] = code;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kHeadDim * 8; i += blockDim.x) {
    const int ch = i / 8, w = i % 8;
    const uint8_t* b = &tile[ch][4 * w];
    const uint32_t word =
        uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16) | (uint32_t{b[3]} << 24);
    *reinterpret_cast<uint32_t*>(vt + (h * kHeadDim + ch) * lk_pad + g * 32 + 4 * w) = word;
  }
}

// ---- The warp-specialized variant (FISDIT_FP8_ATTENTION=own-ws): three warpgroups. The first
// loads (one thread issues the tensor-memory-accelerator copies of Q, K and V^T tiles, each
// completing on an mbarrier); the other two compute as attention_fp8_kernel does, each on 64
// queries, waiting for tiles on the mbarriers instead of a block-wide barrier, and taking turns at
// the tensor cores (two named barriers): while one warpgroup's softmax runs, the other's
// matrix products do.
constexpr int kWsThreads = 384;
constexpr int kWsStages = 3;
// A stage of tiles of kN keys: K (kN rows of 128 bytes), then V^T (one 128-key tile, two for 224).
constexpr int ws_stage_bytes(int kN) { return kN * 128 + (kN > 128 ? 2 : 1) * kTileBytes; }
constexpr int ws_smem_bytes(int kN) {  // Q, the stages, alignment slack and the barriers
  return kTileBytes + kWsStages * ws_stage_bytes(kN) + 1024 + 256;
}
constexpr int kWideKeys = 224;  // the wide variant's tile (own-ws224)

struct WsMaps {
  CUtensorMap q, k, vt;
};

#if FISDIT_FA8_WGMMA
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                            int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, "
      "%4, %5}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                            int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, "
      "%4}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory");
}
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory");
}
#endif  // FISDIT_FA8_WGMMA

// The maps: q and k [tokens, heads, 128] bytes as 3-D (128, heads, tokens) with boxes of
// (128, 1, 128) for q and (128, 1, kN) for k, vt [heads * 128, lk_pad] as 2-D with boxes of
// (128, 128); 128-byte swizzle, rows past the end read as zeros.
template <bool kPolyExp, int kN>
__global__ void __launch_bounds__(kWsThreads, 1)
    attention_fp8_ws_kernel(const __grid_constant__ WsMaps maps, __nv_bfloat16* __restrict__ out,
                            const float* __restrict__ vmean, const float* __restrict__ slots,
                            int64_t lq, int64_t lk, int64_t heads, float scale_log2) {
#if FISDIT_FA8_WGMMA
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t sq = (raw + 1023) & ~1023u;
  constexpr int kKBytes = kN * 128, kVBytes = ws_stage_bytes(kN) - kKBytes;
  const auto sk = [&](int stage) { return sq + kTileBytes + ws_stage_bytes(kN) * stage; };
  const auto sv = [&](int stage) { return sk(stage) + kKBytes; };
  const uint32_t bars = sq + kTileBytes + ws_stage_bytes(kN) * kWsStages;
  const uint32_t q_full = bars;
  const auto k_full = [&](int stage) { return bars + 8 * (1 + stage); };
  const auto v_full = [&](int stage) { return bars + 8 * (1 + kWsStages + stage); };
  const auto kv_empty = [&](int stage) { return bars + 8 * (1 + 2 * kWsStages + stage); };

  const int tid = threadIdx.x, wg = tid >> 7;
  const int m0 = static_cast<int>(blockIdx.x) * kBlockM, h = static_cast<int>(blockIdx.y);
  const int tiles = static_cast<int>((lk + kN - 1) / kN);
  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < kWsStages; ++s) {
      mbar_init(k_full(s), 1);
      mbar_init(v_full(s), 1);
      mbar_init(kv_empty(s), 256);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {  // the loads
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (tid == 0) {
      mbar_expect_tx(q_full, kTileBytes);
      tma_load_3d(sq, &maps.q, q_full, 0, h, m0);
      for (int t = 0; t < tiles; ++t) {
        const int stage = t % kWsStages;
        if (t >= kWsStages) mbar_wait(kv_empty(stage), (t / kWsStages - 1) & 1);
        mbar_expect_tx(k_full(stage), kKBytes);
        tma_load_3d(sk(stage), &maps.k, k_full(stage), 0, h, t * kN);
        mbar_expect_tx(v_full(stage), kVBytes);
        tma_load_2d(sv(stage), &maps.vt, v_full(stage), t * kN, h * kHeadDim);
        if constexpr (kN > 128)  // the second 128 keys (past lk_pad: zeros)
          tma_load_2d(sv(stage) + kTileBytes, &maps.vt, v_full(stage), t * kN + 128, h * kHeadDim);
      }
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int cw = wg - 1;  // this consumer warpgroup: queries m0 + 64 cw ...
  const int my_turn = 1 + cw, their_turn = 2 - cw;  // named barriers 1 and 2
  WarpgroupAttention<kPolyExp, kN> w(
      slots[kFp8AttnSlotFloats * kDescaleQ] * slots[kFp8AttnSlotFloats * kDescaleK] * scale_log2,
      sq + cw * (kTileBytes / 2));
  mbar_wait(q_full, 0);
  mbar_wait(k_full(0), 0);
  w.first(sk(0), lk);
  if (cw == 1) named_arrive(1);  // the first warpgroup takes the first turn
  for (int t = 0; t + 1 < tiles; ++t) {
    const int next = t + 1;
    mbar_wait(k_full(next % kWsStages), (next / kWsStages) & 1);
    mbar_wait(v_full(t % kWsStages), (t / kWsStages) & 1);
    named_sync(my_turn);
    w.issue(sk(next % kWsStages), sv(t % kWsStages));
    named_arrive(their_turn);
    w.finish_products(lk - int64_t{next} * kN);
    mbar_arrive(kv_empty(t % kWsStages));  // S_t and P'_t V_t are done with this stage
    w.next_p();
  }
  if (cw == 0) named_sync(my_turn);  // the second warpgroup's last turn signal
  mbar_wait(v_full((tiles - 1) % kWsStages), ((tiles - 1) / kWsStages) & 1);
  w.last(sv((tiles - 1) % kWsStages));
  store_output(w.o, w.row_sum, slots, vmean, out, m0 + cw * 64, lq, heads, h);
#endif
}

__global__ void wgmma_built_kernel(int* flag) { *flag = FISDIT_FA8_WGMMA; }

}  // namespace

bool attention_fp8_own_supported(int64_t head_dim) {
  if (head_dim != kHeadDim) return false;
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] {
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
        major != 9 || minor != 0) {
      cudaGetLastError();
      return;
    }
    int* flag = nullptr;
    int built = 0;
    if (cudaMalloc(&flag, sizeof(int)) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    wgmma_built_kernel<<<1, 1>>>(flag);
    const bool copied =
        cudaMemcpy(&built, flag, sizeof(int), cudaMemcpyDeviceToHost) == cudaSuccess;
    cudaFree(flag);
    cudaGetLastError();
    ok = copied && built == 1 &&
         cudaFuncSetAttribute(attention_fp8_kernel<false>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              kSmemBytes) == cudaSuccess &&
         cudaFuncSetAttribute(attention_fp8_kernel<true>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              kSmemBytes) == cudaSuccess &&
         cudaFuncSetAttribute(attention_fp8_ws_kernel<false, kBlockN>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              ws_smem_bytes(kBlockN)) == cudaSuccess &&
         cudaFuncSetAttribute(attention_fp8_ws_kernel<true, kBlockN>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              ws_smem_bytes(kBlockN)) == cudaSuccess &&
         cudaFuncSetAttribute(attention_fp8_ws_kernel<false, kWideKeys>,
                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                              ws_smem_bytes(kWideKeys)) == cudaSuccess;
  });
  return ok;
}

int64_t attention_fp8_own_vt_keys(int64_t lk) { return (lk + kBlockN - 1) / kBlockN * kBlockN; }

void launch_quantize_vt_e4m3(const void* v, const float* vmean, const float* scale, uint8_t* vt,
                             int64_t lk, int64_t heads, cudaStream_t s) {
  const int64_t lk_pad = attention_fp8_own_vt_keys(lk);
  quantize_vt_kernel<<<dim3(static_cast<unsigned>(lk_pad / 32), static_cast<unsigned>(heads)), 256,
                       0, s>>>(static_cast<const __nv_bfloat16*>(v), vmean, scale, vt, lk, lk_pad,
                               heads);
  check_launch("attention_fp8 v transpose", "", s);
}

namespace {
// cuTensorMapEncodeTiled from the driver, found once through the runtime (no libcuda link).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      f = nullptr;
    cudaGetLastError();
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A map of `rank` dimensions over uint8 data with 128-byte swizzled boxes; false if the driver
// refuses it.
bool encode_map(CUtensorMap& map, const void* base, int rank, const cuuint64_t* dims,
                const cuuint64_t* strides, const cuuint32_t* box) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return false;
  const cuuint32_t unit[3] = {1, 1, 1};
  return encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, static_cast<cuuint32_t>(rank),
                const_cast<void*>(base), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
}  // namespace

bool launch_attention_fp8_own(const uint8_t* q8, const uint8_t* k8, const uint8_t* vt8, void* out,
                              const float* vmean, const float* slots, int64_t lq, int64_t lk,
                              int64_t heads, bool poly_exp, bool warp_specialized, bool wide_tiles,
                              cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((lq + kBlockM - 1) / kBlockM),
                  static_cast<unsigned>(heads));
  const float scale_log2 = 1.4426950408889634f / std::sqrt(static_cast<float>(kHeadDim));
  const int64_t lk_pad = attention_fp8_own_vt_keys(lk);
  if (warp_specialized) {
    WsMaps maps{};
    const cuuint64_t q_dims[3] = {kHeadDim, static_cast<cuuint64_t>(heads),
                                  static_cast<cuuint64_t>(lq)};
    const cuuint64_t k_dims[3] = {kHeadDim, static_cast<cuuint64_t>(heads),
                                  static_cast<cuuint64_t>(lk)};
    const cuuint64_t tok_strides[2] = {kHeadDim, static_cast<cuuint64_t>(heads * kHeadDim)};
    const int keys = wide_tiles ? kWideKeys : kBlockN;  // per tile
    const cuuint32_t q_box[3] = {kHeadDim, 1, kBlockM};
    const cuuint32_t k_box[3] = {kHeadDim, 1, static_cast<cuuint32_t>(keys)};
    const cuuint64_t vt_dims[2] = {static_cast<cuuint64_t>(lk_pad),
                                   static_cast<cuuint64_t>(heads * kHeadDim)};
    const cuuint64_t vt_strides[1] = {static_cast<cuuint64_t>(lk_pad)};
    const cuuint32_t vt_box[2] = {kBlockN, kHeadDim};
    if (!encode_map(maps.q, q8, 3, q_dims, tok_strides, q_box) ||
        !encode_map(maps.k, k8, 3, k_dims, tok_strides, k_box) ||
        !encode_map(maps.vt, vt8, 2, vt_dims, vt_strides, vt_box))
      return false;
    auto* kernel = wide_tiles ? attention_fp8_ws_kernel<false, kWideKeys>
                   : poly_exp ? attention_fp8_ws_kernel<true, kBlockN>
                              : attention_fp8_ws_kernel<false, kBlockN>;
    kernel<<<grid, kWsThreads, ws_smem_bytes(keys), s>>>(maps, static_cast<__nv_bfloat16*>(out),
                                                         vmean, slots, lq, lk, heads, scale_log2);
    check_launch(wide_tiles ? "attention_fp8 (own kernel, warp-specialized, 224-key tiles)"
                            : "attention_fp8 (own kernel, warp-specialized)",
                 "", s);
    return true;
  }
  auto* kernel = poly_exp ? attention_fp8_kernel<true> : attention_fp8_kernel<false>;
  kernel<<<grid, kFaThreads, kSmemBytes, s>>>(q8, k8, vt8, static_cast<__nv_bfloat16*>(out), vmean,
                                              slots, lq, lk, lk_pad, heads, scale_log2);
  check_launch("attention_fp8 (own kernel)", "", s);
  return true;
}

}  // namespace fisdit::cuda
