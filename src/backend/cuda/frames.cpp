// The CUDA backend's frame ops next to their kernels (frames.cu): the FIS anchor gather, the
// linear reconstruction of skipped frames (per-frame weights planned here, passed by value) and
// its block delta form (FIS.md), and patchify / unpatchify of the latent.
#include <vector>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/frames.cuh"
#include "backend/cuda/profile.h"

namespace fisdit::cuda {

void CudaBackend::do_gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                                   int64_t tokens_per_frame, Tensor& dst) {
  const char* op = "gather_frames";
  OpScope scope(stream(), op);
  require_device(src, op, "source");
  require_device(dst, op, "destination");
  const int64_t num_frames = src.dim(0) / tokens_per_frame;
  const int64_t frame_bytes = static_cast<int64_t>(src.nbytes()) / (num_frames ? num_frames : 1);
  launch_gather_frames(src.raw(), dst.raw(), frame_bytes, frame_list(frames, op), stream());
}

void CudaBackend::do_interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                                        int64_t tokens_per_frame, Tensor& dst, bool accumulate) {
  const char* op = "interpolate_frames";
  OpScope scope(stream(), op);
  require_device(src, op, "source");
  require_device(dst, op, "destination");
  const int64_t a = static_cast<int64_t>(anchors.size());
  const int64_t frames = dst.dim(0) / tokens_per_frame;
  require(frames <= kMaxFrames, op,
          std::to_string(frames) + " frames, the CUDA backend takes at most " +
              std::to_string(kMaxFrames));
  InterpPlan plan;
  plan.frames = static_cast<int>(frames);
  for (int64_t s = 0; s < a; ++s) {
    const int64_t end = s + 1 < a ? anchors[s + 1] : anchors[s] + 1;
    for (int64_t f = anchors[s]; f < end; ++f) {
      plan.slot[f] = static_cast<int32_t>(s);
      if (f == anchors[s]) {
        plan.wa[f] = 1.0f;
        plan.wb[f] = 0.0f;
        plan.span[f] = 1.0f;
      } else {
        plan.wa[f] = static_cast<float>(anchors[s + 1] - f);
        plan.wb[f] = static_cast<float>(f - anchors[s]);
        plan.span[f] = static_cast<float>(anchors[s + 1] - anchors[s]);
      }
    }
  }
  launch_interpolate_frames(src.raw(), etype(src.dtype(), op, "source"), dst.data_as<float>(),
                            tokens_per_frame * dst.dim(1), plan, accumulate, stream());
}

void CudaBackend::do_reconstruct_frames_delta(const Tensor& anchor_rows,
                                              const std::vector<int32_t>& anchors,
                                              int64_t tokens_per_frame, Tensor& x) {
  const char* op = "reconstruct_frames_delta";
  OpScope scope(stream(), op);
  require_device(anchor_rows, op, "anchor rows");
  require_device(x, op, "hidden state");
  launch_reconstruct_delta(anchor_rows.data_as<float>(), x.data_as<float>(),
                           tokens_per_frame * x.dim(1), frame_list(anchors, op), stream());
}

void CudaBackend::do_patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) {
  const char* op = "patchify";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int64_t c = x.dim(0), f = x.dim(1), h = x.dim(2), w = x.dim(3);
  launch_patchify(x.data_as<float>(), out.data_as<float>(), c, f, h, w, patch, stream());
}

void CudaBackend::do_unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                                int64_t grid_h, int64_t grid_w, Tensor& out) {
  const char* op = "unpatchify";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  const int64_t c = x.dim(1) / (pt * ph * pw);
  launch_unpatchify(x.data_as<float>(), out.data_as<float>(), c, grid_f, grid_h, grid_w, patch,
                    stream());
}

}  // namespace fisdit::cuda
