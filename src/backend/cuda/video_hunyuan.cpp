// The CUDA backend's HunyuanVideo 1.5 VAE ops (F32 [C, T, H, W]; kernels in video.cu, the
// frame-causal attention through the cuBLAS attention of video.cpp / video_engine.cpp).
#include <algorithm>
#include <string>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/profile.h"
#include "backend/cuda/video.cuh"

namespace fisdit::cuda {

void CudaBackend::do_pad_replicate(const Tensor& x, int front, int side, Tensor& out) {
  const char* op = "pad_replicate";
  require_device(x, op, "input");
  require_device(out, op, "output");
  OpScope scope(stream(), op);
  launch_pad_replicate(x.data_as<float>(), out.data_as<float>(), x.dim(0), x.dim(1), x.dim(2),
                       x.dim(3), front, side, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_space_to_channels(const Tensor& x, int rt, Tensor& out, bool inverse) {
  const char* op = "space_to_channels";
  require_device(x, op, "input");
  require_device(out, op, "output");
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  OpScope scope(stream(), op);
  launch_space_to_channels(x.data_as<float>(), out.data_as<float>(), big.dim(0), small.dim(1),
                           small.dim(2), small.dim(3), rt, inverse, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_channel_group_mean(const Tensor& x, int groups, Tensor& out) {
  const char* op = "channel_group_mean";
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int64_t c = out.dim(0), n = c ? out.numel() / c : 0;
  OpScope scope(stream(), op);
  launch_channel_group_mean(x.data_as<float>(), out.data_as<float>(), c, n, groups, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_channel_repeat(const Tensor& x, int repeats, Tensor& out) {
  const char* op = "channel_repeat";
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int64_t c = x.dim(0), n = c ? x.numel() / c : 0;
  OpScope scope(stream(), op);
  launch_channel_repeat(x.data_as<float>(), out.data_as<float>(), c, n, repeats, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_causal_video_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                            Tensor& out) {
  video_attention(q, k, v, out, /*causal=*/true);  // video.cpp
}

}  // namespace fisdit::cuda
