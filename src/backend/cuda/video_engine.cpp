// The library calls of the video VAE ops: 3D convolutions through cuDNN's convolution API
// (fp32 NCDHW tensors with N = 1, i.e. [C, T, H, W]; TF32 tensor cores unless
// FISDIT_VAE_TF32=0) and the per-frame attention GEMMs through cuBLAS (fp32).
// The fastest cuDNN algorithm of each shape is measured on the first call and cached.
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_internal.h"

#if FISDIT_HAVE_CUDNN
#include <cudnn.h>
#endif

namespace fisdit::cuda {

bool vae_tf32_enabled() {
  const char* v = std::getenv("FISDIT_VAE_TF32");
  return !(v && std::strcmp(v, "0") == 0);
}

namespace {
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
  bool tuned = false;
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
    const auto key = std::make_tuple(xs, ws, stride, pad_h, pad_w, tf32);
    auto it = plans_.find(key);
    if (it == plans_.end())
      it = plans_.emplace(key, make_plan(xs, ws, ys, stride, pad_h, pad_w, tf32, ctx)).first;
    ConvPlan& p = it->second;
    if (!p.tuned) tune(p, x, w, y, tf32, ctx);
    reserve(p.workspace, ctx);
    const float alpha = 1.0f, beta = 0.0f;
    check_dnn(cudnnConvolutionForward(dnn_, &alpha, p.x, x, p.w, w, p.conv, p.algo, workspace_,
                                      p.workspace, &beta, p.y, y),
              "cudnnConvolutionForward", ctx);
#else
    (void)x, (void)xs, (void)w, (void)ws, (void)y, (void)ys, (void)stride, (void)pad_h, (void)pad_w;
    fail("conv3d", ctx,
         "this build of the CUDA backend has no cuDNN (the VAE convolutions need it); "
         "configure with -DFISDIT_CUDNN_ROOT=<cuDNN 9 root>");
#endif
  }

  // out[:, t] = softmax(q_t^T k_t * scale) v_t for every frame t; q, k, v, out [c, t, n];
  // scores: room for rows * n floats (query rows are done in blocks of `rows`).
  void attention(const float* q, const float* k, const float* v, float* out, int64_t c, int64_t t,
                 int64_t n, float* scores, int64_t rows, const std::string& ctx) {
    const char* op = "frame_attention";
    check_blas(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), op, ctx);
    const int64_t ld = t * n;
    const float one = 1.0f, zero = 0.0f;
    for (int64_t f = 0; f < t; ++f) {
      const float* qf = q + f * n;
      const float* kf = k + f * n;
      const float* vf = v + f * n;
      float* of = out + f * n;
      for (int64_t i0 = 0; i0 < n; i0 += rows) {
        const int64_t m = std::min(rows, n - i0);
        // Column-major: S^T[j, i] = sum_c K[j, c] Q[i, c] (K, Q are [n, c] with leading dim ld).
        check_blas(
            cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(n), static_cast<int>(m),
                        static_cast<int>(c), &one, kf, static_cast<int>(ld), qf + i0,
                        static_cast<int>(ld), &zero, scores, static_cast<int>(n)),
            op, ctx);
        launch_softmax_rows(scores, m, n, 1.0f / std::sqrt(static_cast<float>(c)), stream_);
        check_launch(op, ctx, stream_);
        // O[i, c] = sum_j P[j, i] V[j, c]
        check_blas(
            cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(c),
                        static_cast<int>(n), &one, scores, static_cast<int>(n), vf,
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
  ConvPlan make_plan(const std::array<int64_t, 4>& xs, const std::array<int64_t, 5>& ws,
                     const std::array<int64_t, 4>& ys, const std::array<int, 3>& stride, int pad_h,
                     int pad_w, bool tf32, const std::string& ctx) {
    ConvPlan p;
    check_dnn(cudnnCreateTensorDescriptor(&p.x), "descriptor", ctx);
    check_dnn(cudnnCreateTensorDescriptor(&p.y), "descriptor", ctx);
    check_dnn(cudnnCreateFilterDescriptor(&p.w), "descriptor", ctx);
    check_dnn(cudnnCreateConvolutionDescriptor(&p.conv), "descriptor", ctx);
    auto set_tensor = [&](cudnnTensorDescriptor_t d, const std::array<int64_t, 4>& s) {
      const int dims[5] = {1, as_int(s[0], ctx), as_int(s[1], ctx), as_int(s[2], ctx),
                           as_int(s[3], ctx)};
      int strides[5];
      strides[4] = 1;
      for (int i = 3; i >= 0; --i)
        strides[i] = as_int(static_cast<int64_t>(strides[i + 1]) * dims[i + 1], ctx);
      check_dnn(cudnnSetTensorNdDescriptor(d, CUDNN_DATA_FLOAT, 5, dims, strides), "tensor", ctx);
    };
    set_tensor(p.x, xs);
    set_tensor(p.y, ys);
    const int wd[5] = {as_int(ws[0], ctx), as_int(ws[1], ctx), as_int(ws[2], ctx),
                       as_int(ws[3], ctx), as_int(ws[4], ctx)};
    check_dnn(cudnnSetFilterNdDescriptor(p.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, 5, wd), "filter",
              ctx);
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
      // Without TF32 the descriptor keeps CUDNN_FMA_MATH (plain fp32 FMA kernels only).
      if (tf32) check_dnn(cudnnSetConvolutionMathType(p.conv, perf[i].mathType), "math type", ctx);
      p.tuned = true;
      return;
    }
    fail("conv3d", ctx, "cuDNN has no algorithm for this convolution");
  }

  cudnnHandle_t dnn_ = nullptr;
  using Key = std::tuple<std::array<int64_t, 4>, std::array<int64_t, 5>, std::array<int, 3>, int,
                         int, bool>;
  std::map<Key, ConvPlan> plans_;
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

void frame_attention_forward(VideoEngine& e, const float* q, const float* k, const float* v,
                             float* out, int64_t c, int64_t t, int64_t n, float* scores,
                             int64_t rows, const std::string& ctx) {
  e.attention(q, k, v, out, c, t, n, scores, rows, ctx);
}

}  // namespace fisdit::cuda
