#pragma once
// What every file of the CUDA backend shares: the error checks every CUDA call and launch goes
// through, the element types and by-value argument structs the kernels take, the device context
// each tensor keeps alive, the CudaBackend class and the argument helpers of its op files. Each
// kernel family declares its launchers in its own .cuh (elementwise, norm, frames, video, t5);
// each library engine a CudaBackend owns has its own .h (gemm, attention, video_engine).
//
// Files: device.cpp (context, memory pool, transfers), profile.cpp (FISDIT_CUDA_PROFILE),
// checks.cpp (the helpers below), and one op file per family next to what it launches:
// matmul.cpp (gemm.cpp, attention.cpp / .cu), norm.cpp, elementwise.cpp, frames.cpp, video.cpp
// (and video_engine.cpp), t5.cpp.
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/attention.h"  // AttentionEngine (cuDNN)
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/gemm.h"          // GemmEngine (cuBLASLt)
#include "backend/cuda/video_engine.h"  // VideoEngine (cuDNN convolutions, cuBLAS)
#include "backend/tuning_cache.h"

namespace fisdit::cuda {

// Throws fisdit::Error "<op> <ctx>: <what>".
[[noreturn]] void fail(const char* op, const std::string& ctx, const std::string& what);
inline void require(bool ok, const char* op, const std::string& what) {
  if (!ok) fail(op, "", what);
}
// Every CUDA runtime call goes through this: the error names the op and the shapes (`ctx`).
void check(cudaError_t err, const char* op, const std::string& ctx);
// After a kernel launch: launch errors, and with FISDIT_CUDA_SYNC=1 also execution errors (not
// while the stream is recorded into a graph, whose replay waits instead).
void check_launch(const char* op, const std::string& ctx, cudaStream_t stream);
bool sync_after_ops();                // FISDIT_CUDA_SYNC is set (read once)
bool capturing(cudaStream_t stream);  // `stream` is being recorded into a graph
// Throws "<op> <ctx>: <what> while a graph is recorded ..." when `stream` is being captured
// (Backend::capture): before work that measures (events waited for) or grows a kept buffer, which
// a recording cannot hold. Such work belongs to the first run of a shape, before any recording.
void refuse_in_capture(cudaStream_t stream, const char* op, const std::string& ctx,
                       const char* what);

// Element types the kernels read and write.
enum class EType : int { F32 = 0, BF16 = 1 };
EType etype(DType t, const char* op, const char* what);  // F32 or BF16, else throws

// Per-frame data passed by value to kernels (no host->device copies, graph friendly).
constexpr int kMaxFrames = 128;
struct FrameList {
  int count = 0;
  int32_t frame[kMaxFrames];
};

// A modulation chunk as kernels see it: row r of token t is token_rows ? token_rows[t] : 0.
struct ModArg {
  const float* table = nullptr;  // [rows, chunks, dim]
  const int32_t* token_rows = nullptr;
  int chunks = 0;
  int chunk = 0;
};

// ---- the context every tensor of a backend keeps alive
struct DeviceContext {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  size_t device_total = 0;
  int64_t limit = -1;                    // Backend::MemoryBudget::limit
  cudaStream_t copy_stream = nullptr;    // weight streaming (copy_async), made on first use
  cudaStream_t upload_stream = nullptr;  // upload_beside's, made on its first call
  std::once_flag upload_stream_made;
  ~DeviceContext();
};

// The ops' arguments reach the do_ methods checked by Backend (backend.cpp); what they check
// here is the CUDA backend's own: tensors on the GPU, the dtypes the kernels take, kMaxFrames.
class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;
  Device device() const override { return Device::CUDA; }
  std::string name() const override { return "cuda"; }
  DType weight_dtype() const override { return DType::BF16; }
  DType activation_dtype() const override { return DType::BF16; }
  // F32 or BF16 (video.cpp); a new backend starts with FISDIT_VAE_PRECISION's (video_engine.h).
  void set_video_dtype(DType dtype) override;

  Tensor empty(const Shape& shape, DType dtype) override;
  Tensor upload(const Tensor& host, DType dtype) override;
  Tensor download(const Tensor& t) override;
  void synchronize() override;
  Tensor random_normal(const Shape& shape, DType dtype, float mean, float stddev,
                       uint64_t seed) override;
  void set_memory_budget(const MemoryBudget& budget) override;
  Tensor pinned_host(const Shape& shape, DType dtype) override;
  Event record() override;
  Event copy_async(const Tensor& src, Tensor& dst, const Event& after) override;
  void wait(const Event& event) override;
  Tensor upload_beside(const Tensor& host) override;

  cudaStream_t stream() const { return ctx_->stream; }
  MemoryStats memory_stats() const;
  void reset_peak_memory();
  int64_t memory_in_use() const override {
    const MemoryStats s = memory_stats();
    return static_cast<int64_t>(s.in_use + s.graphs);
  }
  int64_t memory_peak() const override {
    const MemoryStats s = memory_stats();
    return static_cast<int64_t>(s.peak + s.graphs_peak);
  }
  void reset_memory_peak() override { reset_peak_memory(); }
  int64_t memory_free() const override;

 private:
  // device.cpp
  void do_copy(const Tensor& src, Tensor& dst) override;
  std::shared_ptr<void> do_capture(const std::function<void()>& body) override;
  void do_replay(const std::shared_ptr<void>& handle) override;
  Tensor do_dequantize(const Tensor& stored, float scale, DType dtype) override;
  // matmul.cpp
  void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                 Activation act) override;
  Fp8Rows do_quantize_rows(const Tensor& x) override;
  void do_linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                     Activation act) override;
  void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;
  void do_attention_fp8(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;
  // do_attention's work without counting FLOPs (its callers do).
  void attention_bf16(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                      const std::string& ctx);
  // Which fp8 attention runs (FISDIT_FP8_ATTENTION), and the own kernel's path.
  enum class Fp8AttentionKernel {
    OwnPoly,
    OwnMufu,
    OwnWs,
    OwnWsMufu,
    OwnWs224,
    Cudnn,
    Bf16,
    Measured
  };
  static Fp8AttentionKernel fp8_attention_kernel();
  // Runs one call with `kernel` (not Measured); false: it cannot run this call (cuDNN has no fp8
  // graph for it, or the own kernel does not run here). Counts no FLOPs.
  bool attention_fp8_with(Fp8AttentionKernel kernel, const Tensor& q, const Tensor& k,
                          const Tensor& v, Tensor& out, const std::string& ctx);
  // The fastest way for this call's shape, measured on its first call (measured_choice.h).
  Fp8AttentionKernel fp8_attention_measured(const Tensor& q, const Tensor& k, const Tensor& v,
                                            Tensor& out, const std::string& ctx);
  std::unique_ptr<TuningCache> attention_tuning_;  // made on the first measured choice
  struct Fp8AttentionScalars {
    Tensor slots_tensor, means;  // the scalars' slots; k's and v's means, [2, heads * head_dim]
    float* slots = nullptr;
    float *kmean = nullptr, *vmean = nullptr;
  };
  Fp8AttentionScalars fp8_attention_scalars(const Tensor& q, const Tensor& k, const Tensor& v,
                                            bool fp8_out, const std::string& ctx);
  void attention_fp8_own(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                         Fp8AttentionKernel kernel, const std::string& ctx);
  // norm.cpp
  void do_layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                     Tensor& y, ModChunk shift, ModChunk scale) override;
  Fp8Rows do_layer_norm_fp8(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                            ModChunk shift, ModChunk scale) override;
  void do_rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) override;
  void do_rope_3d(Tensor& x, const RopeGrid& grid) override;
  void do_rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                        const RopeGrid& grid) override;
  // (cos, sin) per (position, pair) for `grid`'s axis split and theta, made on the host in
  // float64 and kept until a grid needs another table.
  const float* rope_table(int64_t head_dim, const RopeGrid& grid, int positions);
  // elementwise.cpp
  void do_activation(const Tensor& x, Tensor& y, Activation act) override;
  void do_add(Tensor& x, const Tensor& y, ModChunk gate) override;
  void do_mul_gate(Tensor& x, ModChunk gate) override;
  void do_add_scaled(Tensor& x, const Tensor& y, float alpha) override;
  void do_add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) override;
  void do_sub(const Tensor& a, const Tensor& b, Tensor& out) override;
  void do_add_row(const Tensor& a, const Tensor& row, Tensor& out) override;
  // t5.cpp
  void do_attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& table,
                             const std::vector<int32_t>& bucket_of,
                             const std::vector<uint8_t>& key_valid, Tensor& out) override;
  void do_mul(Tensor& x, const Tensor& y) override;
  // frames.cpp
  void do_gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                        int64_t tokens_per_frame, Tensor& dst) override;
  void do_interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                             int64_t tokens_per_frame, Tensor& dst, bool accumulate) override;
  void do_reconstruct_frames_delta(const Tensor& anchor_rows, const std::vector<int32_t>& anchors,
                                   int64_t tokens_per_frame, Tensor& x) override;
  void do_patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) override;
  void do_unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                     int64_t grid_h, int64_t grid_w, Tensor& out) override;
  // video.cpp
  void do_conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
                 Tensor& out) override;
  void do_channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) override;
  void do_upsample_nearest2x(const Tensor& x, Tensor& out) override;
  void do_frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;
  void do_copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst, int64_t dst_c,
                      int64_t dst_f, int64_t channels, int64_t frames) override;
  void do_fill_zero(Tensor& x) override;
  void do_batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols,
                          Tensor& out) override;
  void do_avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) override;
  void do_dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) override;
  void do_space_to_channels2(const Tensor& x, Tensor& out, bool inverse) override;
  // video_hunyuan.cpp
  void do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) override;
  void do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) override;
  void do_channel_group_mean(const Tensor& x, int groups, Tensor& out) override;
  void do_channel_repeat(const Tensor& x, int repeats, Tensor& out) override;
  void do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                 Tensor& out) override;
  void do_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) override;
  // frame_attention, or with `causal` causal_video_attention (video.cpp).
  void video_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, bool causal);
  VideoEngine& video();
  // The element type of an op's video tensors (each named for the errors): on the GPU, F32 or
  // BF16, one for all of them (video.cpp).
  using VideoArg = std::pair<const Tensor*, const char*>;
  static EType video_type(const char* op, std::initializer_list<VideoArg> args);

  std::shared_ptr<DeviceContext> ctx_;
  GemmEngine* gemm_ = nullptr;
  AttentionEngine* attn_ = nullptr;
  VideoEngine* video_ = nullptr;  // made on the first VAE op
  Tensor rope_table_;
  std::vector<Tensor> rope_tables_old_;  // superseded tables, kept for what may still read them
  int64_t rope_head_dim_ = 0;
  int rope_positions_ = 0;
  std::array<int, 3> rope_pairs_ = {0, 0, 0};
  double rope_theta_ = 0;
};

// Milliseconds per launch of `launch` on `stream`: `warmups` untimed launches, then `runs`
// between two events, averaged (waits for the stream; refused while the stream is recorded).
// Exceptions of `launch` pass through; CUDA errors fail naming `op` and `where` (device.cpp).
float time_launches(cudaStream_t stream, int warmups, int runs, const std::function<void()>& launch,
                    const char* op, const std::string& where);

// What a tuning cache of this GPU and library versions is valid for: the GPU's name and compute
// capability, the driver, runtime and cuDNN versions (device.cpp).
std::string device_key();

// ---- argument helpers of the op files (checks.cpp, device.cpp)
std::string desc(const Tensor& t);  // "[shape] DTYPE"
// `t` is defined and on the GPU.
void require_device(const Tensor& t, const char* op, const char* what);
// A tensor from the context's stream-ordered pool, allocated in the order of `on` (default: the
// ops' stream) and freed in the ops' order; out of memory is an Error naming the size.
Tensor alloc_device(const std::shared_ptr<DeviceContext>& ctx, const Shape& shape, DType dtype,
                    const char* op, cudaStream_t on = nullptr);
// A modulation chunk (shapes checked by Backend) as kernels take it; its tensors on the GPU.
ModArg mod_arg(const ModChunk& m, const char* op);
// A frame list (indices checked by Backend) by value; at most kMaxFrames frames.
FrameList frame_list(const std::vector<int32_t>& frames, const char* op);

}  // namespace fisdit::cuda
