// The CPU backend's video VAE ops on channels-last [T, H, W, C] tensors, each against its
// definition written out, and umT5 ops the model tests do not pin down on their own; the errors
// of bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/layout.h"
#include "fisdit/error.h"

namespace fisdit {
namespace {

Tensor iota(const Shape& s) {
  Tensor t = Tensor::zeros(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(i);
  return t;
}

Tensor random(const Shape& s, uint32_t seed) {
  Tensor r = Tensor::zeros(s);
  uint32_t z = seed;
  for (int64_t i = 0; i < r.numel(); ++i) {
    z = z * 1664525u + 1013904223u;
    r.f32()[i] = static_cast<float>(z >> 8) / 16777216.0f - 0.5f;
  }
  return r;
}

// Video tensors are [T, H, W, C]; index of (f, i, j, c).
int64_t at(const Tensor& x, int64_t f, int64_t i, int64_t j, int64_t c) {
  return ((f * x.dim(1) + i) * x.dim(2) + j) * x.dim(3) + c;
}

// conv3d against its definition summed in float64: kt = 3, stride 2 in space with Wan's
// asymmetric (0, 1, 0, 1) padding, a time stride, and a 1x1x1 conv.
TEST(CpuVideoOps, Conv3dMatchesItsDefinition) {
  auto be = make_cpu_backend();
  struct Case {
    Shape x, w;
    Conv3dParams p;
  };
  Conv3dParams down;
  down.stride_h = down.stride_w = 2;
  down.pad_bottom = down.pad_right = 1;
  Conv3dParams same;
  same.pad_top = same.pad_bottom = same.pad_left = same.pad_right = 1;
  Conv3dParams time;
  time.stride_t = 2;
  for (const Case& cs :
       {Case{{4, 5, 6, 3}, {7, 3, 3, 3, 3}, same}, Case{{2, 6, 4, 5}, {3, 1, 3, 3, 5}, down},
        Case{{5, 3, 2, 4}, {6, 3, 1, 1, 4}, time}, Case{{1, 2, 3, 9}, {2, 1, 1, 1, 9}, {}}}) {
    const Tensor x = random(cs.x, 1), w = random(cs.w, 2), b = random({cs.w[0]}, 3);
    Tensor out = Tensor::zeros(conv3d_output_shape(cs.x, cs.w, cs.p));
    be->flops().reset();
    be->conv3d(x, w, &b, cs.p, out);
    double err = 0, norm = 0, products = 0;
    for (int64_t f = 0; f < out.dim(0); ++f)
      for (int64_t i = 0; i < out.dim(1); ++i)
        for (int64_t j = 0; j < out.dim(2); ++j)
          for (int64_t co = 0; co < out.dim(3); ++co) {
            double acc = b.f32()[co];
            for (int64_t dt = 0; dt < cs.w[1]; ++dt)
              for (int64_t dh = 0; dh < cs.w[2]; ++dh)
                for (int64_t dw = 0; dw < cs.w[3]; ++dw)
                  for (int64_t ci = 0; ci < cs.w[4]; ++ci) {
                    const int64_t ii = i * cs.p.stride_h - cs.p.pad_top + dh,
                                  jj = j * cs.p.stride_w - cs.p.pad_left + dw;
                    ++products;  // the zero padding's too: the kernel runs them
                    if (ii < 0 || ii >= x.dim(1) || jj < 0 || jj >= x.dim(2)) continue;
                    acc += double(w.f32()[(((co * cs.w[1] + dt) * cs.w[2] + dh) * cs.w[3] + dw) *
                                              cs.w[4] +
                                          ci]) *
                           x.f32()[at(x, f * cs.p.stride_t + dt, ii, jj, ci)];
                  }
            const double d = out.f32()[at(out, f, i, j, co)] - acc;
            err += d * d;
            norm += acc * acc;
          }
    EXPECT_LE(std::sqrt(err / norm), 1e-6) << shape_str(cs.x) << " * " << shape_str(cs.w);
    EXPECT_EQ(be->flops().conv, 2 * products) << shape_str(cs.x) << " * " << shape_str(cs.w);
    EXPECT_EQ(be->flops().total(), be->flops().conv);
  }
  Tensor bad = Tensor::zeros({4, 5, 6, 7});
  EXPECT_THROW(be->conv3d(random({4, 5, 6, 3}, 1), random({7, 3, 3, 3, 4}, 2), nullptr, same, bad),
               Error);
}

TEST(CpuVideoOps, ChannelRmsNormAndUpsampleWorkOnTheLastDim) {
  auto be = make_cpu_backend();
  const Tensor x = random({2, 3, 2, 5}, 4), gamma = random({5}, 5);
  Tensor out = Tensor::zeros(x.shape());
  be->channel_rms_norm(x, gamma, true, out);
  for (int64_t p = 0; p < 12; ++p) {
    double sq = 0;
    for (int64_t c = 0; c < 5; ++c) sq += double(x.f32()[p * 5 + c]) * x.f32()[p * 5 + c];
    for (int64_t c = 0; c < 5; ++c) {
      const double v = x.f32()[p * 5 + c] / std::sqrt(sq) * std::sqrt(5.0) * gamma.f32()[c];
      EXPECT_NEAR(out.f32()[p * 5 + c], v / (1 + std::exp(-v)), 1e-6);
    }
  }
  Tensor up = Tensor::zeros({2, 6, 4, 5});
  be->upsample_nearest2x(x, up);
  for (int64_t f = 0; f < 2; ++f)
    for (int64_t i = 0; i < 6; ++i)
      for (int64_t j = 0; j < 4; ++j)
        for (int64_t c = 0; c < 5; ++c)
          EXPECT_EQ(up.f32()[at(up, f, i, j, c)], x.f32()[at(x, f, i / 2, j / 2, c)]);
}

TEST(CpuVideoOps, CopyFramesMovesABlockOfChannelsAndFrames) {
  auto be = make_cpu_backend();
  const Tensor src = iota({4, 2, 2, 3});
  Tensor dst = Tensor::zeros({5, 2, 2, 2});
  be->copy_frames(src, 1, 2, dst, 0, 3, 2, 2);  // channels 1..2, frames 2..3 -> frames 3..4
  for (int64_t f = 0; f < 5; ++f)
    for (int64_t p = 0; p < 4; ++p)
      for (int64_t c = 0; c < 2; ++c) {
        const float got = dst.f32()[(f * 4 + p) * 2 + c];
        const float want = f >= 3 ? src.f32()[((f - 1) * 4 + p) * 3 + c + 1] : 0.0f;
        EXPECT_EQ(got, want) << c << " " << f << " " << p;
      }
  try {
    be->copy_frames(src, 0, 3, dst, 0, 0, 2, 2);  // frames 3..4 of a 4-frame source
    FAIL() << "out-of-range block accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("copy_frames"), std::string::npos) << e.what();
  }
}

TEST(CpuVideoOps, SpaceToChannelsRoundTripsAndPlacesPixels) {
  auto be = make_cpu_backend();
  const Tensor x = iota({3, 4, 6, 2});
  Tensor small = Tensor::zeros({3, 2, 3, 8}), back = Tensor::zeros(x.shape());
  be->space_to_channels2(x, small, false);
  be->space_to_channels2(small, back, true);
  EXPECT_EQ(rel_l2(back, x), 0.0);
  // channel c*4 + r*2 + q holds pixel (2h + q, 2w + r): c=1, r=1, q=0, frame 2, h=1, w=2.
  EXPECT_EQ(small.f32()[at(small, 2, 1, 2, 6)], x.f32()[at(x, 2, 2, 5, 1)]);
  Tensor odd = Tensor::zeros({3, 2, 2, 8});
  EXPECT_THROW(be->space_to_channels2(x, odd, false), Error);
}

// Wan 2.2 AvgDown3D / DupUp3D against vae2_2.py's reshapes written out: AvgDown3D views the
// (front-padded) input as [C, T/ft, ft, H/fs, fs, W/fs, fs], moves (C, ft, fs, fs) together and
// averages groups of C ft fs fs / Co; DupUp3D repeats each channel and unfolds the same way.
TEST(CpuVideoOps, AvgDownAndDupUpFollowTheOfficialOrder) {
  auto be = make_cpu_backend();
  const int ft = 2, fs = 2;
  const Tensor x = random({3, 4, 6, 4}, 7);  // T = 3: one zero frame in front
  Tensor down = Tensor::zeros({2, 2, 3, 8});
  be->avg_down3d(x, ft, fs, down);
  const int64_t group = 4 * ft * fs * fs / 8;
  for (int64_t f = 0; f < 2; ++f)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t o = 0; o < 8; ++o) {
          double sum = 0;
          for (int64_t g = 0; g < group; ++g) {
            const int64_t k = o * group + g, ci = k / (ft * fs * fs), r = k % (ft * fs * fs);
            const int64_t tf = f * ft + r / (fs * fs) - 1;
            if (tf >= 0) sum += x.f32()[at(x, tf, i * fs + (r / fs) % fs, j * fs + r % fs, ci)];
          }
          EXPECT_NEAR(down.f32()[at(down, f, i, j, o)], sum / group, 1e-6);
        }
  Tensor up = Tensor::zeros({3, 4, 6, 4});  // first chunk: skip ft - 1 = 1 frame
  be->dup_up3d(down.reshape({2, 2, 3, 8}), ft, fs, 1, up);
  const int64_t repeats = 4 * ft * fs * fs / 8;
  for (int64_t f = 0; f < 3; ++f)
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t j = 0; j < 6; ++j)
        for (int64_t o = 0; o < 4; ++o) {
          const int64_t tf = f + 1;
          const int64_t src =
              (o * ft * fs * fs + ((tf % ft) * fs + i % fs) * fs + j % fs) / repeats;
          EXPECT_EQ(up.f32()[at(up, f, i, j, o)],
                    down.f32()[at(down, tf / ft, i / fs, j / fs, src)]);
        }
}

// HunyuanVideo 1.5 VAE ops, each against its definition written out.
TEST(CpuVideoOps, ReplicatePadRepeatsEdgesAndFrameZero) {
  auto be = make_cpu_backend();
  const Tensor x = iota({3, 2, 3, 2});
  Tensor out = Tensor::zeros({5, 4, 5, 2});
  be->pad_replicate(x, 2, 1, out);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t f = 0; f < 5; ++f)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 5; ++j) {
          const int64_t sf = std::max<int64_t>(f - 2, 0), si = std::clamp<int64_t>(i - 1, 0, 1),
                        sj = std::clamp<int64_t>(j - 1, 0, 2);
          EXPECT_EQ(out.f32()[at(out, f, i, j, c)], x.f32()[at(x, sf, si, sj, c)]);
        }
}

TEST(CpuVideoOps, SpaceToChannelsWithTimeUsesTheR1R2R3COrder) {
  auto be = make_cpu_backend();
  for (int rt : {1, 2}) {
    const int64_t c = 3, t = 2, h = 2, w = 3;
    const Tensor x = iota({t * rt, 2 * h, 2 * w, c});
    Tensor small = Tensor::zeros({t, h, w, 4 * rt * c});
    be->space_to_channels(x, rt, small, false);
    // einops "c (t r1) (h r2) (w r3) -> (r1 r2 r3 c) t h w", channels last
    for (int64_t r1 = 0; r1 < rt; ++r1)
      for (int64_t r2 = 0; r2 < 2; ++r2)
        for (int64_t r3 = 0; r3 < 2; ++r3)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t f = 0; f < t; ++f)
              for (int64_t i = 0; i < h; ++i)
                for (int64_t j = 0; j < w; ++j) {
                  const int64_t oc = ((r1 * 2 + r2) * 2 + r3) * c + ch;
                  EXPECT_EQ(small.f32()[at(small, f, i, j, oc)],
                            x.f32()[at(x, f * rt + r1, 2 * i + r2, 2 * j + r3, ch)]);
                }
    Tensor back = Tensor::zeros(x.shape());
    be->space_to_channels(small, rt, back, true);
    EXPECT_EQ(rel_l2(back, x), 0.0);
  }
  Tensor bad = Tensor::zeros({2, 2, 3, 4});
  EXPECT_THROW(be->space_to_channels(Tensor::zeros({3, 4, 4, 1}), 2, bad, false), Error);
}

TEST(CpuVideoOps, ChannelGroupMeanAndRepeat) {
  auto be = make_cpu_backend();
  const Tensor x = iota({1, 2, 2, 6});
  Tensor mean = Tensor::zeros({1, 2, 2, 2});
  be->channel_group_mean(x, 3, mean);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t c = 0; c < 2; ++c)
      EXPECT_FLOAT_EQ(mean.f32()[i * 2 + c], (x.f32()[i * 6 + 3 * c] + x.f32()[i * 6 + 3 * c + 1] +
                                              x.f32()[i * 6 + 3 * c + 2]) /
                                                 3.0f);
  Tensor rep = Tensor::zeros({1, 2, 2, 12});
  be->channel_repeat(x, 2, rep);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t o = 0; o < 12; ++o) EXPECT_EQ(rep.f32()[i * 12 + o], x.f32()[i * 6 + o / 2]);
  EXPECT_THROW(be->channel_group_mean(x, 4, mean), Error);
}

// Frame and frame-causal attention against float64 softmax attention with the mask written out.
TEST(CpuVideoOps, VideoAttentionSeesItsFrameOrTheEarlierFrames) {
  auto be = make_cpu_backend();
  const int64_t c = 5, t = 3, h = 2, w = 2, n = h * w, tokens = t * n;
  const Tensor q = random({t, h, w, c}, 1), k = random({t, h, w, c}, 2),
               v = random({t, h, w, c}, 3);
  for (bool causal : {false, true}) {
    Tensor out = Tensor::zeros({t, h, w, c});
    be->flops().reset();
    if (causal)
      be->causal_video_attention(q, k, v, out);
    else
      be->frame_attention(q, k, v, out);
    Tensor ref = Tensor::zeros({t, h, w, c});
    double pairs = 0;  // (query, key) pairs: c products in q k^T and c in P v each
    for (int64_t i = 0; i < tokens; ++i) {
      std::vector<double> p;
      double mx = -1e300, sum = 0;
      const int64_t first = causal ? 0 : (i / n) * n;
      for (int64_t j = first; j < (i / n + 1) * n; ++j) {
        ++pairs;
        double s = 0;
        for (int64_t ch = 0; ch < c; ++ch) s += double(q.f32()[i * c + ch]) * k.f32()[j * c + ch];
        p.push_back(s / std::sqrt(double(c)));
        mx = std::max(mx, p.back());
      }
      for (double& e : p) sum += (e = std::exp(e - mx));
      for (int64_t ch = 0; ch < c; ++ch) {
        double acc = 0;
        for (size_t j = 0; j < p.size(); ++j) acc += p[j] * v.f32()[(first + int64_t(j)) * c + ch];
        ref.f32()[i * c + ch] = static_cast<float>(acc / sum);
      }
    }
    EXPECT_LE(rel_l2(out, ref), 1e-6) << causal;
    EXPECT_EQ(be->flops().attention, 4.0 * c * pairs) << causal;
  }
}

// The channels-last moves: the host axis moves (video and weights in and out of the VAEs) and the
// backend's batch transpose behind conv_weight_channels_last, each against its index formula.
TEST(CpuVideoOps, ChannelsLastMovesPlaceEveryValue) {
  const Tensor x = iota({2, 3, 4, 5});  // channels at axis 1: [2, 3, 4 5] -> [2, 4 5, 3]
  const Tensor last = channels_to_last(x, 1);
  ASSERT_EQ(last.shape(), (Shape{2, 4, 5, 3}));
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < 20; ++i)
        EXPECT_EQ(last.f32()[(o * 20 + i) * 3 + c], x.f32()[(o * 3 + c) * 20 + i]);
  const Tensor back = channels_from_last(last, 1);
  ASSERT_EQ(back.shape(), x.shape());
  EXPECT_EQ(rel_l2(back, x), 0.0);
  EXPECT_THROW(channels_to_last(x, 4), Error);

  auto be = make_cpu_backend();
  const Tensor w = iota({4, 3, 2, 1, 5});  // [Cout, Cin, kt, kh, kw]
  const Tensor wl = conv_weight_channels_last(*be, w);
  ASSERT_EQ(wl.shape(), (Shape{4, 2, 1, 5, 3}));
  for (int64_t co = 0; co < 4; ++co)
    for (int64_t ci = 0; ci < 3; ++ci)
      for (int64_t k = 0; k < 10; ++k)
        EXPECT_EQ(wl.f32()[(co * 10 + k) * 3 + ci], w.f32()[(co * 3 + ci) * 10 + k]);
  Tensor out = Tensor::zeros({4, 30});
  EXPECT_THROW(be->batch_transpose(w, 4, 3, 9, out), Error);  // 120 values are not 4 x 3 x 9
}

TEST(CpuVideoOps, TheCpuRunsTheVideoOpsInF32Only) {
  auto be = make_cpu_backend();
  EXPECT_EQ(be->video_dtype(), DType::F32);
  EXPECT_THROW(be->set_video_dtype(DType::BF16), Error);
  Tensor out = Tensor::zeros({1, 2, 2, 3});
  Tensor bf = Tensor::zeros({1, 2, 2, 3}, DType::BF16);
  EXPECT_THROW(be->channel_group_mean(bf, 1, out), Error);  // mixed dtypes
}

TEST(CpuVideoOps, MulAndRelBiasArgumentChecks) {
  auto be = make_cpu_backend();
  Tensor x = iota({2, 3});
  be->mul(x, iota({2, 3}));
  EXPECT_EQ(x.f32()[5], 25.0f);
  EXPECT_THROW(be->mul(x, iota({2, 2})), Error);
  const Tensor q = Tensor::zeros({4, 2, 8});
  Tensor out = Tensor::zeros({4, 2, 8});
  const Tensor table = Tensor::zeros({32, 2});
  std::vector<int32_t> buckets(7, 0);
  const std::vector<uint8_t> valid(4, 1);
  buckets[3] = 32;  // outside the table
  EXPECT_THROW(be->attention_rel_bias(q, q, q, table, buckets, valid, out), Error);
  buckets[3] = 31;
  be->attention_rel_bias(q, q, q, table, buckets, valid, out);  // all zeros in, zeros out
  EXPECT_EQ(out.f32()[0], 0.0f);
}

}  // namespace
}  // namespace fisdit
