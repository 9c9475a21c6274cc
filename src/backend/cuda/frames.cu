// Frame-structured kernels: FIS anchor gather and linear reconstruction (FIS.md), patchify /
// unpatchify of the latent. Launchers declared in frames.cuh, called by frames.cpp.
#include "backend/cuda/frames.cuh"
#include "backend/cuda/kernel_util.cuh"

namespace fisdit::cuda {

namespace {

// dst frame i = src frame frames[i]; `Word` is the copy unit (16, 4 or 1 bytes).
template <class Word>
__global__ void gather_kernel(const Word* src, Word* dst, int64_t frame_words, FrameList frames) {
  const int64_t n = frame_words * frames.count;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t f = i / frame_words, w = i - f * frame_words;
    dst[i] = src[frames.frame[f] * frame_words + w];
  }
}

// Z_f = ((b - f) Z_a + (f - a) Z_b) / (b - a); anchors copy Z_a exactly (wb = 0, span = 1).
__global__ void interpolate_kernel(const void* src, EType st, float* dst, int64_t frame_elems,
                                   InterpPlan plan, bool accumulate) {
  const int64_t n = frame_elems * plan.frames;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t f = i / frame_elems, e = i - f * frame_elems;
    const int64_t a = plan.slot[f] * frame_elems + e;
    float z;
    if (plan.wb[f] == 0.0f) {
      z = load(src, st, a);
    } else {
      z = (plan.wa[f] * load(src, st, a) + plan.wb[f] * load(src, st, a + frame_elems)) /
          plan.span[f];
    }
    dst[i] = accumulate ? dst[i] + z : z;
  }
}

// The same, 4 channels per thread (frame_elems % 4 == 0, aligned): one frame per blockIdx.y.
__global__ void interpolate_vec4_kernel(const void* src, EType st, float* dst, int64_t frame_elems,
                                        InterpPlan plan, bool accumulate) {
  const int f = blockIdx.y;
  const int64_t n4 = frame_elems / 4;
  const int64_t a = plan.slot[f] * n4;
  const bool anchor = plan.wb[f] == 0.0f;
  const float wa = plan.wa[f], wb = plan.wb[f], inv_span = 1.0f / plan.span[f];
  float4* out = reinterpret_cast<float4*>(dst) + f * n4;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += int64_t{gridDim.x} * blockDim.x) {
    float za[4], zb[4] = {0, 0, 0, 0};
    auto fetch = [&](int64_t idx, float* v) {
      if (st == EType::BF16) {
        const uint2 raw = reinterpret_cast<const uint2*>(src)[idx];
        const __nv_bfloat162 lo = *reinterpret_cast<const __nv_bfloat162*>(&raw.x);
        const __nv_bfloat162 hi = *reinterpret_cast<const __nv_bfloat162*>(&raw.y);
        v[0] = __low2float(lo);
        v[1] = __high2float(lo);
        v[2] = __low2float(hi);
        v[3] = __high2float(hi);
      } else {
        const float4 q = reinterpret_cast<const float4*>(src)[idx];
        v[0] = q.x;
        v[1] = q.y;
        v[2] = q.z;
        v[3] = q.w;
      }
    };
    fetch(a + i, za);
    if (!anchor) fetch(a + n4 + i, zb);
    float z[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) z[c] = anchor ? za[c] : (wa * za[c] + wb * zb[c]) * inv_span;
    float4 o = accumulate ? out[i] : make_float4(0, 0, 0, 0);
    o.x += z[0];
    o.y += z[1];
    o.z += z[2];
    o.w += z[3];
    out[i] = o;
  }
}

// FIS delta reconstruction of a block (Backend::reconstruct_frames_delta). Each thread owns 4
// channels of one token position across all frames: it reads every anchor's old and new value
// once, updates the skipped frames between consecutive anchors and then writes the anchor, so
// no thread reads what another writes. anchors.frame[0] == 0, anchors.frame[count-1] == T-1.
__global__ void reconstruct_delta_vec4_kernel(const float4* __restrict__ y, float4* __restrict__ x,
                                              int64_t n4, FrameList anchors) {
  __shared__ int32_t frame[kMaxFrames];
  for (int s = threadIdx.x; s < anchors.count; s += blockDim.x) frame[s] = anchors.frame[s];
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n4;
       i += int64_t{gridDim.x} * blockDim.x) {
    float4 ya = y[i];
    float4 xa = x[i];
    float4 da = make_float4(ya.x - xa.x, ya.y - xa.y, ya.z - xa.z, ya.w - xa.w);
    x[i] = ya;
    for (int s = 0; s + 1 < anchors.count; ++s) {
      const int fa = frame[s], fb = frame[s + 1];
      const float4 yb = y[(s + 1) * n4 + i];
      const float4 xb = x[fb * n4 + i];
      const float4 db = make_float4(yb.x - xb.x, yb.y - xb.y, yb.z - xb.z, yb.w - xb.w);
      const float span = static_cast<float>(fb - fa);
      for (int f = fa + 1; f < fb; ++f) {
        const float wa = static_cast<float>(fb - f), wb = static_cast<float>(f - fa);
        float4 o = x[f * n4 + i];
        o.x += (wa * da.x + wb * db.x) / span;
        o.y += (wa * da.y + wb * db.y) / span;
        o.z += (wa * da.z + wb * db.z) / span;
        o.w += (wa * da.w + wb * db.w) / span;
        x[f * n4 + i] = o;
      }
      x[fb * n4 + i] = yb;
      da = db;
    }
  }
}

// The same, one element per thread (frame sizes not a multiple of 4 or unaligned buffers).
__global__ void reconstruct_delta_kernel(const float* __restrict__ y, float* __restrict__ x,
                                         int64_t n, FrameList anchors) {
  __shared__ int32_t frame[kMaxFrames];
  for (int s = threadIdx.x; s < anchors.count; s += blockDim.x) frame[s] = anchors.frame[s];
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    float da = y[i] - x[i];
    x[i] = y[i];
    for (int s = 0; s + 1 < anchors.count; ++s) {
      const int fa = frame[s], fb = frame[s + 1];
      const float yb = y[(s + 1) * n + i];
      const float db = yb - x[fb * n + i];
      const float span = static_cast<float>(fb - fa);
      for (int f = fa + 1; f < fb; ++f)
        x[f * n + i] += (static_cast<float>(fb - f) * da + static_cast<float>(f - fa) * db) / span;
      x[fb * n + i] = yb;
      da = db;
    }
  }
}

// out[token, (ch, i, j, l)] = x[ch, a*pt+i, b*ph+j, e*pw+l], tokens (a, b, e).
__global__ void patchify_kernel(const float* x, float* out, int64_t c, int64_t f, int64_t h,
                                int64_t w, int pt, int ph, int pw) {
  const int64_t gh = h / ph, gw = w / pw, k = c * pt * ph * pw;
  const int64_t n = c * f * h * w;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < n;
       o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t token = o / k;
    int64_t idx = o - token * k;
    const int l = static_cast<int>(idx % pw);
    idx /= pw;
    const int j = static_cast<int>(idx % ph);
    idx /= ph;
    const int i = static_cast<int>(idx % pt);
    const int64_t ch = idx / pt;
    const int64_t e = token % gw, b = (token / gw) % gh, a = token / (gw * gh);
    out[o] = x[((ch * f + a * pt + i) * h + b * ph + j) * w + e * pw + l];
  }
}

// out[ch, f, h, w] from x[token, ((i*ph + j)*pw + l)*c + ch] (einsum 'fhwpqrc->cfphqwr').
__global__ void unpatchify_kernel(const float* x, float* out, int64_t c, int64_t gf, int64_t gh,
                                  int64_t gw, int pt, int ph, int pw) {
  const int64_t f = gf * pt, h = gh * ph, w = gw * pw;
  const int64_t n = c * f * h * w, row = c * pt * ph * pw;
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < n;
       o += int64_t{gridDim.x} * blockDim.x) {
    const int64_t xx = o % w, yy = (o / w) % h, ff = (o / (w * h)) % f, ch = o / (w * h * f);
    const int64_t a = ff / pt, i = ff % pt, b = yy / ph, j = yy % ph, e = xx / pw, l = xx % pw;
    const int64_t token = (a * gh + b) * gw + e;
    out[o] = x[token * row + ((i * ph + j) * pw + l) * c + ch];
  }
}

}  // namespace

void launch_gather_frames(const void* src, void* dst, int64_t frame_bytes, const FrameList& frames,
                          cudaStream_t s) {
  const int64_t total = frame_bytes * frames.count;
  if (total == 0) return;
  const auto aligned = [&](int64_t a) {
    return frame_bytes % a == 0 && reinterpret_cast<uintptr_t>(src) % a == 0 &&
           reinterpret_cast<uintptr_t>(dst) % a == 0;
  };
  if (aligned(16)) {
    gather_kernel<<<grid_for(total / 16, 256), 256, 0, s>>>(
        static_cast<const uint4*>(src), static_cast<uint4*>(dst), frame_bytes / 16, frames);
  } else if (aligned(4)) {
    gather_kernel<<<grid_for(total / 4, 256), 256, 0, s>>>(
        static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), frame_bytes / 4, frames);
  } else {
    gather_kernel<<<grid_for(total, 256), 256, 0, s>>>(
        static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), frame_bytes, frames);
  }
  check_launch("gather_frames", "", s);
}

void launch_interpolate_frames(const void* src, EType st, float* dst, int64_t frame_elems,
                               const InterpPlan& plan, bool accumulate, cudaStream_t s) {
  const int64_t n = frame_elems * plan.frames;
  if (n == 0) return;
  const bool vec = frame_elems % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(src) % (st == EType::F32 ? 16 : 8) == 0;
  if (vec) {
    const dim3 grid(grid_for(frame_elems / 4, 256, 4096), static_cast<unsigned>(plan.frames));
    interpolate_vec4_kernel<<<grid, 256, 0, s>>>(src, st, dst, frame_elems, plan, accumulate);
  } else {
    interpolate_kernel<<<grid_for(n, 256), 256, 0, s>>>(src, st, dst, frame_elems, plan,
                                                        accumulate);
  }
  check_launch("interpolate_frames", "", s);
}

void launch_reconstruct_delta(const float* y, float* x, int64_t frame_elems,
                              const FrameList& anchors, cudaStream_t s) {
  if (frame_elems == 0) return;
  const bool vec = frame_elems % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(y) % 16 == 0;
  if (vec) {
    const int64_t n4 = frame_elems / 4;
    reconstruct_delta_vec4_kernel<<<grid_for(n4, 256), 256, 0, s>>>(
        reinterpret_cast<const float4*>(y), reinterpret_cast<float4*>(x), n4, anchors);
  } else {
    reconstruct_delta_kernel<<<grid_for(frame_elems, 256), 256, 0, s>>>(y, x, frame_elems, anchors);
  }
  check_launch("reconstruct_frames_delta", "", s);
}

void launch_patchify(const float* x, float* out, int64_t c, int64_t f, int64_t h, int64_t w,
                     std::array<int, 3> patch, cudaStream_t s) {
  const int64_t n = c * f * h * w;
  if (n == 0) return;
  patchify_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, out, c, f, h, w, patch[0], patch[1],
                                                   patch[2]);
  check_launch("patchify", "", s);
}

void launch_unpatchify(const float* x, float* out, int64_t c, int64_t gf, int64_t gh, int64_t gw,
                       std::array<int, 3> patch, cudaStream_t s) {
  const int64_t n = c * gf * gh * gw * patch[0] * patch[1] * patch[2];
  if (n == 0) return;
  unpatchify_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, out, c, gf, gh, gw, patch[0], patch[1],
                                                     patch[2]);
  check_launch("unpatchify", "", s);
}

}  // namespace fisdit::cuda
