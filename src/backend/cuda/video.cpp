// The CUDA backend's video VAE ops (F32 [C, T, H, W]) next to their kernels (video.cu): 3D
// convolutions and the per-frame attention through cuDNN / cuBLAS (video_engine.cpp, made on the
// first VAE op), the channel RMS norm, 2x upsampling, frame-block copies and Wan 2.2's
// AvgDown3D / DupUp3D / 2x2 patchify kernels.
#include <algorithm>
#include <string>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/profile.h"
#include "backend/cuda/video.cuh"

namespace fisdit::cuda {

VideoEngine& CudaBackend::video() {
  if (!video_) video_ = make_video_engine(stream());
  return *video_;
}

void CudaBackend::do_conv3d(const Tensor& x, const Tensor& w, const Tensor* bias,
                            const Conv3dParams& p, Tensor& out) {
  const char* op = "conv3d";
  require_device(x, op, "input");
  require_device(w, op, "weight");
  require_device(out, op, "output");
  const Shape& os = out.shape();  // conv3d_output_shape, checked by Backend::conv3d
  if (bias) require_device(*bias, op, "bias");
  const std::string ctx = desc(x) + " * " + shape_str(w.shape());
  OpScope scope(stream(), op, shape_str(w.shape()));
  if (out.numel() == 0) return;
  Tensor src = x;
  int pad_h = p.pad_top, pad_w = p.pad_left;
  if (p.pad_top != p.pad_bottom || p.pad_left != p.pad_right) {
    // cuDNN pads symmetrically: zero pad explicitly, then convolve without padding.
    src = empty({x.dim(0), x.dim(1), x.dim(2) + p.pad_top + p.pad_bottom,
                 x.dim(3) + p.pad_left + p.pad_right},
                DType::F32);
    launch_pad_spatial(x.data_as<float>(), src.data_as<float>(), x.dim(0) * x.dim(1), x.dim(2),
                       x.dim(3), p.pad_top, p.pad_bottom, p.pad_left, p.pad_right, stream());
    check_launch(op, ctx, stream());
    pad_h = pad_w = 0;
  }
  conv3d_forward(video(), src.data_as<float>(), {src.dim(0), src.dim(1), src.dim(2), src.dim(3)},
                 w.data_as<float>(), {w.dim(0), w.dim(1), w.dim(2), w.dim(3), w.dim(4)},
                 out.data_as<float>(), {os[0], os[1], os[2], os[3]},
                 {p.stride_t, p.stride_h, p.stride_w}, pad_h, pad_w, ctx);
  if (bias) {
    launch_channel_bias(out.data_as<float>(), bias->data_as<float>(), os[0], out.numel() / os[0],
                        stream());
    check_launch(op, ctx, stream());
  }
}

void CudaBackend::do_channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu,
                                      Tensor& out) {
  const char* op = "channel_rms_norm";
  require_device(x, op, "input");
  require_device(gamma, op, "gamma");
  require_device(out, op, "output");
  const int64_t c = x.dim(0);
  OpScope scope(stream(), op);
  launch_channel_rms_norm(x.data_as<float>(), gamma.data_as<float>(), out.data_as<float>(), c,
                          x.numel() / c, silu, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_upsample_nearest2x(const Tensor& x, Tensor& out) {
  const char* op = "upsample_nearest2x";
  require_device(x, op, "input");
  require_device(out, op, "output");
  OpScope scope(stream(), op);
  launch_upsample_nearest2x(x.data_as<float>(), out.data_as<float>(), x.dim(0) * x.dim(1), x.dim(2),
                            x.dim(3), stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::video_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                  bool causal) {
  const char* op = causal ? "causal_video_attention" : "frame_attention";
  require_device(q, op, "q");
  require_device(k, op, "k");
  require_device(v, op, "v");
  require_device(out, op, "output");
  const int64_t c = q.dim(0), t = q.dim(1), n = q.dim(2) * q.dim(3);
  if (!q.numel()) return;
  OpScope scope(stream(), op);
  // Scores of at most 256 MiB at a time (blocks of query rows against their keys: the frame's,
  // or with `causal` every frame's up to it).
  const int64_t keys = causal ? t * n : n;
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{64} << 20) / keys));
  Tensor scores = empty({rows, keys}, DType::F32);
  frame_attention_forward(video(), q.data_as<float>(), k.data_as<float>(), v.data_as<float>(),
                          out.data_as<float>(), c, t, n, scores.data_as<float>(), rows, desc(q),
                          causal);
}

void CudaBackend::do_frame_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                     Tensor& out) {
  video_attention(q, k, v, out, /*causal=*/false);
}

void CudaBackend::do_copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst,
                                 int64_t dst_c, int64_t dst_f, int64_t channels, int64_t frames) {
  const char* op = "copy_frames";
  require_device(src, op, "source");
  require_device(dst, op, "destination");
  const int64_t frame = src.dim(1) ? src.numel() / (src.dim(0) * src.dim(1)) : 0;
  if (!frame || !channels || !frames) return;
  OpScope scope(stream(), op);
  const size_t fb = static_cast<size_t>(frame) * sizeof(float);
  const char* s = static_cast<const char*>(src.raw()) + (src_c * src.dim(1) + src_f) * fb;
  char* d = static_cast<char*>(dst.raw()) + (dst_c * dst.dim(1) + dst_f) * fb;
  check(cudaMemcpy2DAsync(d, dst.dim(1) * fb, s, src.dim(1) * fb, frames * fb,
                          static_cast<size_t>(channels), cudaMemcpyDeviceToDevice, stream()),
        op, desc(src) + " -> " + desc(dst));
}

void CudaBackend::do_fill_zero(Tensor& x) {
  require_device(x, "fill_zero", "tensor");
  if (x.nbytes()) check(cudaMemsetAsync(x.raw(), 0, x.nbytes(), stream()), "fill_zero", desc(x));
}

void CudaBackend::do_avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  const char* op = "avg_down3d";
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3), out_c = out.dim(0);
  OpScope scope(stream(), op);
  launch_avg_down3d(x.data_as<float>(), out.data_as<float>(), c, t, h, w, out_c, ft, fs, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  const char* op = "dup_up3d";
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3), out_c = out.dim(0);
  OpScope scope(stream(), op);
  launch_dup_up3d(x.data_as<float>(), out.data_as<float>(), c, t, h, w, out_c, ft, fs, skip,
                  stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  const char* op = "space_to_channels2";
  require_device(x, op, "input");
  require_device(out, op, "output");
  const Tensor& big = inverse ? out : x;
  OpScope scope(stream(), op);
  launch_space_to_channels2(x.data_as<float>(), out.data_as<float>(), big.dim(0), big.dim(1),
                            big.dim(2) / 2, big.dim(3) / 2, inverse, stream());
  check_launch(op, desc(x), stream());
}

}  // namespace fisdit::cuda
