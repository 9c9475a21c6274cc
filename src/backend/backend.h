#pragma once
// The op set the models use. A model calls these on tensors that live on the backend's device and
// never learns which backend runs it. CPU (reference, fp32) implements all of them; the CUDA
// backend implements the same set on bf16/fp32 device tensors.
//
// Why named ops and not a graph of ops (ggml): at this size (a few dozen ops, one model family)
// a named op with its contract written here is clearer than a graph builder, and each op can be
// tested on its own against the CPU reference. Every public op checks its arguments once, in
// backend.cpp, then calls the backend's do_<op>. Adding an op costs: its declaration here with
// its contract and its check in backend.cpp, a CPU reference (cpu/), a CUDA implementation
// (cuda/, dispatch next to its kernel), a CPU test against float64 (tests/backend/) and a GPU
// test against the CPU (tests/cuda/).
//
// Layout conventions: activations are row-major [tokens, channels]; attention tensors are
// [tokens, heads, head_dim]; a video latent is [C, F, H, W]. Frames of a token sequence are
// contiguous runs of `tokens_per_frame` rows (FIS.md, Terms).
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/quantize.h"
#include "core/tensor.h"

namespace fisdit {

// GeluTanh: nn.GELU(approximate='tanh'); Gelu: the exact nn.GELU() (erf).
enum class Activation : uint8_t { None, GeluTanh, Silu, Gelu };

// Per-token modulation rows (the official `e0`/`e` tensors without the redundant copies): a table
// [rows, chunks, dim] and, when rows differ per token (TI2V), an I32 [tokens] row index.
// With no index every token uses row 0.
struct Modulation {
  Tensor table;       // F32 [rows, chunks, dim]
  Tensor token_rows;  // I32 [tokens], or undefined
  int64_t chunks() const { return table.dim(1); }
};

// One chunk of a Modulation, as ops take it.
struct ModChunk {
  const Modulation* mod = nullptr;
  int chunk = 0;
};

// Positions of the tokens of a (possibly gathered) sequence for 3D RoPE: frame run i holds the
// tokens of latent frame frames[i], each run is height x width tokens in (h, w) order.
// Each head's channels are head_dim / 2 adjacent pairs: the first axis_pairs[0] rotate with the
// frame index, the next axis_pairs[1] with the row, the last axis_pairs[2] with the column, each
// part with its own frequencies theta^(-2j / (2 * pairs of the part)). {0, 0, 0} is Wan's split
// (c = head_dim / 2: c - 2 * (c / 3), c / 3, c / 3); HunyuanVideo 1.5 gives {8, 28, 28}, theta 256.
struct RopeGrid {
  std::vector<int32_t> frames;
  int height = 0;
  int width = 0;
  std::array<int, 3> axis_pairs = {0, 0, 0};
  double theta = 10000.0;
  int64_t tokens() const { return static_cast<int64_t>(frames.size()) * height * width; }
  // The pairs per axis for `head_dim` (Wan's split when axis_pairs is {0, 0, 0}).
  std::array<int, 3> pairs_for(int64_t head_dim) const;
};

// A video VAE convolution (see Backend::conv3d). Spatial zero padding may be asymmetric (Wan's
// nn.ZeroPad2d((0, 1, 0, 1)) before a stride-2 conv); the time axis is never padded here (causal
// padding is the caller's job, see models/wan/vae.cpp).
struct Conv3dParams {
  int stride_t = 1, stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
};
// Output shape [To, Ho, Wo, Cout] of conv3d for input [T, H, W, Cin] and weight
// [Cout, kt, kh, kw, Cin]; throws fisdit::Error naming the op when the sizes do not fit.
Shape conv3d_output_shape(const Shape& x, const Shape& w, const Conv3dParams& p);

// Multiply-add FLOPs (2 each) of the ops the backend ran, for checking the analytic counters
// against what actually ran: matrix products, attention products (the DiTs' and the video VAEs'
// frame attention), and the video VAEs' convolutions.
struct FlopCounter {
  double linear = 0;
  double attention = 0;
  double conv = 0;
  double total() const { return linear + attention + conv; }
  void reset() { linear = attention = conv = 0; }
  FlopCounter& operator+=(const FlopCounter& o) {
    linear += o.linear;
    attention += o.attention;
    conv += o.conv;
    return *this;
  }
  FlopCounter operator-(const FlopCounter& o) const {
    return {linear - o.linear, attention - o.attention, conv - o.conv};
  }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // Storage types the model asks for: matrices and vectors of weights, and the activations
  // between ops (LN outputs, q/k/v, branch outputs). The residual stream, modulation and
  // timestep embeddings stay F32 on every backend, as in the official code.
  virtual DType weight_dtype() const { return DType::F32; }
  virtual DType activation_dtype() const { return DType::F32; }
  // The dtype of the video VAE ops' tensors (see conv3d): F32 by default; set_video_dtype
  // changes it where the backend runs another (CUDA: BF16 by default, F32 for the fp32 path);
  // throws naming the dtype where it does not.
  DType video_dtype() const { return video_dtype_; }
  virtual void set_video_dtype(DType dtype);
  // --vae-precision: "bf16" or "fp32" sets the video dtype, "" keeps the backend's default;
  // anything else, or a dtype the backend does not run, throws naming the flag.
  void set_video_precision(const std::string& precision);

  // Memory. `empty` contents are unspecified. Upload converts host data to `dtype` on the device.
  // What a backend can store is its own, so these are virtual and check their own arguments.
  virtual Tensor empty(const Shape& shape, DType dtype = DType::F32) = 0;
  virtual Tensor upload(const Tensor& host, DType dtype = DType::F32) = 0;
  virtual Tensor download(const Tensor& t) = 0;  // host F32 copy
  virtual void synchronize() {}
  // Bytes of device memory held by live tensors now, and the most held at once since the last
  // reset_memory_peak(); -1 where the backend does not track them (the CPU backend).
  virtual int64_t memory_in_use() const { return -1; }
  virtual int64_t memory_peak() const { return -1; }
  virtual void reset_memory_peak() {}
  // Bytes the backend could still allocate now (free device memory and what its pool holds
  // unused, within the memory limit); -1 where it does not know (the CPU backend without a limit).
  virtual int64_t memory_free() const { return -1; }
  // The memory budget (--gpu-memory-limit). `limit`: bytes of device memory the backend may hold
  // at once; an allocation past it fails as running out of GPU memory does (the error names the
  // limit), as on a card of that size. `reserve`: of those, what a model that places its weights
  // (models/offload.h) leaves free for the activations of the run at hand. The CPU backend applies
  // the same limit to the tensors it holds (and reports them as memory_in_use while a limit is
  // set), so the logic is tested without a GPU.
  struct MemoryBudget {
    int64_t limit = -1;  // -1: none (the device's own size)
    int64_t reserve = 0;
  };
  virtual void set_memory_budget(const MemoryBudget& budget) { budget_ = budget; }
  const MemoryBudget& memory_budget() const { return budget_; }

  // Weight streaming (models/offload.h): host memory the device copies from at full speed
  // (page-locked on CUDA), copies on a second stream that overlap the ops, and events ordering
  // the two. The defaults (CPU) copy at once and need no ordering.
  // An event: a point in the ops' stream or the end of a copy; undefined = already passed.
  struct Event {
    std::shared_ptr<void> handle;
  };
  // An uninitialised host tensor the backend copies from asynchronously.
  virtual Tensor pinned_host(const Shape& shape, DType dtype);
  // The point the ops queued so far reach.
  virtual Event record() { return {}; }
  // Copies host `src` into device `dst` (same bytes) once `after` has passed, without waiting
  // for it; ops that read `dst` must wait() for the returned event first, and `src` must live
  // until then.
  virtual Event copy_async(const Tensor& src, Tensor& dst, const Event& after);
  // Ops queued from now on run after `event`.
  virtual void wait(const Event& event) { (void)event; }
  // The bytes of host tensor `host` on the device as they are (same shape and dtype): a weight
  // loaded ahead. Unlike every other call, it (and memory_free()) may be made from another thread
  // while this one runs ops: the copy runs on a stream of its own, beside them, and has finished
  // when the call returns. Default: upload(host, host.dtype()).
  virtual Tensor upload_beside(const Tensor& host);

  // A tensor of N(mean, stddev^2) values, deterministic in `seed`, made where the backend keeps
  // tensors (the CUDA backend draws them on the GPU, so benchmarks never build host copies of
  // large random weights). Default: drawn on the host, then uploaded.
  virtual Tensor random_normal(const Shape& shape, DType dtype, float mean, float stddev,
                               uint64_t seed);

  // Graphs: the ops a body queues, recorded once and replayed as one launch (CUDA graphs), which
  // spares the host its per-op work and the GPU its gaps between kernels. What a replay reads and
  // writes is fixed when it is recorded: the same tensors (addresses) every time, with their
  // contents as they are then. So the body queues device work only: no host<->device transfers,
  // no downloads or synchronizations, no tensor made inside it kept beyond it, and every lazily
  // built cache (GEMM algorithms, attention plans, tables) already filled by an earlier run of the
  // same work. A body that breaks this throws from capture, naming the op.
  //
  // `graphs()` says whether the models use them (FISDIT_CUDA_GRAPHS=1 on CUDA; off by default);
  // set_graphs switches it. The CPU backend records the body itself and runs it again at each
  // replay: the same contract, so the logic that keys and refills graphs is tested without a GPU.
  struct Graph {
    std::shared_ptr<void> handle;
    FlopCounter flops;  // what one replay runs (counted when it is recorded, added per replay)
    explicit operator bool() const { return handle != nullptr; }
  };
  bool graphs() const { return graphs_; }
  void set_graphs(bool on) { graphs_ = on; }
  Graph capture(const std::function<void()>& body);
  void replay(const Graph& graph);
  // How many graphs were recorded and replayed since the backend was made (for the logs).
  struct GraphCounts {
    int64_t recorded = 0, replayed = 0;
  };
  const GraphCounts& graph_counts() const { return graph_counts_; }

  // ---- the ops: each checks its arguments (backend.cpp), then runs the backend's do_<op>.
  // Same element count and dtype; either side may be a host tensor (then the copy has finished
  // when copy returns).
  void copy(const Tensor& src, Tensor& dst);
  // An 8-bit float tensor (F8_E4M3 / F8_E5M2, on the host or the device) widened with one scale:
  // out[i] = dtype(float(stored[i]) * scale) in fp32 arithmetic, rounded once to nearest even
  // (dtype F32 or BF16), where the backend keeps tensors. A scaled fp8 checkpoint's weights: the
  // CUDA backend copies the 1-byte codes and widens them on the GPU. Default: on the host, then
  // uploaded.
  Tensor dequantize(const Tensor& stored, float scale, DType dtype);

  // y[M,N] = act(x[M,K] . w[N,K]^T + bias[N])
  void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
              Activation act = Activation::None);
  // --precision fp8. quantize_rows: a 2-D F32/BF16 tensor as E4M3 codes with one F32 scale per
  // row (core/quantize.h: scale = amax / 448, round to nearest even), made where the backend
  // keeps tensors; the CUDA backend gives the same bits as the host function.
  Fp8Rows quantize_rows(const Tensor& x);
  // y[M,N] = act(x . w^T + bias) with x [M,K] and w [N,K] both given as E4M3 rows with their
  // scales (x per token, w per output channel): products of the codes summed in fp32, then
  // scaled by x's row scale and w's row scale. The CPU backend computes it (the reference); a
  // backend without it throws saying so. K must be a multiple of 16 (the FP8 tensor cores'
  // granularity).
  void linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                  Activation act = Activation::None);
  // The same with x quantized here first (quantize_rows). A caller with several matrices on one
  // input quantizes it once and passes the Fp8Rows.
  void linear_fp8(const Tensor& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                  Activation act = Activation::None);
  void activation(const Tensor& x, Tensor& y, Activation act);
  // y = LN(x) (over the last dim, optional affine) then, if given, y * (1 + scale) + shift.
  // x is the F32 residual stream.
  void layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, Tensor& y,
                  ModChunk shift = {}, ModChunk scale = {});
  // layer_norm into a tensor of the activation dtype, then quantize_rows of it (the input of fp8
  // matrices): the same codes and scales, bit for bit, made where the backend can in one pass that
  // never writes the normalized activations (the CUDA backend).
  Fp8Rows layer_norm_fp8(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                         ModChunk shift = {}, ModChunk scale = {});
  // y = x * rsqrt(mean(x^2) + eps) * weight over the last dim.
  void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
  // In place on x [tokens, heads, head_dim]: rotate adjacent channel pairs by the 3D positions of
  // `grid` (Wan split: frame/height/width parts of head_dim/2 pairs, theta 10000).
  void rope_3d(Tensor& x, const RopeGrid& grid);
  // In place on x [tokens, heads * head_dim]: rms_norm over the full width (all heads together,
  // as Wan's q/k norms), then rope_3d per head. The default runs the two ops; a backend may
  // fuse them (one read and one write of q or k instead of two each).
  void rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                     const RopeGrid& grid);
  // out[Lq,H,d] = softmax(q k^T / sqrt(d)) v, no mask.
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);
  // The same with q, k and v each rounded to FP8 E4M3 with one scale per tensor
  // (round_e4m3_per_tensor: amax / 448), k and v first less their per-channel means over the
  // keys (v's added back to the output), the products summed and the softmax taken in fp32
  // (--precision fp8). The CUDA backend runs cuDNN's FP8 flash attention, which also rounds the
  // probabilities to E4M3 before P.V; the default (the CPU reference) rounds q, k and v on the
  // host and runs attention() on them. head_dim must be a multiple of 16.
  void attention_fp8(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);

  // A decoder language model's self-attention (Qwen2.5's, HunyuanVideo 1.5's text encoder):
  // q, out [L, H, d]; k, v [L, Hkv, d] with H a multiple of Hkv (grouped query attention: query
  // head h reads key/value head h / (H / Hkv)); query i sees keys 0..i (the causal mask); logits
  // scaled by 1/sqrt(d), softmax in fp32.
  void causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);

  // umT5 self-attention (wan/modules/t5.py T5Attention) on q, k, v, out [L, heads, head_dim]:
  // logits q.k with NO 1/sqrt(head_dim) scaling plus table[bucket_of[j - i + L - 1], h] (table
  // F32 [num_buckets, heads]); keys with key_valid[j] == 0 get float's lowest value added
  // instead (masked_fill(finfo.min)); softmax over keys in fp32.
  void attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& table,
                          const std::vector<int32_t>& bucket_of,
                          const std::vector<uint8_t>& key_valid, Tensor& out);

  // x *= y elementwise (same element count).
  void mul(Tensor& x, const Tensor& y);
  // x += y * gate (gate per token from its modulation row; plain add without a gate); x F32.
  void add(Tensor& x, const Tensor& y, ModChunk gate = {});
  // x *= gate
  void mul_gate(Tensor& x, ModChunk gate);
  // x += alpha * y
  void add_scaled(Tensor& x, const Tensor& y, float alpha);
  // w += scale * up @ down, all F32 and fp32 arithmetic (no TF32): w [rows, cols] (any shape of
  // rows * cols elements whose first dim is rows), up [rows, rank], down [rank, cols]. The LoRA
  // merge of a weight on the backend that will keep it.
  void add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale);
  // out = a - b
  void sub(const Tensor& a, const Tensor& b, Tensor& out);
  // out[r, :] = a[r, :] + row[:] for every row r (out may alias a).
  void add_row(const Tensor& a, const Tensor& row, Tensor& out);

  // Rows of `src` ([frames * tokens_per_frame, ...], any dtype) for `frames`, packed in order.
  void gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                     int64_t tokens_per_frame, Tensor& dst);
  // FIS.md linear reconstruction: anchors (sorted, including 0 and T-1) hold `src` rows; every
  // frame of `dst` [T * tokens_per_frame, D] (F32) gets the anchor value or the interpolation
  // between its nearest anchors. With accumulate, dst += instead of dst =.
  void interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                          int64_t tokens_per_frame, Tensor& dst, bool accumulate);
  // FIS.md reconstruction of a whole block in one pass: `anchor_rows` [A * tokens_per_frame, D]
  // (F32) holds the anchor frames' hidden state after the block, `x` [T * tokens_per_frame, D]
  // (F32) the full hidden state before it. Every skipped frame gets
  //   x_f += ((b - f) (Y_a - x_a) + (f - a) (Y_b - x_b)) / (b - a)
  // (the interpolated update of its nearest anchors), then anchor frames become Y exactly.
  // Because the interpolation is linear, this equals reconstructing each residual branch of
  // the block separately and adding it (module granularity), and it is the delta operator of
  // block granularity.
  void reconstruct_frames_delta(const Tensor& anchor_rows, const std::vector<int32_t>& anchors,
                                int64_t tokens_per_frame, Tensor& x);

  // [C, F, H, W] -> [F/pt * H/ph * W/pw, C*pt*ph*pw] with patch vectors ordered (c, i, j, l) as
  // a Conv3d weight [dim, C, pt, ph, pw] flattens; tokens ordered (f, h, w). F32.
  void patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out);
  // Inverse layout of the head output: [tokens, pt*ph*pw*C] (C fastest) -> [C, F, H, W]. F32.
  void unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f, int64_t grid_h,
                  int64_t grid_w, Tensor& out);

  // ---- video VAE ops on channels-last video tensors [T, H, W, C] (frames, rows, columns, then
  // the channels, fastest). Their dtype is video_dtype() (F32, the CPU's fp32 reference; BF16 on
  // CUDA, fp32 accumulation); all of one op's video tensors share it, and its parameters (conv
  // bias, norm gamma) are F32.
  // out[t, i, j, co] = bias[co] + sum over (dt, dh, dw, ci) of
  //   w[co, dt, dh, dw, ci] * x[t*st + dt, i*sh - pad_top + dh, j*sw - pad_left + dw, ci]
  // (zero outside the frame): x [T, H, W, Cin], w [Cout, kt, kh, kw, Cin] (x's dtype), out
  // conv3d_output_shape; bias may be null.
  void conv3d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv3dParams& p,
              Tensor& out);
  // The Wan VAE RMS_norm over the channels of every pixel: x / max(||x||_2, 1e-12) * sqrt(C) *
  // gamma[c], then SiLU when `silu`. x and out [..., C], gamma C values.
  void channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out);
  // Nearest-neighbour 2x spatial upsampling: [T, H, W, C] -> [T, 2H, 2W, C].
  void upsample_nearest2x(const Tensor& x, Tensor& out);
  // Single-head attention over the pixels of each frame (q, k, v, out [T, H, W, C]):
  // out[t] = softmax(q_t k_t^T / sqrt(C)) v_t, q_t the [H W, C] rows of frame t.
  void frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);
  // dst[dst_f + f, ..., dst_c + i] = src[src_f + f, ..., src_c + i] for f < frames, i < channels:
  // a block of whole frames and a channel range; src and dst [T, H, W, C] with the same H, W.
  void copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst, int64_t dst_c,
                   int64_t dst_f, int64_t channels, int64_t frames);
  void fill_zero(Tensor& x);
  // out[b, j, i] = x[b, i, j] for x [batch, rows, cols] (any shape of that many values), out the
  // same count and dtype (F32 or BF16): a conv weight [Cout, Cin, k...] to its channels-last form
  // [Cout, k..., Cin] (batch Cout, rows Cin, cols the taps) where the weights already live.
  void batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols, Tensor& out);
  // Wan 2.2 AvgDown3D (front zero padding of the frames to a multiple of ft, then the mean of
  // each group of the flattened (c, ft, fs, fs) neighbourhood, vae2_2.py's channel order):
  // x [T, H, W, C] -> out [(T + pad) / ft, H / fs, W / fs, Co].
  void avg_down3d(const Tensor& x, int ft, int fs, Tensor& out);
  // Wan 2.2 DupUp3D: [T, H, W, C] -> out [T*ft - skip, H*fs, W*fs, Co], dropping the first
  // `skip` output frames (ft - 1 on the first chunk).
  void dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out);
  // Wan 2.2 VAE patchify: [T, 2H, 2W, C] -> [T, H, W, 4C], channel c*4 + r*2 + q holds pixel
  // (2h + q, 2w + r); `inverse` maps back.
  void space_to_channels2(const Tensor& x, Tensor& out, bool inverse);

  // ---- HunyuanVideo 1.5 VAE ops (hyvideo/models/autoencoders/hunyuanvideo_15_vae.py), video
  // tensors [T, H, W, C] as above:
  // `x` padded by repeating its edges (CausalConv3d's F.pad(mode='replicate')): `front` copies
  // of frame 0 before the frames, `side` copies of the edge rows and columns on each side.
  // out [T + front, H + 2 side, W + 2 side, C].
  void pad_replicate(const Tensor& x, int front, int side, Tensor& out);
  // einops "c (t r1) (h r2) (w r3) -> (r1 r2 r3 c) t h w" with r1 = rt (1 or 2), r2 = r3 = 2, in
  // channels-last order: x [T rt, 2H, 2W, C] -> out [T, H, W, 4 rt C]; `inverse` maps back.
  void space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse);
  // out[..., c] = the mean over g < groups of x[..., c * groups + g]: [..., C groups] -> [..., C].
  void channel_group_mean(const Tensor& x, int groups, Tensor& out);
  // out[..., c * repeats + r] = x[..., c] (repeat_interleave on the channels).
  void channel_repeat(const Tensor& x, int repeats, Tensor& out);
  // Single-head attention over every pixel of every frame, each query seeing the pixels of its
  // own and the earlier frames (the VAE's mid attention with its frame-causal mask):
  // out[t] = softmax(q_t k_{<=t}^T / sqrt(C)) v_{<=t}; q, k, v, out [T, H, W, C].
  void causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);

  FlopCounter& flops() { return flops_; }

 protected:
  // What a backend implements: each op above, called only after its arguments passed the
  // checks in backend.cpp (defined tensors, shapes and counts that agree, F32 where the contract
  // says so, frame lists in range, anchors sorted with both ends). An implementation checks only
  // what is its own: that tensors live on its device, the dtypes its kernels take, its limits.
  virtual void do_copy(const Tensor& src, Tensor& dst) = 0;
  // Graph recording and replay (capture, replay). Default: the body is kept and run again.
  virtual std::shared_ptr<void> do_capture(const std::function<void()>& body);
  virtual void do_replay(const std::shared_ptr<void>& handle);
  virtual Tensor do_dequantize(const Tensor& stored, float scale, DType dtype);  // host codes
  virtual void do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                         Activation act) = 0;
  virtual Fp8Rows do_quantize_rows(const Tensor& x);  // on the host, then uploaded
  virtual void do_linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                             Activation act);  // throws
  virtual void do_activation(const Tensor& x, Tensor& y, Activation act) = 0;
  virtual void do_layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                             Tensor& y, ModChunk shift, ModChunk scale) = 0;
  virtual Fp8Rows do_layer_norm_fp8(const Tensor& x, const Tensor* weight, const Tensor* bias,
                                    float eps, ModChunk shift, ModChunk scale);  // the two ops
  virtual void do_rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) = 0;
  virtual void do_rope_3d(Tensor& x, const RopeGrid& grid) = 0;
  virtual void do_rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                                const RopeGrid& grid);  // rms_norm, then rope_3d
  virtual void do_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) = 0;
  virtual void do_attention_fp8(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out);
  virtual void do_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                   Tensor& out) = 0;
  virtual void do_attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& table, const std::vector<int32_t>& bucket_of,
                                     const std::vector<uint8_t>& key_valid, Tensor& out) = 0;
  virtual void do_mul(Tensor& x, const Tensor& y) = 0;
  virtual void do_add(Tensor& x, const Tensor& y, ModChunk gate) = 0;
  virtual void do_mul_gate(Tensor& x, ModChunk gate) = 0;
  virtual void do_add_scaled(Tensor& x, const Tensor& y, float alpha) = 0;
  virtual void do_add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) = 0;
  virtual void do_sub(const Tensor& a, const Tensor& b, Tensor& out) = 0;
  virtual void do_add_row(const Tensor& a, const Tensor& row, Tensor& out) = 0;
  virtual void do_gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                                int64_t tokens_per_frame, Tensor& dst) = 0;
  virtual void do_interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                                     int64_t tokens_per_frame, Tensor& dst, bool accumulate) = 0;
  virtual void do_reconstruct_frames_delta(const Tensor& anchor_rows,
                                           const std::vector<int32_t>& anchors,
                                           int64_t tokens_per_frame, Tensor& x) = 0;
  virtual void do_patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) = 0;
  virtual void do_unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                             int64_t grid_h, int64_t grid_w, Tensor& out) = 0;
  virtual void do_conv3d(const Tensor& x, const Tensor& w, const Tensor* bias,
                         const Conv3dParams& p, Tensor& out) = 0;
  virtual void do_channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu,
                                   Tensor& out) = 0;
  virtual void do_upsample_nearest2x(const Tensor& x, Tensor& out) = 0;
  virtual void do_frame_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                  Tensor& out) = 0;
  virtual void do_copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst,
                              int64_t dst_c, int64_t dst_f, int64_t channels, int64_t frames) = 0;
  virtual void do_fill_zero(Tensor& x) = 0;
  virtual void do_batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols,
                                  Tensor& out) = 0;
  virtual void do_avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) = 0;
  virtual void do_dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) = 0;
  virtual void do_space_to_channels2(const Tensor& x, Tensor& out, bool inverse) = 0;
  virtual void do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) = 0;
  virtual void do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) = 0;
  virtual void do_channel_group_mean(const Tensor& x, int groups, Tensor& out) = 0;
  virtual void do_channel_repeat(const Tensor& x, int repeats, Tensor& out) = 0;
  virtual void do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                         Tensor& out) = 0;

  FlopCounter flops_;
  MemoryBudget budget_;
  bool graphs_ = false;
  GraphCounts graph_counts_;
  DType video_dtype_ = DType::F32;
};

// A conv weight [Cout, Cin, k...] (on the host or the backend, any float dtype) as the video VAE
// ops take it: channels-last [Cout, k..., Cin] on `backend`, in its video dtype.
Tensor conv_weight_channels_last(Backend& backend, const Tensor& w);

std::unique_ptr<Backend> make_cpu_backend();
// The CUDA backend lives in its own library; a program linking it registers its factory.
using BackendFactory = std::unique_ptr<Backend> (*)();
using DeviceCountFn = int (*)();
void register_cuda_backend(BackendFactory factory, DeviceCountFn count = nullptr);
// "cuda" when the CUDA backend is registered and a GPU is present, else "cpu": the default of
// --device in the commands that run on either.
std::string default_device();
// Throws fisdit::Error saying why when the CUDA backend is not available in this build or machine.
std::unique_ptr<Backend> make_backend(const std::string& device);

// The settings a run gives its backend (--gpu-memory-limit, --vae-precision).
struct BackendSettings {
  double gpu_memory_limit_gib = 0;  // > 0: the memory budget in GiB; 0: the whole device
  std::string video_precision;      // set_video_precision's argument ("": the default)
};
// make_backend with those settings applied; a limit that is not a number >= 0 throws naming
// --gpu-memory-limit.
std::unique_ptr<Backend> make_backend(const std::string& device, const BackendSettings& settings);

}  // namespace fisdit
