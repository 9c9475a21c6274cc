#pragma once
// Pieces shared by the CUDA backend's files: error checks, the device context, the backend class
// and the launchers of the own kernels (kernels take raw pointers and the stream).
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/cuda/cuda_backend.h"

namespace fisdit::cuda {

// Throws fisdit::Error "<op> <ctx>: <what>".
[[noreturn]] void fail(const char* op, const std::string& ctx, const std::string& what);
inline void require(bool ok, const char* op, const std::string& what) {
  if (!ok) fail(op, "", what);
}
// Every CUDA runtime call goes through this: the error names the op and the shapes (`ctx`).
void check(cudaError_t err, const char* op, const std::string& ctx);
// After a kernel launch: launch errors, and with FISDIT_CUDA_SYNC=1 also execution errors.
void check_launch(const char* op, const std::string& ctx, cudaStream_t stream);

// Element types the kernels read and write.
enum class EType : int { F32 = 0, BF16 = 1 };
EType etype(DType t, const char* op, const char* what);  // F32 or BF16, else throws

// Per-frame data passed by value to kernels (no host->device copies, graph friendly).
constexpr int kMaxFrames = 128;
struct FrameList {
  int count = 0;
  int32_t frame[kMaxFrames];
};
struct InterpPlan {  // FIS.md linear reconstruction, per destination frame
  int frames = 0;
  int32_t slot[kMaxFrames];  // left anchor slot in src
  float wa[kMaxFrames];      // (b - f), 0 on anchors
  float wb[kMaxFrames];      // (f - a)
  float span[kMaxFrames];    // (b - a), 1 on anchors
};

// A modulation chunk as kernels see it: row r of token t is token_rows ? token_rows[t] : 0.
struct ModArg {
  const float* table = nullptr;  // [rows, chunks, dim]
  const int32_t* token_rows = nullptr;
  int chunks = 0;
  int chunk = 0;
};

// ---- kernel launchers (elementwise.cu) ----
void launch_convert(const void* src, EType st, void* dst, EType dt, int64_t n, cudaStream_t s);
void launch_random_normal(void* dst, EType dt, int64_t n, float mean, float stddev, uint64_t seed,
                          cudaStream_t s);
// dst[i] = dt(float(fp8 code src[i]) * scale); e5m2 selects F8_E5M2 codes, else F8_E4M3 (fn).
void launch_dequantize_fp8(const uint8_t* src, bool e5m2, float scale, void* dst, EType dt,
                           int64_t n, cudaStream_t s);
void launch_activation(const void* x, EType xt, void* y, EType yt, int64_t n, Activation act,
                       cudaStream_t s);
// y[r, :] = act(y[r, :] + bias) in place (bias may be null).
void launch_bias_act(void* y, EType yt, const void* bias, EType bt, int64_t rows, int64_t cols,
                     Activation act, cudaStream_t s);
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

// ---- norm.cu ----
void launch_layer_norm(const float* x, void* y, EType yt, int64_t rows, int64_t d,
                       const void* weight, const void* bias, EType wt, float eps, ModArg shift,
                       ModArg scale, cudaStream_t s);
void launch_rms_norm(const void* x, EType xt, void* y, EType yt, const void* weight, EType wt,
                     int64_t rows, int64_t d, float eps, cudaStream_t s);
// Fused q/k RMSNorm + RoPE in place on bf16 x [rows, d]; false (nothing launched) when the
// fused kernel does not apply (dtype, width or alignment).
bool launch_rms_norm_rope(void* x, EType xt, const void* weight, EType wt, int64_t rows, int64_t d,
                          int64_t head_dim, float eps, const FrameList& frames, int height,
                          int width, const float* table, cudaStream_t s);
// x [tokens, heads, head_dim] in place; `table` float2 (cos, sin) [positions, head_dim / 2].
void launch_rope_3d(void* x, EType xt, int64_t tokens, int64_t heads, int64_t head_dim,
                    const FrameList& frames, int height, int width, const float* table,
                    cudaStream_t s);

// ---- frames.cu ----
void launch_gather_frames(const void* src, void* dst, int64_t frame_bytes, const FrameList& frames,
                          cudaStream_t s);
void launch_interpolate_frames(const void* src, EType st, float* dst, int64_t frame_elems,
                               const InterpPlan& plan, bool accumulate, cudaStream_t s);
// y [A, frame_elems] anchor rows after a block, x [T, frame_elems] before it (FIS delta).
void launch_reconstruct_delta(const float* y, float* x, int64_t frame_elems,
                              const FrameList& anchors, cudaStream_t s);
void launch_patchify(const float* x, float* out, int64_t c, int64_t f, int64_t h, int64_t w,
                     std::array<int, 3> patch, cudaStream_t s);
void launch_unpatchify(const float* x, float* out, int64_t c, int64_t gf, int64_t gh, int64_t gw,
                       std::array<int, 3> patch, cudaStream_t s);
// Reference attention (fp32 online softmax, one block per query and head): the fallback when
// cuDNN does not take a shape. q/k/v/out bf16 [tokens, heads, head_dim], head_dim <= 256.
void launch_attention_naive(const void* q, const void* k, const void* v, void* out, int64_t lq,
                            int64_t lk, int64_t heads, int64_t head_dim, cudaStream_t s);

// ---- video.cu (F32 [C, T, H, W] tensors of the VAE ops) ----
void launch_channel_bias(float* y, const float* bias, int64_t c, int64_t inner, cudaStream_t s);
void launch_channel_rms_norm(const float* x, const float* gamma, float* y, int64_t c, int64_t n,
                             bool silu, cudaStream_t s);
void launch_upsample_nearest2x(const float* x, float* y, int64_t planes, int64_t h, int64_t w,
                               cudaStream_t s);
void launch_pad_spatial(const float* x, float* y, int64_t planes, int64_t h, int64_t w, int top,
                        int bottom, int left, int right, cudaStream_t s);
void launch_avg_down3d(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                       int64_t out_c, int ft, int fs, cudaStream_t s);
void launch_dup_up3d(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                     int64_t out_c, int ft, int fs, int skip, cudaStream_t s);
// Index space of the small side [4C, T, H, W] (c, h, w of the small side).
void launch_space_to_channels2(const float* x, float* y, int64_t c, int64_t t, int64_t h, int64_t w,
                               bool inverse, cudaStream_t s);
// out[b, c, r] = in[b, r, c] for in [batch, rows, cols] (F32).
void launch_transpose(const float* in, float* out, int64_t batch, int64_t rows, int64_t cols,
                      cudaStream_t s);
// In place: every row of `cols` logits becomes softmax(scale * row).
void launch_softmax_rows(float* scores, int64_t rows, int64_t cols, float scale, cudaStream_t s);

// ---- t5.cu ----
// umT5 attention: q, k, v, out [len, heads, hd] (q/k/v of type t); table F32 [buckets, heads];
// bucket_of [2 len - 1], key_valid [len] I32 on the device. Shared memory: len + hd floats.
void launch_attention_rel_bias(const void* q, const void* k, const void* v, EType t,
                               const float* table, const int32_t* bucket_of,
                               const int32_t* key_valid, void* out, EType ot, int64_t len,
                               int64_t heads, int64_t hd, cudaStream_t s);
void launch_mul(void* x, EType xt, const void* y, EType yt, int64_t n, cudaStream_t s);

// ---- video_engine.cpp: cuDNN convolutions and cuBLAS attention GEMMs of the VAE ops ----
class VideoEngine;
VideoEngine* make_video_engine(cudaStream_t stream);
void destroy(VideoEngine* e);
// FISDIT_VAE_TF32=0 turns TF32 tensor cores off for the VAE convolutions (plain fp32 FMA).
bool vae_tf32_enabled();
// FISDIT_VAE_CONV_LAYOUT: auto (default: per shape, the faster of the two as measured on the first
// call), ncdhw (cuDNN on the tensors as they are) or ndhwc (channels-last copies of input and
// weight for cuDNN, output transposed back). FISDIT_VAE_CONV_LOG=1 prints each shape's choice.
enum class ConvLayout { Auto, Ncdhw, Ndhwc };
ConvLayout vae_conv_layout();
// y = conv(x, w) without bias; x [C, T, H, W], w [Cout, Cin, kt, kh, kw], symmetric spatial
// padding, all F32.
void conv3d_forward(VideoEngine& e, const float* x, const std::array<int64_t, 4>& xs,
                    const float* w, const std::array<int64_t, 5>& ws, float* y,
                    const std::array<int64_t, 4>& ys, const std::array<int, 3>& stride, int pad_h,
                    int pad_w, const std::string& ctx);
// q, k, v, out [c, t, n]; `scores` holds rows * n floats.
void frame_attention_forward(VideoEngine& e, const float* q, const float* k, const float* v,
                             float* out, int64_t c, int64_t t, int64_t n, float* scores,
                             int64_t rows, const std::string& ctx);

// w [rows, cols] += scale * up [rows, rank] @ down [rank, cols], row-major F32, fp32 GEMM.
void low_rank_update(VideoEngine& e, float* w, const float* up, const float* down, int64_t rows,
                     int64_t cols, int64_t rank, float scale, const std::string& ctx);

// ---- the context every tensor of a backend keeps alive ----
struct DeviceContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  size_t device_total = 0;
  ~DeviceContext();
};

class GemmEngine;                                   // gemm.cpp (cuBLASLt)
class AttentionEngine;                              // attention.cpp (cuDNN)
GemmEngine* make_gemm_engine(cudaStream_t stream);  // owned by the caller: destroy()
AttentionEngine* make_attention_engine(cudaStream_t stream);
void destroy(GemmEngine* e);
void destroy(AttentionEngine* e);

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  Device device() const override { return Device::CUDA; }
  std::string name() const override { return "cuda"; }
  DType weight_dtype() const override { return DType::BF16; }
  DType activation_dtype() const override { return DType::BF16; }

  Tensor empty(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host, DType dtype) override;
  Tensor download(const Tensor& t) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void synchronize() override;
  Tensor random_normal(const Shape& shape, DType dtype, float mean, float stddev,
                       uint64_t seed) override;
  Tensor dequantize(const Tensor& stored, float scale, DType dtype) override;

  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
              Activation act) override;
  void activation(const Tensor& x, Tensor& y, Activation act) override;
  void layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, Tensor& y,
                  ModChunk shift, ModChunk scale) override;
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override;
  void rope_3d(Tensor& x, const RopeGrid& grid) override;
  void rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                     const RopeGrid& grid) override;
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;

  void attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& table,
                          const std::vector<int32_t>& bucket_of,
                          const std::vector<uint8_t>& key_valid, Tensor& out) override;
  void mul(Tensor& x, const Tensor& y) override;
  void add(Tensor& x, const Tensor& y, ModChunk gate) override;
  void mul_gate(Tensor& x, ModChunk gate) override;
  void add_scaled(Tensor& x, const Tensor& y, float alpha) override;
  void add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) override;
  void sub(const Tensor& a, const Tensor& b, Tensor& out) override;
  void add_row(const Tensor& a, const Tensor& row, Tensor& out) override;

  void gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                     int64_t tokens_per_frame, Tensor& dst) override;
  void interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                          int64_t tokens_per_frame, Tensor& dst, bool accumulate) override;
  void reconstruct_frames_delta(const Tensor& anchor_rows, const std::vector<int32_t>& anchors,
                                int64_t tokens_per_frame, Tensor& x) override;

  void patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) override;
  void unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f, int64_t grid_h,
                  int64_t grid_w, Tensor& out) override;

  void conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
              Tensor& out) override;
  void channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) override;
  void upsample_nearest2x(const Tensor& x, Tensor& out) override;
  void frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;
  void copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst, int64_t dst_c,
                   int64_t dst_f, int64_t channels, int64_t frames) override;
  void fill_zero(Tensor& x) override;
  void avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) override;
  void dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) override;
  void space_to_channels2(const Tensor& x, Tensor& out, bool inverse) override;

  cudaStream_t stream() const { return ctx_->stream; }
  MemoryStats memory_stats() const;
  void reset_peak_memory();
  int64_t memory_in_use() const override { return static_cast<int64_t>(memory_stats().in_use); }
  int64_t memory_peak() const override { return static_cast<int64_t>(memory_stats().peak); }
  void reset_memory_peak() override { reset_peak_memory(); }

 private:
  const float* rope_table(int64_t head_dim, int positions);
  VideoEngine& video();

  std::shared_ptr<DeviceContext> ctx_;
  GemmEngine* gemm_ = nullptr;
  AttentionEngine* attn_ = nullptr;
  VideoEngine* video_ = nullptr;  // made on the first VAE op
  Tensor rope_table_;
  int64_t rope_head_dim_ = 0;
  int rope_positions_ = 0;
};

// gemm.cpp: y[M,N] = x[M,K] w[N,K]^T (+ bias) (GELU-tanh), x/w BF16, y BF16 or F32, fp32 compute.
// The bias/GELU epilogue is fused when `epilogue` is true (y BF16).
void gemm_bf16(GemmEngine& e, const void* x, const void* w, void* y, bool y_f32, int64_t m,
               int64_t n, int64_t k, const void* bias, bool gelu, const std::string& ctx);
// attention.cpp: false when cuDNN cannot run the shape (the caller falls back).
bool attention_cudnn(AttentionEngine& e, const void* q, const void* k, const void* v, void* out,
                     int64_t lq, int64_t lk, int64_t heads, int64_t head_dim,
                     const std::string& ctx);

}  // namespace fisdit::cuda
