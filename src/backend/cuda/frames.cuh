#pragma once
// Launchers of frames.cu: FIS anchor gather and linear reconstruction (FIS.md), and patchify /
// unpatchify of the latent.
#include <cuda_runtime.h>

#include <array>
#include <cstdint>

#include "backend/cuda/cuda_internal.h"

namespace fisdit::cuda {

struct InterpPlan {  // FIS.md linear reconstruction, per destination frame
  int frames = 0;
  int32_t slot[kMaxFrames];  // left anchor slot in src
  float wa[kMaxFrames];      // (b - f), 0 on anchors
  float wb[kMaxFrames];      // (f - a)
  float span[kMaxFrames];    // (b - a), 1 on anchors
};

void launch_gather_frames(const void* src, void* dst, int64_t frame_bytes, const FrameList& frames,
                          cudaStream_t s);
void launch_interpolate_frames(const void* src, EType st, float* dst, int64_t frame_elems,
                               const InterpPlan& plan, bool accumulate, cudaStream_t s);
// y [A, frame_elems] anchor rows after a block, x [T, frame_elems] before it (FIS delta).
void launch_reconstruct_delta(const float* y, float* x, int64_t frame_elems,
                              const FrameList& anchors, cudaStream_t s);
void launch_patchify(const float* x, float* out, int64_t c, int64_t f, int64_t h, int64_t w,
                     std::array<int, 3> patch, cudaStream_t s);
void launch_unpatchify(const float* x, float* out, int64_t c, int64_t gf, int64_t gh, int64_t gw,
                       std::array<int, 3> patch, cudaStream_t s);

}  // namespace fisdit::cuda
