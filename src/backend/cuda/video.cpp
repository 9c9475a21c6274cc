// The CUDA backend's video VAE ops (channels-last [T, H, W, C], F32 or BF16 with fp32 math) next
// to their kernels (video.cu): 3D convolutions and the per-frame attention through cuDNN /
// cuBLAS (video_engine.cpp, made on the first VAE op), the channel RMS norm, 2x upsampling,
// frame-block copies and Wan 2.2's AvgDown3D / DupUp3D / 2x2 patchify kernels.
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

void CudaBackend::set_video_dtype(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::BF16)
    fail("set_video_dtype", "",
         "the cuda backend runs the video VAE in F32 or BF16, not " +
             std::string(dtype_name(dtype)));
  video_dtype_ = dtype;
}

// The element type of an op's video tensors: all on the GPU, F32 or BF16, the same for all of
// them (Backend checked the dtypes already; checked again because the kernels reinterpret the
// bytes).
EType CudaBackend::video_type(const char* op, std::initializer_list<VideoArg> args) {
  for (const auto& [tensor, what] : args) require_device(*tensor, op, what);
  const auto& [first, first_name] = *args.begin();
  const EType t = etype(first->dtype(), op, first_name);
  for (const auto& [tensor, what] : args)
    if (etype(tensor->dtype(), op, what) != t)
      fail(op, "",
           std::string(what) + " " + desc(*tensor) + " must have the dtype of " + first_name);
  return t;
}

void CudaBackend::do_conv3d(const Tensor& x, const Tensor& w, const Tensor* bias,
                            const Conv3dParams& p, Tensor& out) {
  const char* op = "conv3d";
  const EType t = video_type(op, {{&x, "input"}, {&w, "weight"}, {&out, "output"}});
  if (bias) require_device(*bias, op, "bias");
  const std::string ctx = desc(x) + " * " + shape_str(w.shape());
  OpScope scope(stream(), op, shape_str(w.shape()));
  if (out.numel() == 0) return;
  Conv3dArgs a;
  a.bf16 = t == EType::BF16;
  a.x = x.raw();
  a.xs = {x.dim(0), x.dim(1), x.dim(2), x.dim(3)};
  a.w = w.raw();
  a.ws = {w.dim(0), w.dim(1), w.dim(2), w.dim(3), w.dim(4)};
  a.bias = bias ? bias->data_as<float>() : nullptr;
  a.y = out.raw();
  a.ys = {out.dim(0), out.dim(1), out.dim(2), out.dim(3)};  // conv3d_output_shape (Backend)
  a.stride = {p.stride_t, p.stride_h, p.stride_w};
  a.pad = {p.pad_top, p.pad_bottom, p.pad_left, p.pad_right};
  conv3d_forward(video(), a, ctx);
}

void CudaBackend::do_channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu,
                                      Tensor& out) {
  const char* op = "channel_rms_norm";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  require_device(gamma, op, "gamma");
  const int64_t c = x.dim(-1);
  if (!c || !x.numel()) return;
  OpScope scope(stream(), op);
  launch_channel_rms_norm(x.raw(), t, gamma.data_as<float>(), out.raw(), x.numel() / c, c, silu,
                          stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_upsample_nearest2x(const Tensor& x, Tensor& out) {
  const char* op = "upsample_nearest2x";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  OpScope scope(stream(), op);
  launch_upsample_nearest2x(x.raw(), out.raw(), t, x.dim(0), x.dim(1), x.dim(2), x.dim(3),
                            stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::video_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                  bool causal) {
  const char* op = causal ? "causal_video_attention" : "frame_attention";
  const EType t = video_type(op, {{&q, "q"}, {&k, "k"}, {&v, "v"}, {&out, "output"}});
  const int64_t frames = q.dim(0), n = q.dim(1) * q.dim(2), c = q.dim(3);
  if (!q.numel()) return;
  OpScope scope(stream(), op);
  // Scores of at most 256 MiB at a time (blocks of query rows against their keys: the frame's,
  // or with `causal` every frame's up to it), and for BF16 their probabilities in bf16.
  const int64_t keys = causal ? frames * n : n;
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{64} << 20) / keys));
  Tensor scores = empty({rows, keys}, DType::F32);
  Tensor probs;
  if (t == EType::BF16) probs = empty({rows, keys}, DType::BF16);
  frame_attention_forward(video(), t == EType::BF16, q.raw(), k.raw(), v.raw(), out.raw(), c,
                          frames, n, scores.data_as<float>(),
                          probs.defined() ? probs.raw() : nullptr, rows, desc(q), causal);
}

void CudaBackend::do_frame_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                     Tensor& out) {
  video_attention(q, k, v, out, /*causal=*/false);
}

// Rows of `channels` elements, one per pixel of the frame block, between the two channel
// pitches: one 2D copy (one contiguous copy when both sides are whole pixels).
void CudaBackend::do_copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst,
                                 int64_t dst_c, int64_t dst_f, int64_t channels, int64_t frames) {
  const char* op = "copy_frames";
  const EType t = video_type(op, {{&src, "source"}, {&dst, "destination"}});
  int64_t frame_pixels = 1;  // the dims between the frames and the channels
  for (int i = 1; i + 1 < src.ndim(); ++i) frame_pixels *= src.dim(i);
  if (!frame_pixels || !channels || !frames) return;
  OpScope scope(stream(), op);
  const size_t elt = t == EType::BF16 ? 2 : 4;
  const int64_t sc = src.dim(-1), dc = dst.dim(-1), rows = frames * frame_pixels;
  const char* s = static_cast<const char*>(src.raw()) + (src_f * frame_pixels * sc + src_c) * elt;
  char* d = static_cast<char*>(dst.raw()) + (dst_f * frame_pixels * dc + dst_c) * elt;
  const std::string ctx = desc(src) + " -> " + desc(dst);
  if (channels == sc && channels == dc)
    check(cudaMemcpyAsync(d, s, static_cast<size_t>(rows * channels) * elt,
                          cudaMemcpyDeviceToDevice, stream()),
          op, ctx);
  else
    check(cudaMemcpy2DAsync(d, dc * elt, s, sc * elt, channels * elt, static_cast<size_t>(rows),
                            cudaMemcpyDeviceToDevice, stream()),
          op, ctx);
}

void CudaBackend::do_fill_zero(Tensor& x) {
  require_device(x, "fill_zero", "tensor");
  if (x.nbytes()) check(cudaMemsetAsync(x.raw(), 0, x.nbytes(), stream()), "fill_zero", desc(x));
}

void CudaBackend::do_batch_transpose(const Tensor& x, int64_t batch, int64_t rows, int64_t cols,
                                     Tensor& out) {
  const char* op = "batch_transpose";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  OpScope scope(stream(), op);
  launch_transpose(x.raw(), out.raw(), t, batch, rows, cols, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  const char* op = "avg_down3d";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  OpScope scope(stream(), op);
  launch_avg_down3d(x.raw(), out.raw(), t, x.dim(0), x.dim(1), x.dim(2), x.dim(3), out.dim(3), ft,
                    fs, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  const char* op = "dup_up3d";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  OpScope scope(stream(), op);
  launch_dup_up3d(x.raw(), out.raw(), t, x.dim(0), x.dim(1), x.dim(2), x.dim(3), out.dim(3), ft, fs,
                  skip, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::do_space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  const char* op = "space_to_channels2";
  const EType t = video_type(op, {{&x, "input"}, {&out, "output"}});
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  OpScope scope(stream(), op);
  launch_space_to_channels2(x.raw(), out.raw(), t, small.dim(0), small.dim(1), small.dim(2),
                            big.dim(3), inverse, stream());
  check_launch(op, desc(x), stream());
}

}  // namespace fisdit::cuda
