// The library calls of the video VAE ops on channels-last [T, H, W, C] tensors (NDHWC with
// N = 1), F32 or BF16:
// - 3D convolutions through cuDNN's convolution API. BF16: x, w, y BF16 in NDHWC (filter
//   KDHWC), fp32 accumulation on the tensor cores. F32: cuDNN sees either the NDHWC tensors or
//   NCDHW copies (transposes), per shape the faster (TF32 tensor cores unless FISDIT_VAE_TF32=0);
//   some shapes exist in one layout only (cuDNN has no fp32 NDHWC kernel for 96 -> 3 channels).
//   cuDNN's channels-last kernels want channel counts that are multiples of 8, so an NDHWC conv
//   with others (the VAE's 3 RGB or 12 patchified input channels, its 3 or 12 output channels)
//   runs on zero-padded copies: the input with zero channels appended, the weight with zero rows
//   and columns, and an output scratch whose first Cout channels are the result. Asymmetric
//   spatial padding (cuDNN pads symmetrically) goes into the same input copy.
// - The per-frame attention GEMMs through cuBLAS: F32 operands with fp32 GEMMs (no TF32), or
//   BF16 operands with fp32 scores, BF16 probabilities and fp32 accumulation.
// The convolution cuDNN sees (Problem) runs through one of cuDNN's two APIs (FISDIT_VAE_CONV_API):
// - legacy: cudnnConvolutionForward with the algorithm cudnnFindConvolutionForwardAlgorithmEx
//   measured fastest (ConvPlan);
// - graph: one convolution-forward operation of the backend API (cudnn_graph.h), whose engines
//   the legacy API does not all reach: PyTorch, which runs this API, took 5.07 ms on an H100 for
//   the BF16 NDHWC 96-channel conv at 720x1280 where the legacy API's best took 7.5 ms (and
//   2.30 against 3.12 ms at 384 channels, 180x320). The first kGraphCandidates engine configs of
//   the heuristics (mode A, then FALLBACK) that finalize within the workspace cap are timed on
//   the real operands and the fastest is kept (GraphConv). Engine configs are taken as the
//   legacy math types allow (config_refusal): none that reduces in reduced precision, and for
//   F32 without TF32 none on the tensor cores or converting its inputs down.
// By default each shape runs on the faster of the two.
// The fastest cuDNN algorithm (and F32 layout, and API) of each shape is measured on the first
// call and kept, in memory and in the tuning cache file of this GPU and library versions
// (backend/tuning_cache.h), so a later process finds it there instead of measuring again (the
// graph API's choice as its place in the heuristics' results, which are the same for a GPU and
// cuDNN version).
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/video.cuh"
#include "backend/cuda/video_engine.h"
#include "backend/tuning_cache.h"
#include "fisdit/error.h"

#if FISDIT_HAVE_CUDNN
#include <cudnn.h>

#include "backend/cuda/cudnn_graph.h"
#endif

namespace fisdit::cuda {

DType vae_precision() {
  const char* v = std::getenv("FISDIT_VAE_PRECISION");
  if (!v || !*v || std::strcmp(v, "bf16") == 0) return DType::BF16;
  if (std::strcmp(v, "fp32") == 0) return DType::F32;
  fail("cuda backend", "",
       std::string("FISDIT_VAE_PRECISION must be bf16 or fp32, got '") + v + "'");
}

bool vae_tf32_enabled() {
  const char* v = std::getenv("FISDIT_VAE_TF32");
  return !(v && std::strcmp(v, "0") == 0);
}

ConvLayout vae_conv_layout() {
  const char* v = std::getenv("FISDIT_VAE_CONV_LAYOUT");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return ConvLayout::Auto;
  if (std::strcmp(v, "ncdhw") == 0) return ConvLayout::Ncdhw;
  if (std::strcmp(v, "ndhwc") == 0) return ConvLayout::Ndhwc;
  fail("conv3d", "",
       std::string("FISDIT_VAE_CONV_LAYOUT must be auto, ncdhw or ndhwc, got '") + v + "'");
}

ConvApi vae_conv_api() {
  const char* v = std::getenv("FISDIT_VAE_CONV_API");
  if (!v || !*v || std::strcmp(v, "auto") == 0) return ConvApi::Auto;
  if (std::strcmp(v, "legacy") == 0) return ConvApi::Legacy;
  if (std::strcmp(v, "graph") == 0) return ConvApi::Graph;
  fail("conv3d", "",
       std::string("FISDIT_VAE_CONV_API must be auto, legacy or graph, got '") + v + "'");
}

namespace {
bool conv_log() {
  const char* v = std::getenv("FISDIT_VAE_CONV_LOG");
  return v && *v && std::strcmp(v, "0") != 0;
}

// Stream-ordered scratch memory, freed when it goes out of scope.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t s, const std::string& ctx) : s_(s) {
    check(cudaMallocAsync(&p_, std::max<size_t>(bytes, 256), s), "conv3d", ctx + " (scratch)");
  }
  ~Scratch() { cudaFreeAsync(p_, s_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
  cudaStream_t s_;
};

void check_blas(cublasStatus_t st, const char* op, const std::string& ctx) {
  if (st != CUBLAS_STATUS_SUCCESS)
    fail(op, ctx, "cuBLAS call failed (status " + std::to_string(static_cast<int>(st)) + ")");
}

// cuBLAS takes 32-bit sizes.
int blas_int(int64_t v, const char* op, const std::string& ctx) {
  if (v > std::numeric_limits<int>::max())
    fail(op, ctx, "a dimension exceeds cuBLAS's 32-bit sizes; use a smaller --size");
  return static_cast<int>(v);
}

int64_t round_up8(int64_t v) { return (v + 7) / 8 * 8; }

#if FISDIT_HAVE_CUDNN
void check_dnn(cudnnStatus_t st, const char* what, const std::string& ctx) {
  if (st == CUDNN_STATUS_SUCCESS) return;
  std::string s = cudnnGetErrorString(st);
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0] != '\0') s += std::string(" [") + detail + "]";
  fail("conv3d", ctx, std::string("cuDNN ") + what + " failed: " + s);
}

int as_int(int64_t v, const std::string& ctx) {
  if (v > std::numeric_limits<int>::max())
    fail("conv3d", ctx, "a dimension exceeds cuDNN's 32-bit sizes; use a smaller --size");
  return static_cast<int>(v);
}

// The convolution cuDNN runs: its operands' dtype and layout, x [C, T, H, W], w
// [K, C, kt, kh, kw] and y [K, To, Ho, Wo] as cuDNN's descriptors name them (whatever the memory
// order), the strides and the symmetric spatial padding.
struct Problem {
  bool bf16 = false, channels_last = false, tf32 = false;
  std::array<int64_t, 4> x{};
  std::array<int64_t, 5> w{};
  std::array<int64_t, 4> y{};  // follows from the rest; kept to check cuDNN's output size
  std::array<int, 3> stride{};
  int pad_h = 0, pad_w = 0;
  auto tie() const { return std::tie(bf16, channels_last, tf32, x, w, y, stride, pad_h, pad_w); }
  bool operator<(const Problem& o) const { return tie() < o.tie(); }
  // As the cache keys it: the layout, the dtype, then the sizes.
  std::string text() const {
    char s[320];
    std::snprintf(
        s, sizeof s,
        "%s %s x=%lld,%lld,%lld,%lld w=%lld,%lld,%lld,%lld,%lld s=%d,%d,%d p=%d,%d "
        "tf32=%d",
        channels_last ? "ndhwc" : "ncdhw", bf16 ? "bf16" : "f32", static_cast<long long>(x[0]),
        static_cast<long long>(x[1]), static_cast<long long>(x[2]), static_cast<long long>(x[3]),
        static_cast<long long>(w[0]), static_cast<long long>(w[1]), static_cast<long long>(w[2]),
        static_cast<long long>(w[3]), static_cast<long long>(w[4]), stride[0], stride[1], stride[2],
        pad_h, pad_w, tf32 ? 1 : 0);
    return s;
  }
};

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  size_t workspace = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool tuned = false;
  float ms = 0;  // cuDNN's measured time of the chosen algorithm
};

// An op's shape as the F32 layout choice keys it (the caller's tensors, before any copy).
std::string op_text(const Conv3dArgs& a, bool tf32) {
  char s[320];
  std::snprintf(s, sizeof s,
                "layout f32 x=%lld,%lld,%lld,%lld w=%lld,%lld,%lld,%lld,%lld s=%d,%d,%d "
                "p=%d,%d,%d,%d tf32=%d",
                static_cast<long long>(a.xs[0]), static_cast<long long>(a.xs[1]),
                static_cast<long long>(a.xs[2]), static_cast<long long>(a.xs[3]),
                static_cast<long long>(a.ws[0]), static_cast<long long>(a.ws[1]),
                static_cast<long long>(a.ws[2]), static_cast<long long>(a.ws[3]),
                static_cast<long long>(a.ws[4]), a.stride[0], a.stride[1], a.stride[2], a.pad[0],
                a.pad[1], a.pad[2], a.pad[3], tf32 ? 1 : 0);
  return s;
}

// Engine configs of the graph API finalized and timed per problem (the first that finalize
// within the workspace cap, in the heuristics' order).
constexpr size_t kGraphCandidates = 8;
// The variant pack's tensor uids.
constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3;

// The largest of 16, 8, 4, 2, 1 bytes that x, w and y are all aligned to: the graph tensors'
// byte alignment (cuDNN picks kernels that rely on it). The engine's scratch and the backend's
// allocations are 256-byte aligned, so this is 16 unless a caller passes a view.
int64_t alignment_of(const void* x, const void* w, const void* y) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(w) |
                      reinterpret_cast<uintptr_t>(y);
  for (const int64_t a : {16, 8, 4, 2})
    if (v % static_cast<uintptr_t>(a) == 0) return a;
  return 1;
}

// A problem and the alignment of its operands: what a graph plan is made for.
struct GraphKey {
  Problem problem;
  int64_t align = 16;
  bool operator<(const GraphKey& o) const {
    if (problem < o.problem) return true;
    if (o.problem < problem) return false;
    return align < o.align;
  }
  // The tuning cache's key: the legacy plan's, marked.
  std::string text() const { return "graph " + problem.text() + " align=" + std::to_string(align); }
};

// The convolution as a graph-API operation and the plan kept for it (VideoEngine::graph_plan).
struct GraphConv {
  bool tuned = false;            // searched, or rebuilt from the cache, in this process
  bool ok = false;               // a plan runs it
  bool refused = false;          // !ok: cuDNN refused the operation graph itself (else: no engine)
  std::string why;               // !ok: what cuDNN said
  std::vector<Descriptor> keep;  // the tensors, the convolution and its operation
  Descriptor graph;
  Descriptor config;  // the plan's engine config
  ExecPlan exec;
  cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;  // where the heuristics listed the config
  int64_t index = -1;
  int64_t engine = -1;  // its engine's global index (checked when rebuilt from the cache)
  float ms = 0;         // measured time per run
};

// Dims {N or K, C, D, H, W} (cuDNN's order) and the strides of the memory layout: channels
// fastest (NDHWC, the filter KDHWC) or packed in that order (NCDHW, KCDHW).
std::array<int64_t, 5> strides_of(const std::array<int64_t, 5>& d, bool channels_last) {
  std::array<int64_t, 5> s{};
  if (channels_last) {
    s[1] = 1;
    s[4] = d[1];
    s[3] = d[4] * s[4];
    s[2] = d[3] * s[3];
    s[0] = d[2] * s[2];
  } else {
    s[4] = 1;
    for (int i = 3; i >= 0; --i) s[i] = s[i + 1] * d[i + 1];
  }
  return s;
}

// Why an engine config is not taken ("" takes it): the legacy math types' contract.
// Accumulation stays fp32 (no reduced-precision reduction); F32 without TF32 runs plain fp32
// (no tensor-core engine, no down-converted inputs); BF16 inputs are not converted further down.
// F32 with TF32 takes both notes (rounding the inputs to TF32 is a down-conversion).
std::string config_refusal(const Descriptor& config, const Problem& pr) {
  const EngineInfo info = engine_info(config);
  if (info.has(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION))
    return "engine " + std::to_string(info.global_index) + " reduces in reduced precision";
  if (!pr.bf16 && !pr.tf32 &&
      (info.has(CUDNN_NUMERICAL_NOTE_TENSOR_CORE) ||
       info.has(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)))
    return "engine " + std::to_string(info.global_index) +
           " uses tensor cores or converts its inputs down (TF32 is off)";
  if (pr.bf16 && info.has(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))
    return "engine " + std::to_string(info.global_index) + " converts its inputs down";
  return "";
}
#endif
}  // namespace

class VideoEngine {
 public:
  explicit VideoEngine(cudaStream_t stream) : stream_(stream) {
    check_blas(cublasCreate(&blas_), "frame_attention", "cublasCreate");
    check_blas(cublasSetStream(blas_, stream_), "frame_attention", "cublasSetStream");
#if FISDIT_HAVE_CUDNN
    const cudnnStatus_t st = cudnnCreate(&dnn_);
    if (st != CUDNN_STATUS_SUCCESS)
      fail("conv3d", "",
           std::string("cudnnCreate failed: ") + cudnnGetErrorString(st) +
               " (is libcudnn.so.9 and its engines on the library path?)");
    check_dnn(cudnnSetStream(dnn_, stream_), "cudnnSetStream", "");
    cache_ = std::make_unique<TuningCache>(TuningCache::default_dir(), "cudnn-conv", device_key());
#endif
  }
  ~VideoEngine() {
    cudaStreamSynchronize(stream_);
    if (workspace_) cudaFreeAsync(workspace_, stream_);
#if FISDIT_HAVE_CUDNN
    for (auto& [key, p] : plans_) {
      cudnnDestroyTensorDescriptor(p.x);
      cudnnDestroyTensorDescriptor(p.y);
      cudnnDestroyFilterDescriptor(p.w);
      cudnnDestroyConvolutionDescriptor(p.conv);
    }
    graphs_.clear();  // descriptors go before the handle
    cudnnDestroy(dnn_);
#endif
    cublasDestroy(blas_);
  }
  VideoEngine(const VideoEngine&) = delete;
  VideoEngine& operator=(const VideoEngine&) = delete;

  void conv(const Conv3dArgs& a, const std::string& ctx) {
#if FISDIT_HAVE_CUDNN
    const bool tf32 = !a.bf16 && vae_tf32_enabled();
    ConvLayout layout = vae_conv_layout();
    if (layout == ConvLayout::Auto)
      layout = a.bf16 ? ConvLayout::Ndhwc : choose_layout(a, tf32, ctx);
    const bool last = layout == ConvLayout::Ndhwc;
    Operands o = prepare(a, last, tf32, ctx);
    const Choice c = choose_api(o.problem, o.x, o.w, o.y, ctx);
    if (c.graph)
      graph_forward(*c.graph, o.x, o.w, o.y, ctx);
    else
      forward(*c.legacy, o.x, o.w, o.y, ctx);
    finish(a, o, ctx);
#else
    (void)a;
    fail("conv3d", ctx,
         "this build of the CUDA backend has no cuDNN (the VAE convolutions need it); "
         "configure with -DFISDIT_CUDNN_ROOT=<cuDNN 9 root>");
#endif
  }

  // Row-major w [rows, cols] is column-major w^T [cols, rows]: w^T += scale * down^T up^T, with
  // down^T [cols, rank] (row-major down, ld cols) and up^T [rank, rows] (row-major up, ld rank).
  void low_rank(float* w, const float* up, const float* down, int64_t rows, int64_t cols,
                int64_t rank, float scale, const std::string& ctx) {
    const char* op = "add_low_rank";
    const int r = blas_int(rows, op, ctx), c = blas_int(cols, op, ctx), k = blas_int(rank, op, ctx);
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), op, ctx);  // fp32, not TF32
    const float one = 1.0f;
    check_blas(
        cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, c, r, k, &scale, down, c, up, k, &one, w, c),
        op, ctx);
  }

  // out[f] = softmax(q_f k_f^T * scale) v_f for every frame f; q, k, v, out [t, n, c] row-major.
  // A frame's queries are the [n, c] block at row f n (leading dim c), its keys and values that
  // frame's block or (causal) the first (f + 1) n rows. cuBLAS is column-major, where a
  // row-major [r, c] block reads as its transpose [c, r]; so for a block of m query rows, with
  // S and P the row-major [m, keys] scores and probabilities (leading dim keys):
  //   S^T = K Q^T: gemm(T, N) of the views K^T [c, keys] and Q^T [c, m] -> [keys, m]
  //   O^T = V^T P^T: gemm(N, N) of the views V^T [c, keys] and P^T [keys, m] -> [c, m]
  // F32: fp32 GEMMs, the softmax in place on the scores. BF16: fp32 scores from bf16 operands,
  // the probabilities rounded to bf16 into `probs`, then P V accumulated in fp32 into the bf16
  // output.
  void attention(bool bf16, const void* q, const void* k, const void* v, void* out, int64_t c,
                 int64_t t, int64_t n, float* scores, void* probs, int64_t rows,
                 const std::string& ctx, bool causal) {
    const char* op = causal ? "causal_video_attention" : "frame_attention";
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), op, ctx);
    const int64_t row_bytes = c * (bf16 ? 2 : 4);
    const int ci = blas_int(c, op, ctx);
    blas_int((causal ? t : 1) * n, op, ctx);  // the most keys: every count below fits an int
    const float one = 1.0f, zero = 0.0f, scale = 1.0f / std::sqrt(static_cast<float>(c));
    auto at = [&](const void* base, int64_t row) {
      return static_cast<const char*>(base) + row * row_bytes;
    };
    for (int64_t f = 0; f < t; ++f) {
      const int keys = static_cast<int>(causal ? (f + 1) * n : n);
      const void* kf = causal ? k : at(k, f * n);
      const void* vf = causal ? v : at(v, f * n);
      for (int64_t i0 = 0; i0 < n; i0 += rows) {
        const int m = static_cast<int>(std::min(rows, n - i0));
        const void* qb = at(q, f * n + i0);
        void* ob = static_cast<char*>(out) + (f * n + i0) * row_bytes;
        if (!bf16) {
          check_blas(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, keys, m, ci, &one,
                                 static_cast<const float*>(kf), ci, static_cast<const float*>(qb),
                                 ci, &zero, scores, keys),
                     op, ctx);
          launch_softmax_rows(scores, scores, EType::F32, m, keys, scale, stream_);
          check_launch(op, ctx, stream_);
          check_blas(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, ci, m, keys, &one,
                                 static_cast<const float*>(vf), ci, scores, keys, &zero,
                                 static_cast<float*>(ob), ci),
                     op, ctx);
          continue;
        }
        check_blas(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, keys, m, ci, &one, kf, CUDA_R_16BF,
                                ci, qb, CUDA_R_16BF, ci, &zero, scores, CUDA_R_32F, keys,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   op, ctx);
        launch_softmax_rows(scores, probs, EType::BF16, m, keys, scale, stream_);
        check_launch(op, ctx, stream_);
        check_blas(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, ci, m, keys, &one, vf, CUDA_R_16BF,
                                ci, probs, CUDA_R_16BF, keys, &zero, ob, CUDA_R_16BF, ci,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                   op, ctx);
      }
    }
  }

 private:
  void reserve(size_t bytes, const std::string& ctx) {
    if (bytes <= workspace_bytes_) return;
    if (workspace_) check(cudaFreeAsync(workspace_, stream_), "conv3d", ctx);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
    check(cudaMallocAsync(&workspace_, bytes, stream_), "conv3d", ctx + " (workspace)");
    workspace_bytes_ = bytes;
  }

#if FISDIT_HAVE_CUDNN
  // What cuDNN convolves in one layout: the caller's tensors or the copies made for it.
  struct Operands {
    Problem problem;
    const void* x = nullptr;
    const void* w = nullptr;
    void* y = nullptr;
    int64_t y_channels = 0;  // the channels of what cuDNN writes (NDHWC: Cout padded to 8)
    std::unique_ptr<Scratch> xc, wc, yc;
  };

  // The operands of `a` in the layout cuDNN sees (channels_last: NDHWC), with the copies that
  // layout needs queued on the stream. cuDNN pads symmetrically by min(top, bottom) rows and
  // min(left, right) columns; the rest goes into a zero-padded input copy.
  Operands prepare(const Conv3dArgs& a, bool channels_last, bool tf32, const std::string& ctx) {
    const EType et = a.bf16 ? EType::BF16 : EType::F32;
    const size_t elt = a.bf16 ? 2 : 4;
    const int64_t t = a.xs[0], h = a.xs[1], w = a.xs[2], cin = a.xs[3], cout = a.ws[0];
    const int64_t taps = a.ws[1] * a.ws[2] * a.ws[3], pixels_out = a.ys[0] * a.ys[1] * a.ys[2];
    const int ph = std::min(a.pad[0], a.pad[1]), pw = std::min(a.pad[2], a.pad[3]);
    const int top = a.pad[0] - ph, bottom = a.pad[1] - ph, left = a.pad[2] - pw,
              right = a.pad[3] - pw;
    const bool spatial = top || bottom || left || right;
    const int64_t hp = h + top + bottom, wp = w + left + right;
    auto scratch = [&](int64_t elements) {
      return std::make_unique<Scratch>(static_cast<size_t>(elements) * elt, stream_, ctx);
    };
    Operands o;
    o.problem.bf16 = a.bf16;
    o.problem.channels_last = channels_last;
    o.problem.tf32 = tf32;
    o.problem.stride = a.stride;
    o.problem.pad_h = ph;
    o.problem.pad_w = pw;
    o.x = a.x;
    o.w = a.w;
    o.y = a.y;
    if (channels_last) {
      const int64_t ci = round_up8(cin), co = round_up8(cout);
      if (ci != cin || spatial) {
        o.xc = scratch(t * hp * wp * ci);
        launch_pad_zero(a.x, o.xc->get(), et, a.xs, {t, hp, wp, ci}, top, left, stream_);
        o.x = o.xc->get();
      }
      if (ci != cin || co != cout) {  // [Cout, taps, Cin] as [Cout, 1, taps, Cin]
        o.wc = scratch(co * taps * ci);
        launch_pad_zero(a.w, o.wc->get(), et, {cout, 1, taps, cin}, {co, 1, taps, ci}, 0, 0,
                        stream_);
        o.w = o.wc->get();
      }
      if (co != cout) {
        o.yc = scratch(pixels_out * co);
        o.y = o.yc->get();
      }
      o.y_channels = co;
      o.problem.x = {ci, t, hp, wp};
      o.problem.w = {co, ci, a.ws[1], a.ws[2], a.ws[3]};
      o.problem.y = {co, a.ys[0], a.ys[1], a.ys[2]};
    } else {
      // Channels-first copies: x [T H W, C] -> [C, T H W] (after the spatial padding),
      // w [Cout, taps, Cin] -> [Cout, Cin, taps]; y comes back from [Cout, To Ho Wo] (finish).
      const void* src = a.x;
      std::unique_ptr<Scratch> padded;
      if (spatial) {
        padded = scratch(t * hp * wp * cin);
        launch_pad_zero(a.x, padded->get(), et, a.xs, {t, hp, wp, cin}, top, left, stream_);
        src = padded->get();
      }
      o.xc = scratch(t * hp * wp * cin);
      launch_transpose(src, o.xc->get(), et, 1, t * hp * wp, cin, stream_);
      o.wc = scratch(cout * taps * cin);
      launch_transpose(a.w, o.wc->get(), et, cout, taps, cin, stream_);
      o.yc = scratch(pixels_out * cout);
      o.x = o.xc->get();
      o.w = o.wc->get();
      o.y = o.yc->get();
      o.y_channels = cout;
      o.problem.x = {cin, t, hp, wp};
      o.problem.w = {cout, cin, a.ws[1], a.ws[2], a.ws[3]};
      o.problem.y = {cout, a.ys[0], a.ys[1], a.ys[2]};
    }
    check_launch("conv3d", ctx, stream_);
    return o;
  }

  // What cuDNN wrote, into the caller's output, with the bias.
  void finish(const Conv3dArgs& a, const Operands& o, const std::string& ctx) {
    const EType et = a.bf16 ? EType::BF16 : EType::F32;
    const int64_t cout = a.ws[0], pixels = a.ys[0] * a.ys[1] * a.ys[2];
    if (!o.problem.channels_last) {
      launch_transpose(o.y, a.y, et, 1, cout, pixels, stream_);
      if (a.bias) launch_channel_bias(a.y, et, a.bias, pixels, cout, stream_);
    } else if (o.yc) {  // the first Cout of the padded channels
      launch_take_channels(o.y, o.y_channels, a.y, cout, et, pixels, cout, a.bias, stream_);
    } else if (a.bias) {
      launch_channel_bias(a.y, et, a.bias, pixels, cout, stream_);
    }
    check_launch("conv3d", ctx, stream_);
  }

  // The tuned plan of a problem (made and timed on these operands the first time).
  ConvPlan& plan(const Problem& pr, const void* x, const void* w, void* y, const std::string& ctx) {
    auto it = plans_.find(pr);
    if (it == plans_.end()) it = plans_.emplace(pr, make_plan(pr, ctx)).first;
    ConvPlan& p = it->second;
    if (!p.tuned) {
      const std::string key = pr.text();
      if (!use_cached(p, pr, key, ctx)) {
        tune(p, pr, x, w, y, ctx);
        char value[96];
        std::snprintf(value, sizeof value, "algo=%d ws=%zu math=%d ms=%.4f",
                      static_cast<int>(p.algo), p.workspace, static_cast<int>(p.math), p.ms);
        cache_->put(key, value);
      }
    }
    return p;
  }

  // Plain fp32 FMA for F32 without TF32; otherwise the math type the search chose (tensor cores).
  static bool free_math(const Problem& pr) { return pr.bf16 || pr.tf32; }

  // The plan's algorithm from the cache, when it has a well-formed entry; false: tune it.
  bool use_cached(ConvPlan& p, const Problem& pr, const std::string& key, const std::string& ctx) {
    const std::optional<std::string> v = cache_->get(key);
    int algo = -1, math = -1;
    size_t workspace = 0;
    float ms = 0;
    if (!v ||
        std::sscanf(v->c_str(), "algo=%d ws=%zu math=%d ms=%f", &algo, &workspace, &math, &ms) != 4)
      return false;
    if (algo < 0 || algo >= CUDNN_CONVOLUTION_FWD_ALGO_COUNT || math < 0 || math > 3 ||
        workspace > (size_t{1} << 32))
      return false;
    p.algo = static_cast<cudnnConvolutionFwdAlgo_t>(algo);
    p.workspace = workspace;
    p.ms = ms;
    p.math = static_cast<cudnnMathType_t>(math);
    if (free_math(pr)) check_dnn(cudnnSetConvolutionMathType(p.conv, p.math), "math type", ctx);
    p.tuned = true;
    return true;
  }

  void forward(ConvPlan& p, const void* x, const void* w, void* y, const std::string& ctx) {
    reserve(p.workspace, ctx);
    const float alpha = 1.0f, beta = 0.0f;
    check_dnn(cudnnConvolutionForward(dnn_, &alpha, p.x, x, p.w, w, p.conv, p.algo, workspace_,
                                      p.workspace, &beta, p.y, y),
              "cudnnConvolutionForward", ctx);
  }

  // F32 auto layout: cuDNN's best time in each layout (with the API FISDIT_VAE_CONV_API picks)
  // plus an estimate of the copies that layout needs (read + write at 2.5 TB/s); a layout cuDNN
  // cannot run loses. Remembered per shape, in memory and in the cache file.
  // The key carries the API unless it is legacy (whose keys predate the choice of API).
  ConvLayout choose_layout(const Conv3dArgs& a, bool tf32, const std::string& ctx) {
    const ConvApi api = vae_conv_api();
    const std::string key = op_text(a, tf32) + (api == ConvApi::Legacy  ? ""
                                                : api == ConvApi::Graph ? " api=graph"
                                                                        : " api=auto");
    auto it = choice_.find(key);
    if (it != choice_.end()) return it->second;
    const std::optional<std::string> known = cache_->get(key);
    ConvLayout chosen;
    if (known == "ncdhw" || known == "ndhwc") {
      chosen = *known == "ndhwc" ? ConvLayout::Ndhwc : ConvLayout::Ncdhw;
    } else {
      float ms[2] = {-1, -1}, copies[2] = {0, 0};
      for (const bool last : {false, true}) {
        try {
          const Operands o = prepare(a, last, tf32, ctx);
          ms[last] = choose_api(o.problem, o.x, o.w, o.y, ctx).ms();
          const auto& px = o.problem.x;
          const auto& pws = o.problem.w;
          const double xn = static_cast<double>(px[0]) * px[1] * px[2] * px[3];
          const double wn = static_cast<double>(pws[0]) * pws[1] * pws[2] * pws[3] * pws[4];
          const double yn = static_cast<double>(o.y_channels) * a.ys[0] * a.ys[1] * a.ys[2];
          const double moved = (o.xc ? 2 * xn : 0) + (o.wc ? 2 * wn : 0) + (o.yc ? 2 * yn : 0);
          copies[last] = static_cast<float>(moved * 4.0 / 2.5e12 * 1e3);
        } catch (const Error&) {
        }
      }
      if (ms[0] < 0 && ms[1] < 0) fail("conv3d", ctx, "cuDNN runs this convolution in no layout");
      const bool last = ms[0] < 0 || (ms[1] >= 0 && ms[1] + copies[1] < ms[0] + copies[0]);
      if (conv_log())
        std::fprintf(stderr,
                     "conv3d %s: ncdhw %.3f ms + copies ~%.3f ms, ndhwc %.3f ms + copies ~%.3f ms "
                     "-> %s\n",
                     ctx.c_str(), ms[0], copies[0], ms[1], copies[1], last ? "ndhwc" : "ncdhw");
      chosen = last ? ConvLayout::Ndhwc : ConvLayout::Ncdhw;
      cache_->put(key, last ? "ndhwc" : "ncdhw");
    }
    choice_.emplace(key, chosen);
    return chosen;
  }

  ConvPlan make_plan(const Problem& pr, const std::string& ctx) {
    ConvPlan p;
    check_dnn(cudnnCreateTensorDescriptor(&p.x), "descriptor", ctx);
    check_dnn(cudnnCreateTensorDescriptor(&p.y), "descriptor", ctx);
    check_dnn(cudnnCreateFilterDescriptor(&p.w), "descriptor", ctx);
    check_dnn(cudnnCreateConvolutionDescriptor(&p.conv), "descriptor", ctx);
    const cudnnDataType_t dt = pr.bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    // dims {N = 1, C, D, H, W} in cuDNN's order; the strides say where C lives in memory.
    auto set_tensor = [&](cudnnTensorDescriptor_t d, const std::array<int64_t, 4>& s) {
      const int dims[5] = {1, as_int(s[0], ctx), as_int(s[1], ctx), as_int(s[2], ctx),
                           as_int(s[3], ctx)};
      int strides[5];
      if (pr.channels_last) {  // NDHWC: C fastest, then W, H, D
        strides[1] = 1;
        strides[4] = dims[1];
        strides[3] = as_int(static_cast<int64_t>(dims[4]) * dims[1], ctx);
        strides[2] = as_int(static_cast<int64_t>(dims[3]) * strides[3], ctx);
        strides[0] = as_int(static_cast<int64_t>(dims[2]) * strides[2], ctx);
      } else {
        strides[4] = 1;
        for (int i = 3; i >= 0; --i)
          strides[i] = as_int(static_cast<int64_t>(strides[i + 1]) * dims[i + 1], ctx);
      }
      check_dnn(cudnnSetTensorNdDescriptor(d, dt, 5, dims, strides), "tensor", ctx);
    };
    set_tensor(p.x, pr.x);
    const int wd[5] = {as_int(pr.w[0], ctx), as_int(pr.w[1], ctx), as_int(pr.w[2], ctx),
                       as_int(pr.w[3], ctx), as_int(pr.w[4], ctx)};
    // The filter's dims are always {K, C, kt, kh, kw}; CUDNN_TENSOR_NHWC means memory order
    // K, kt, kh, kw, C (the weight [Cout, kt, kh, kw, Cin] as stored).
    check_dnn(cudnnSetFilterNdDescriptor(
                  p.w, dt, pr.channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, 5, wd),
              "filter", ctx);
    const int pads[3] = {0, pr.pad_h, pr.pad_w},
              strides[3] = {pr.stride[0], pr.stride[1], pr.stride[2]}, dil[3] = {1, 1, 1};
    // fp32 accumulation in both dtypes (cuDNN's BFLOAT16 configuration: bf16 x, w, y with a
    // FLOAT convolution).
    check_dnn(cudnnSetConvolutionNdDescriptor(p.conv, 3, pads, strides, dil,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "convolution", ctx);
    const cudnnMathType_t math = pr.bf16   ? CUDNN_TENSOR_OP_MATH
                                 : pr.tf32 ? CUDNN_DEFAULT_MATH
                                           : CUDNN_FMA_MATH;
    check_dnn(cudnnSetConvolutionMathType(p.conv, math), "math type", ctx);
    int out[5] = {0};
    check_dnn(cudnnGetConvolutionNdForwardOutputDim(p.conv, p.x, p.w, 5, out), "output size", ctx);
    if (out[1] != pr.y[0] || out[2] != pr.y[1] || out[3] != pr.y[2] || out[4] != pr.y[3])
      fail("conv3d", ctx, "cuDNN computes another output size");
    set_tensor(p.y, pr.y);
    return p;
  }

  // The most workspace a tuned plan may take: 1 GiB, or an eighth of the free memory where less.
  static size_t workspace_cap(const std::string& ctx) {
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "conv3d", ctx);
    return std::min<size_t>(size_t{1} << 30, free_bytes / 8);
  }

  // Times the algorithms on the real operands (cudnnFindConvolutionForwardAlgorithmEx) with a
  // bounded workspace and keeps the fastest one that succeeds.
  void tune(ConvPlan& p, const Problem& pr, const void* x, const void* w, void* y,
            const std::string& ctx) {
    reserve(workspace_cap(ctx), ctx);
    constexpr int kMax = CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    cudnnConvolutionFwdAlgoPerf_t perf[kMax];
    int found = 0;
    check_dnn(cudnnFindConvolutionForwardAlgorithmEx(dnn_, p.x, x, p.w, w, p.conv, p.y, y, kMax,
                                                     &found, perf, workspace_, workspace_bytes_),
              "algorithm search", ctx);
    for (int i = 0; i < found; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > workspace_bytes_) continue;
      p.algo = perf[i].algo;
      p.workspace = perf[i].memory;
      p.ms = perf[i].time;
      // F32 without TF32: the descriptor keeps CUDNN_FMA_MATH (plain fp32 FMA kernels only).
      p.math = free_math(pr) ? perf[i].mathType : CUDNN_FMA_MATH;
      if (free_math(pr))
        check_dnn(cudnnSetConvolutionMathType(p.conv, perf[i].mathType), "math type", ctx);
      p.tuned = true;
      return;
    }
    fail("conv3d", ctx, "cuDNN has no algorithm for this convolution");
  }

  // What runs a problem under FISDIT_VAE_CONV_API: a legacy plan or a graph plan (one of the
  // two set), tuned on the operands of the problem's first call.
  struct Choice {
    ConvPlan* legacy = nullptr;
    GraphConv* graph = nullptr;
    float ms() const { return graph ? graph->ms : legacy->ms; }
  };

  // legacy: the legacy plan. graph: the graph plan, or fisdit::Error when there is none. auto:
  // the faster of the two (measured times; the legacy one from cudnnFind), the one that exists
  // where only one does; remembered per problem and alignment. Both plans keep their own tuning
  // cache entries, so a later process compares them without measuring.
  Choice choose_api(const Problem& pr, const void* x, const void* w, void* y,
                    const std::string& ctx) {
    const ConvApi api = vae_conv_api();
    if (api == ConvApi::Legacy) return {&plan(pr, x, w, y, ctx), nullptr};
    const GraphKey key{pr, alignment_of(x, w, y)};
    GraphConv& g = graph_plan(key, x, w, y, ctx);
    if (api == ConvApi::Graph) {
      if (!g.ok)
        fail("conv3d", ctx,
             std::string("FISDIT_VAE_CONV_API=graph: ") +
                 (g.refused ? "cuDNN refused the convolution's operation graph"
                            : "no cuDNN graph engine runs this convolution") +
                 " (" + g.why + ")");
      return {nullptr, &g};
    }
    if (const auto known = auto_graph_.find(key); known != auto_graph_.end()) {
      if (known->second) return {nullptr, &g};
      return {&plan(pr, x, w, y, ctx), nullptr};  // tuned already
    }
    ConvPlan* legacy = nullptr;
    std::string legacy_why;
    try {
      legacy = &plan(pr, x, w, y, ctx);
    } catch (const Error& e) {
      if (!g.ok) throw;
      legacy_why = e.what();
    }
    const bool graph = g.ok && (!legacy || g.ms < legacy->ms);
    if (conv_log()) {
      char l[64] = "", gr[96] = "";
      if (legacy)
        std::snprintf(l, sizeof l, "legacy algo %d %.3f ms", static_cast<int>(legacy->algo),
                      static_cast<double>(legacy->ms));
      if (g.ok)
        std::snprintf(gr, sizeof gr, "graph %s config %lld (engine %lld) %.3f ms",
                      heur_mode_name(g.mode), static_cast<long long>(g.index),
                      static_cast<long long>(g.engine), static_cast<double>(g.ms));
      const std::string l_text = legacy ? l : "legacy none (" + legacy_why + ")";
      const std::string g_text = g.ok ? gr : "graph none (" + g.why + ")";
      std::fprintf(stderr, "conv3d %s: %s: %s, %s -> %s\n", ctx.c_str(), pr.text().c_str(),
                   l_text.c_str(), g_text.c_str(), graph ? "graph" : "legacy");
    }
    auto_graph_.emplace(key, graph);
    return graph ? Choice{nullptr, &g} : Choice{legacy, nullptr};
  }

  // The graph plan of a problem at an alignment: the one the tuning cache names where it still
  // builds, else searched and timed on these operands (graph_tune) and put in the cache. !ok
  // (remembered for this process, not cached) where cuDNN refuses the graph or has no plan.
  GraphConv& graph_plan(const GraphKey& key, const void* x, const void* w, void* y,
                        const std::string& ctx) {
    GraphConv& g = graphs_[key];
    if (g.tuned) return g;
    g.tuned = true;
    try {
      build_graph(g, key);
    } catch (const BuildError& e) {
      g.refused = true;
      g.why = e.what;
      if (conv_log())
        std::fprintf(stderr, "conv3d %s: graph %s: cuDNN refused the operation graph (%s)\n",
                     ctx.c_str(), key.problem.text().c_str(), g.why.c_str());
      return g;
    }
    const std::string cache_key = key.text();
    if (graph_from_cache(g, key.problem, cache_key)) return g;
    graph_tune(g, key.problem, x, w, y, ctx);
    if (g.ok && g.engine >= 0) {
      char value[160];
      std::snprintf(value, sizeof value, "heur=%s index=%lld engine=%lld ws=%lld ms=%.4f",
                    g.mode == CUDNN_HEUR_MODE_A ? "A" : "FALLBACK", static_cast<long long>(g.index),
                    static_cast<long long>(g.engine), static_cast<long long>(g.exec.workspace),
                    static_cast<double>(g.ms));
      cache_->put(cache_key, value);
    }
    return g;
  }

  // The operation graph of the problem's convolution (throws BuildError where cuDNN refuses
  // it): X, W and Y with dims {N or K, C, D, H, W} and the strides of their memory layout, the
  // key's byte alignment, bf16 or fp32 data; fp32 accumulation in both dtypes (as the legacy
  // descriptor); cross-correlation with the symmetric spatial padding, y = 1 * conv + 0 * y.
  void build_graph(GraphConv& g, const GraphKey& key) {
    const Problem& pr = key.problem;
    const cudnnDataType_t dt = pr.bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    auto tensor = [&](const char* name, int64_t uid, const std::array<int64_t, 5>& dims) {
      const std::array<int64_t, 5> strides = strides_of(dims, pr.channels_last);
      g.keep.push_back(tensor_desc(name, uid, dt, dims, strides, false, false, key.align));
      return g.keep.size() - 1;
    };
    const size_t xi = tensor("tensor X", kUidX, {1, pr.x[0], pr.x[1], pr.x[2], pr.x[3]});
    const size_t wi = tensor("tensor W", kUidW, {pr.w[0], pr.w[1], pr.w[2], pr.w[3], pr.w[4]});
    const size_t yi = tensor("tensor Y", kUidY, {1, pr.y[0], pr.y[1], pr.y[2], pr.y[3]});

    Descriptor conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, "convolution");
    const int64_t spatial = 3;
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    const int64_t pad[3] = {0, pr.pad_h, pr.pad_w};
    const int64_t stride[3] = {pr.stride[0], pr.stride[1], pr.stride[2]};
    const int64_t dilation[3] = {1, 1, 1};
    conv.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial, "SPATIAL_DIMS");
    conv.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "COMP_TYPE");
    conv.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "CONV_MODE");
    conv.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 3, pad, "PRE_PADDINGS");
    conv.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 3, pad, "POST_PADDINGS");
    conv.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 3, dilation, "DILATIONS");
    conv.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 3, stride, "FILTER_STRIDES");
    conv.finalize();
    g.keep.push_back(std::move(conv));
    const size_t ci = g.keep.size() - 1;

    Descriptor op(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, "convolution forward");
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, g.keep[xi], "X");
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, g.keep[wi], "W");
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, g.keep[yi], "Y");
    op.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, g.keep[ci], "CONV_DESC");
    // The scalars are floats with a FLOAT compute type (DOUBLE only goes with a DOUBLE one).
    const float alpha = 1.0f, beta = 0.0f;
    op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, "ALPHA");
    op.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta, "BETA");
    op.finalize();
    const cudnnBackendDescriptor_t raw = op.get();
    g.keep.push_back(std::move(op));
    g.graph = operation_graph(dnn_, {&raw, 1});
  }

  // The plan the tuning cache names ("heur=A|FALLBACK index=I engine=E ws=B ms=T"): the I-th
  // engine config of that heuristic mode, taken where it is still E's, still passes
  // config_refusal and finalizes with B workspace bytes. false: search again.
  bool graph_from_cache(GraphConv& g, const Problem& pr, const std::string& key) {
    const std::optional<std::string> v = cache_->get(key);
    char heur[16] = {0};
    long long index = -1, engine = -1, ws = -1;
    float ms = 0;
    if (!v || std::sscanf(v->c_str(), "heur=%15s index=%lld engine=%lld ws=%lld ms=%f", heur,
                          &index, &engine, &ws, &ms) != 5)
      return false;
    const std::string h = heur;
    if ((h != "A" && h != "FALLBACK") || index < 0 || ws < 0 || ws > (1LL << 32) || !(ms >= 0))
      return false;
    const cudnnBackendHeurMode_t mode = h == "A" ? CUDNN_HEUR_MODE_A : CUDNN_HEUR_MODE_FALLBACK;
    try {
      std::vector<Descriptor> configs = engine_configs(g.graph, mode);
      if (index >= static_cast<long long>(configs.size())) return false;
      Descriptor& config = configs[static_cast<size_t>(index)];
      if (!config_refusal(config, pr).empty() || engine_info(config).global_index != engine)
        return false;
      ExecPlan exec = finalize_plan(dnn_, config);
      if (exec.workspace != ws) return false;
      g.config = std::move(config);
      g.exec = std::move(exec);
      g.mode = mode;
      g.index = index;
      g.engine = engine;
      g.ms = ms;
      g.ok = true;
      return true;
    } catch (const BuildError&) {
      return false;
    }
  }

  // The first kGraphCandidates plans of the heuristics (find_plans: mode A, then FALLBACK; within
  // the workspace cap; config_refusal), each timed on the real operands (one warm-up, then the
  // mean of three runs on the stream); the fastest is kept. A plan that fails to run is dropped.
  void graph_tune(GraphConv& g, const Problem& pr, const void* x, const void* w, void* y,
                  const std::string& ctx) {
    std::string why;
    std::vector<PlanCandidate> found =
        find_plans(dnn_, g.graph, kGraphCandidates, why, static_cast<int64_t>(workspace_cap(ctx)),
                   [&](const Descriptor& config) { return config_refusal(config, pr); });
    void* const ptrs[3] = {const_cast<void*>(x), const_cast<void*>(w), y};
    size_t best = found.size();
    float best_ms = 0;
    std::string times;
    for (size_t i = 0; i < found.size(); ++i) {
      PlanCandidate& c = found[i];
      const std::string name =
          std::string(heur_mode_name(c.mode)) + " config " + std::to_string(c.index);
      try {
        reserve(static_cast<size_t>(c.exec.workspace), ctx);
        const float ms = time_launches(
            stream_, 1, 3,
            [&] {
              const cudnnStatus_t st = run_plan(c.exec, ptrs);
              if (st != CUDNN_STATUS_SUCCESS)
                throw BuildError{"cudnnBackendExecute: " + status_text(st)};
            },
            "conv3d", ctx);
        char t[32];
        std::snprintf(t, sizeof t, " %.3f ms", static_cast<double>(ms));
        times += (times.empty() ? "" : ", ") + name + t;
        if (best == found.size() || ms < best_ms) {
          best = i;
          best_ms = ms;
        }
      } catch (const BuildError& e) {
        // A launch error the dropped plan left (not sticky) is not the next call's.
        (void)cudaGetLastError();
        why += (why.empty() ? "" : "; ") + name + ": " + e.what;
      }
    }
    if (best == found.size()) {
      g.why = why.empty() ? std::string("no engine config") : why;
      if (conv_log())
        std::fprintf(stderr, "conv3d %s: graph %s: no plan (%s)\n", ctx.c_str(), pr.text().c_str(),
                     g.why.c_str());
      return;
    }
    PlanCandidate& c = found[best];
    try {
      g.engine = engine_info(c.config).global_index;  // config_refusal read it already
    } catch (const BuildError&) {
      g.engine = -1;  // not cached (graph_plan)
    }
    g.exec = std::move(c.exec);
    g.config = std::move(c.config);
    g.mode = c.mode;
    g.index = c.index;
    g.ms = best_ms;
    g.ok = true;
    if (conv_log())
      std::fprintf(stderr, "conv3d %s: graph %s: %s -> %s config %lld%s%s\n", ctx.c_str(),
                   pr.text().c_str(), times.c_str(), heur_mode_name(g.mode),
                   static_cast<long long>(g.index),
                   why.empty() ? "" : "; passed over: ", why.c_str());
  }

  // Runs a graph plan on x, w, y with the engine's workspace (reserved by the caller).
  cudnnStatus_t run_plan(const ExecPlan& e, void* const* ptrs) {
    static constexpr int64_t uids[3] = {kUidX, kUidW, kUidY};
    void* ws = e.workspace > 0 ? workspace_ : nullptr;
    return execute_plan(dnn_, e.plan, uids, {ptrs, 3}, ws);
  }

  void graph_forward(GraphConv& g, const void* x, const void* w, void* y, const std::string& ctx) {
    reserve(static_cast<size_t>(g.exec.workspace), ctx);
    void* const ptrs[3] = {const_cast<void*>(x), const_cast<void*>(w), y};
    try {
      const cudnnStatus_t st = run_plan(g.exec, ptrs);
      if (st != CUDNN_STATUS_SUCCESS)
        fail("conv3d", ctx, "cuDNN graph plan failed: " + status_text(st));
    } catch (const BuildError& e) {
      fail("conv3d", ctx, "cuDNN " + e.what);
    }
  }

  cudnnHandle_t dnn_ = nullptr;
  std::unique_ptr<TuningCache> cache_;
  std::map<Problem, ConvPlan> plans_;
  std::map<std::string, ConvLayout> choice_;
  std::map<GraphKey, GraphConv> graphs_;
  std::map<GraphKey, bool> auto_graph_;  // FISDIT_VAE_CONV_API=auto's choice: true = graph
#endif
  cudaStream_t stream_;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

VideoEngine* make_video_engine(cudaStream_t stream) { return new VideoEngine(stream); }
void destroy(VideoEngine* e) { delete e; }

void conv3d_forward(VideoEngine& e, const Conv3dArgs& a, const std::string& ctx) { e.conv(a, ctx); }

void low_rank_update(VideoEngine& e, float* w, const float* up, const float* down, int64_t rows,
                     int64_t cols, int64_t rank, float scale, const std::string& ctx) {
  e.low_rank(w, up, down, rows, cols, rank, scale, ctx);
}

void frame_attention_forward(VideoEngine& e, bool bf16, const void* q, const void* k, const void* v,
                             void* out, int64_t c, int64_t t, int64_t n, float* scores, void* probs,
                             int64_t rows, const std::string& ctx, bool causal) {
  e.attention(bf16, q, k, v, out, c, t, n, scores, probs, rows, ctx, causal);
}

}  // namespace fisdit::cuda
