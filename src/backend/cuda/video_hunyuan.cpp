// The CUDA backend's HunyuanVideo 1.5 VAE ops (channels-last [T, H, W, C], F32 or BF16; kernels
// in video.cu, the frame-causal attention through the cuBLAS attention of video.cpp /
// video_engine.cpp).
#include <string>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/profile.h"
#include "backend/cuda/video.cuh"

namespace fisdit::cuda {

void CudaBackend::do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) {
  const char* op = "pad_replicate";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  OpScope scope(stream(), op);
  launch_pad_replicate(x.raw(), out.raw(), t, x.dim(0), x.dim(1), x.dim(2), x.dim(3), front, side,
                       stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) {
  const char* op = "space_to_channels";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  OpScope scope(stream(), op);
  launch_space_to_channels(x.raw(), out.raw(), t, small.dim(0), small.dim(1), small.dim(2),
                           big.dim(3), rt, inverse, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_channel_group_mean(const Tensor& x, int groups, Tensor& out) {
  const char* op = "channel_group_mean";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  const int64_t c = out.dim(-1), pixels = c ? out.numel() / c : 0;
  OpScope scope(stream(), op);
  launch_channel_group_mean(x.raw(), out.raw(), t, pixels, c, groups, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_channel_repeat(const Tensor& x, int repeats, Tensor& out) {
  const char* op = "channel_repeat";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  const int64_t c = x.dim(-1), pixels = c ? x.numel() / c : 0;
  OpScope scope(stream(), op);
  launch_channel_repeat(x.raw(), out.raw(), t, pixels, c, repeats, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                            Tensor& out) {
  video_attention(q, k, v, out, /*causal=*/true);  // video.cpp
}

}  // namespace fisdit::cuda
