// The library calls of the video VAE ops: 3D convolutions through cuDNN's convolution API
// (fp32 NCDHW tensors with N = 1, i.e. [C, T, H, W]; TF32 tensor cores unless
// FISDIT_VAE_TF32=0) and the per-frame attention GEMMs through cuBLAS (fp32).
// The fastest cuDNN algorithm (and layout) of each shape is measured on the first call and kept,
// in memory and in the tuning cache file of this GPU and library versions (backend/
// tuning_cache.h), so a later process finds it there instead of measuring again.
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <cmath>
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
#endif

namespace fisdit::cuda {

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
  float* f32() const { return static_cast<float*>(p_); }

 private:
  void* p_ = nullptr;
  cudaStream_t s_;
};

void check_blas(cublasStatus_t st, const char* op, const std::string& ctx) {
  if (st != CUBLAS_STATUS_SUCCESS)
    fail(op, ctx, "cuBLAS call failed (status " + std::to_string(static_cast<int>(st)) + ")");
}

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
    cudnnDestroy(dnn_);
#endif
    cublasDestroy(blas_);
  }
  VideoEngine(const VideoEngine&) = delete;
  VideoEngine& operator=(const VideoEngine&) = delete;

  void conv(const float* x, const std::array<int64_t, 4>& xs, const float* w,
            const std::array<int64_t, 5>& ws, float* y, const std::array<int64_t, 4>& ys,
            const std::array<int, 3>& stride, int pad_h, int pad_w, const std::string& ctx) {
#if FISDIT_HAVE_CUDNN
    const bool tf32 = vae_tf32_enabled();
    const ShapeKey sk = std::make_tuple(xs, ws, stride, pad_h, pad_w, tf32);
    ConvLayout layout = vae_conv_layout();
    if (layout == ConvLayout::Auto) {
      auto it = choice_.find(sk);
      if (it == choice_.end()) {
        const std::string key = "layout " + shape_text(sk);
        const std::optional<std::string> known = cache_->get(key);
        ConvLayout chosen;
        if (known == "ncdhw" || known == "ndhwc") {
          chosen = *known == "ndhwc" ? ConvLayout::Ndhwc : ConvLayout::Ncdhw;
        } else {
          chosen = choose(sk, x, w, y, ys, ctx);
          cache_->put(key, chosen == ConvLayout::Ndhwc ? "ndhwc" : "ncdhw");
        }
        it = choice_.emplace(sk, chosen).first;
      }
      layout = it->second;
    }
    if (layout == ConvLayout::Ncdhw) {
      ConvPlan& p = plan(sk, false, ys, x, w, y, ctx);
      forward(p, x, w, y, ctx);
      return;
    }
    // Channels-last: x [C, THW] -> [THW, C], w [Cout, Cin, k] -> [Cout, k, Cin], y back.
    const int64_t xn = xs[0] * xs[1] * xs[2] * xs[3], yn = ys[0] * ys[1] * ys[2] * ys[3];
    const int64_t taps = ws[2] * ws[3] * ws[4], wn = ws[0] * ws[1] * taps;
    Scratch xt(xn * sizeof(float), stream_, ctx), wt(wn * sizeof(float), stream_, ctx),
        yt(yn * sizeof(float), stream_, ctx);
    launch_transpose(x, xt.f32(), 1, xs[0], xn / xs[0], stream_);
    launch_transpose(w, wt.f32(), ws[0], ws[1], taps, stream_);
    check_launch("conv3d", ctx, stream_);
    ConvPlan& p = plan(sk, true, ys, xt.f32(), wt.f32(), yt.f32(), ctx);
    forward(p, xt.f32(), wt.f32(), yt.f32(), ctx);
    launch_transpose(yt.f32(), y, 1, yn / ys[0], ys[0], stream_);
    check_launch("conv3d", ctx, stream_);
#else
    (void)x, (void)xs, (void)w, (void)ws, (void)y, (void)ys, (void)stride, (void)pad_h, (void)pad_w;
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
    if (rows > std::numeric_limits<int>::max() || cols > std::numeric_limits<int>::max() ||
        rank > std::numeric_limits<int>::max())
      fail(op, ctx, "a dimension exceeds cuBLAS's 32-bit sizes");
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), op, ctx);  // fp32, not TF32
    const float one = 1.0f;
    check_blas(
        cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(cols), static_cast<int>(rows),
                    static_cast<int>(rank), &scale, down, static_cast<int>(cols), up,
                    static_cast<int>(rank), &one, w, static_cast<int>(cols)),
        op, ctx);
  }

  // out[:, t] = softmax(q_t^T k_t * scale) v_t for every frame t; q, k, v, out [c, t, n];
  // scores: room for rows * n floats (query rows are done in blocks of `rows`).
  void attention(const float* q, const float* k, const float* v, float* out, int64_t c, int64_t t,
                 int64_t n, float* scores, int64_t rows, const std::string& ctx, bool causal) {
    const char* op = causal ? "causal_video_attention" : "frame_attention";
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), op, ctx);
    const int64_t ld = t * n;
    const float one = 1.0f, zero = 0.0f;
    for (int64_t f = 0; f < t; ++f) {
      const float* qf = q + f * n;
      // The keys: this frame's pixels, or (causal) those of frames 0..f, contiguous in [c, t n].
      const int64_t keys = causal ? (f + 1) * n : n;
      const float* kf = causal ? k : k + f * n;
      const float* vf = causal ? v : v + f * n;
      float* of = out + f * n;
      for (int64_t i0 = 0; i0 < n; i0 += rows) {
        const int64_t m = std::min(rows, n - i0);
        // Column-major: S^T[j, i] = sum_c K[j, c] Q[i, c] (K, Q are [keys, c] with leading dim
        // ld).
        check_blas(
            cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(keys),
                        static_cast<int>(m), static_cast<int>(c), &one, kf, static_cast<int>(ld),
                        qf + i0, static_cast<int>(ld), &zero, scores, static_cast<int>(keys)),
            op, ctx);
        launch_softmax_rows(scores, m, keys, 1.0f / std::sqrt(static_cast<float>(c)), stream_);
        check_launch(op, ctx, stream_);
        // O[i, c] = sum_j P[j, i] V[j, c]
        check_blas(
            cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(c),
                        static_cast<int>(keys), &one, scores, static_cast<int>(keys), vf,
                        static_cast<int>(ld), &zero, of + i0, static_cast<int>(ld)),
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
  using ShapeKey = std::tuple<std::array<int64_t, 4>, std::array<int64_t, 5>, std::array<int, 3>,
                              int, int, bool>;

  // The tuned plan of a shape and layout (made and timed on these operands the first time).
  ConvPlan& plan(const ShapeKey& sk, bool channels_last, const std::array<int64_t, 4>& ys,
                 const float* x, const float* w, float* y, const std::string& ctx) {
    const auto key = std::make_pair(sk, channels_last);
    auto it = plans_.find(key);
    if (it == plans_.end())
      it = plans_
               .emplace(key, make_plan(std::get<0>(sk), std::get<1>(sk), ys, std::get<2>(sk),
                                       std::get<3>(sk), std::get<4>(sk), std::get<5>(sk),
                                       channels_last, ctx))
               .first;
    ConvPlan& p = it->second;
    if (!p.tuned) {
      const std::string key = std::string(channels_last ? "ndhwc " : "ncdhw ") + shape_text(sk);
      if (!use_cached(p, key, std::get<5>(sk), ctx)) {
        tune(p, x, w, y, std::get<5>(sk), ctx);
        char value[96];
        std::snprintf(value, sizeof value, "algo=%d ws=%zu math=%d ms=%.4f",
                      static_cast<int>(p.algo), p.workspace, static_cast<int>(p.math), p.ms);
        cache_->put(key, value);
      }
    }
    return p;
  }

  // A shape as the cache keys it.
  static std::string shape_text(const ShapeKey& sk) {
    const auto& [xs, ws, st, ph, pw, tf32] = sk;
    char text[256];
    std::snprintf(text, sizeof text,
                  "x=%lld,%lld,%lld,%lld w=%lld,%lld,%lld,%lld,%lld s=%d,%d,%d p=%d,%d tf32=%d",
                  static_cast<long long>(xs[0]), static_cast<long long>(xs[1]),
                  static_cast<long long>(xs[2]), static_cast<long long>(xs[3]),
                  static_cast<long long>(ws[0]), static_cast<long long>(ws[1]),
                  static_cast<long long>(ws[2]), static_cast<long long>(ws[3]),
                  static_cast<long long>(ws[4]), st[0], st[1], st[2], ph, pw, tf32 ? 1 : 0);
    return text;
  }

  // What the tuning cache of this GPU and library versions is valid for.
  static std::string device_key() {
    int dev = 0, driver = 0, runtime = 0;
    cudaGetDevice(&dev);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, dev);
    cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    char key[320];
    std::snprintf(key, sizeof key, "%s sm%d%d driver %d runtime %d cudnn %zu", prop.name,
                  prop.major, prop.minor, driver, runtime, cudnnGetVersion());
    return key;
  }

  // The plan's algorithm from the cache, when it has a well-formed entry; false: tune it.
  bool use_cached(ConvPlan& p, const std::string& key, bool tf32, const std::string& ctx) {
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
    if (tf32) check_dnn(cudnnSetConvolutionMathType(p.conv, p.math), "math type", ctx);
    p.tuned = true;
    return true;
  }

  void forward(ConvPlan& p, const float* x, const float* w, float* y, const std::string& ctx) {
    reserve(p.workspace, ctx);
    const float alpha = 1.0f, beta = 0.0f;
    check_dnn(cudnnConvolutionForward(dnn_, &alpha, p.x, x, p.w, w, p.conv, p.algo, workspace_,
                                      p.workspace, &beta, p.y, y),
              "cudnnConvolutionForward", ctx);
  }

  // Auto layout: cuDNN's best time in each layout, plus for channels-last an estimate of its
  // three transposes (read + write at 2.5 TB/s); a layout cuDNN cannot run loses.
  ConvLayout choose(const ShapeKey& sk, const float* x, const float* w, float* y,
                    const std::array<int64_t, 4>& ys, const std::string& ctx) {
    const auto& xs = std::get<0>(sk);
    const auto& ws = std::get<1>(sk);
    const int64_t xn = xs[0] * xs[1] * xs[2] * xs[3], yn = ys[0] * ys[1] * ys[2] * ys[3];
    const int64_t wn = ws[0] * ws[1] * ws[2] * ws[3] * ws[4];
    float nc = -1, nd = -1;
    try {
      nc = plan(sk, false, ys, x, w, y, ctx).ms;
    } catch (const Error&) {
    }
    try {
      Scratch xt(xn * sizeof(float), stream_, ctx), wt(wn * sizeof(float), stream_, ctx),
          yt(yn * sizeof(float), stream_, ctx);
      check(cudaMemsetAsync(xt.f32(), 0, xn * sizeof(float), stream_), "conv3d", ctx);
      check(cudaMemsetAsync(wt.f32(), 0, wn * sizeof(float), stream_), "conv3d", ctx);
      nd = plan(sk, true, ys, xt.f32(), wt.f32(), yt.f32(), ctx).ms;
    } catch (const Error&) {
    }
    const float transposes = static_cast<float>(2.0 * 4.0 * (xn + yn + wn) / 2.5e12 * 1e3);
    if (nc < 0 && nd < 0) fail("conv3d", ctx, "cuDNN runs this convolution in no layout");
    const bool last = nc < 0 || (nd >= 0 && nd + transposes < nc);
    if (conv_log())
      std::fprintf(stderr, "conv3d %s: ncdhw %.3f ms, ndhwc %.3f ms + transposes ~%.3f ms -> %s\n",
                   ctx.c_str(), nc, nd, transposes, last ? "ndhwc" : "ncdhw");
    return last ? ConvLayout::Ndhwc : ConvLayout::Ncdhw;
  }

  ConvPlan make_plan(const std::array<int64_t, 4>& xs, const std::array<int64_t, 5>& ws,
                     const std::array<int64_t, 4>& ys, const std::array<int, 3>& stride, int pad_h,
                     int pad_w, bool tf32, bool channels_last, const std::string& ctx) {
    ConvPlan p;
    check_dnn(cudnnCreateTensorDescriptor(&p.x), "descriptor", ctx);
    check_dnn(cudnnCreateTensorDescriptor(&p.y), "descriptor", ctx);
    check_dnn(cudnnCreateFilterDescriptor(&p.w), "descriptor", ctx);
    check_dnn(cudnnCreateConvolutionDescriptor(&p.conv), "descriptor", ctx);
    auto set_tensor = [&](cudnnTensorDescriptor_t d, const std::array<int64_t, 4>& s) {
      const int dims[5] = {1, as_int(s[0], ctx), as_int(s[1], ctx), as_int(s[2], ctx),
                           as_int(s[3], ctx)};
      int strides[5];
      if (channels_last) {  // NDHWC: C fastest, then W, H, D
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
      check_dnn(cudnnSetTensorNdDescriptor(d, CUDNN_DATA_FLOAT, 5, dims, strides), "tensor", ctx);
    };
    set_tensor(p.x, xs);
    set_tensor(p.y, ys);
    const int wd[5] = {as_int(ws[0], ctx), as_int(ws[1], ctx), as_int(ws[2], ctx),
                       as_int(ws[3], ctx), as_int(ws[4], ctx)};
    check_dnn(
        cudnnSetFilterNdDescriptor(p.w, CUDNN_DATA_FLOAT,
                                   channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, 5, wd),
        "filter", ctx);
    const int pads[3] = {0, pad_h, pad_w}, strides[3] = {stride[0], stride[1], stride[2]},
              dil[3] = {1, 1, 1};
    check_dnn(cudnnSetConvolutionNdDescriptor(p.conv, 3, pads, strides, dil,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "convolution", ctx);
    check_dnn(cudnnSetConvolutionMathType(p.conv, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH),
              "math type", ctx);
    int out[5] = {0};
    check_dnn(cudnnGetConvolutionNdForwardOutputDim(p.conv, p.x, p.w, 5, out), "output size", ctx);
    if (out[1] != ys[0] || out[2] != ys[1] || out[3] != ys[2] || out[4] != ys[3])
      fail("conv3d", ctx, "cuDNN computes another output size");
    return p;
  }

  // Times the algorithms on the real operands (cudnnFindConvolutionForwardAlgorithmEx) with a
  // bounded workspace and keeps the fastest one that succeeds.
  void tune(ConvPlan& p, const float* x, const float* w, float* y, bool tf32,
            const std::string& ctx) {
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "conv3d", ctx);
    const size_t cap = std::min<size_t>(size_t{1} << 30, free_bytes / 8);
    reserve(cap, ctx);
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
      // Without TF32 the descriptor keeps CUDNN_FMA_MATH (plain fp32 FMA kernels only).
      p.math = tf32 ? perf[i].mathType : CUDNN_FMA_MATH;
      if (tf32) check_dnn(cudnnSetConvolutionMathType(p.conv, perf[i].mathType), "math type", ctx);
      p.tuned = true;
      return;
    }
    fail("conv3d", ctx, "cuDNN has no algorithm for this convolution");
  }

  cudnnHandle_t dnn_ = nullptr;
  std::unique_ptr<TuningCache> cache_;
  std::map<std::pair<ShapeKey, bool>, ConvPlan> plans_;
  std::map<ShapeKey, ConvLayout> choice_;
#endif
  cudaStream_t stream_;
  cublasHandle_t blas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

VideoEngine* make_video_engine(cudaStream_t stream) { return new VideoEngine(stream); }
void destroy(VideoEngine* e) { delete e; }

void conv3d_forward(VideoEngine& e, const float* x, const std::array<int64_t, 4>& xs,
                    const float* w, const std::array<int64_t, 5>& ws, float* y,
                    const std::array<int64_t, 4>& ys, const std::array<int, 3>& stride, int pad_h,
                    int pad_w, const std::string& ctx) {
  e.conv(x, xs, w, ws, y, ys, stride, pad_h, pad_w, ctx);
}

void low_rank_update(VideoEngine& e, float* w, const float* up, const float* down, int64_t rows,
                     int64_t cols, int64_t rank, float scale, const std::string& ctx) {
  e.low_rank(w, up, down, rows, cols, rank, scale, ctx);
}

void frame_attention_forward(VideoEngine& e, const float* q, const float* k, const float* v,
                             float* out, int64_t c, int64_t t, int64_t n, float* scores,
                             int64_t rows, const std::string& ctx, bool causal) {
  e.attention(q, k, v, out, c, t, n, scores, rows, ctx, causal);
}

}  // namespace fisdit::cuda
