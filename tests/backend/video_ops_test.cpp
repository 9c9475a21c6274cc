// The CPU backend's VAE and umT5 ops that the model tests do not pin down on their own: frame
// copies, the 2x2 patchify pair, the elementwise product, and the errors of bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "fisdit/error.h"

namespace fisdit {
namespace {

Tensor iota(const Shape& s) {
  Tensor t = Tensor::zeros(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(i);
  return t;
}

TEST(CpuVideoOps, CopyFramesMovesABlockOfChannelsAndFrames) {
  auto be = make_cpu_backend();
  const Tensor src = iota({3, 4, 2, 2});
  Tensor dst = Tensor::zeros({2, 5, 2, 2});
  be->copy_frames(src, 1, 2, dst, 0, 3, 2, 2);  // channels 1..2, frames 2..3 -> frames 3..4
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t f = 0; f < 5; ++f)
      for (int64_t p = 0; p < 4; ++p) {
        const float got = dst.f32()[(c * 5 + f) * 4 + p];
        const float want = f >= 3 ? src.f32()[((c + 1) * 4 + f - 1) * 4 + p] : 0.0f;
        EXPECT_EQ(got, want) << c << " " << f << " " << p;
      }
  try {
    be->copy_frames(src, 0, 3, dst, 0, 0, 3, 2);  // frames 3..4 of a 4-frame source
    FAIL() << "out-of-range block accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("copy_frames"), std::string::npos) << e.what();
  }
}

TEST(CpuVideoOps, SpaceToChannelsRoundTripsAndPlacesPixels) {
  auto be = make_cpu_backend();
  const Tensor x = iota({2, 3, 4, 6});
  Tensor small = Tensor::zeros({8, 3, 2, 3}), back = Tensor::zeros(x.shape());
  be->space_to_channels2(x, small, false);
  be->space_to_channels2(small, back, true);
  EXPECT_EQ(rel_l2(back, x), 0.0);
  // channel c*4 + r*2 + q holds pixel (2h + q, 2w + r): c=1, r=1, q=0, frame 2, h=1, w=2.
  EXPECT_EQ(small.f32()[((6 * 3 + 2) * 2 + 1) * 3 + 2], x.f32()[((1 * 3 + 2) * 4 + 2) * 6 + 5]);
  Tensor odd = Tensor::zeros({8, 3, 2, 2});
  EXPECT_THROW(be->space_to_channels2(x, odd, false), Error);
}

// HunyuanVideo 1.5 VAE ops, each against its definition written out.
TEST(CpuVideoOps, ReplicatePadRepeatsEdgesAndFrameZero) {
  auto be = make_cpu_backend();
  const Tensor x = iota({2, 3, 2, 3});
  Tensor out = Tensor::zeros({2, 5, 4, 5});
  be->pad_replicate(x, 2, 1, out);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t f = 0; f < 5; ++f)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 5; ++j) {
          const int64_t sf = std::max<int64_t>(f - 2, 0), si = std::clamp<int64_t>(i - 1, 0, 1),
                        sj = std::clamp<int64_t>(j - 1, 0, 2);
          EXPECT_EQ(out.f32()[((c * 5 + f) * 4 + i) * 5 + j],
                    x.f32()[((c * 3 + sf) * 2 + si) * 3 + sj]);
        }
}

TEST(CpuVideoOps, SpaceToChannelsWithTimeUsesTheR1R2R3COrder) {
  auto be = make_cpu_backend();
  for (int rt : {1, 2}) {
    const int64_t c = 3, t = 2, h = 2, w = 3;
    const Tensor x = iota({c, t * rt, 2 * h, 2 * w});
    Tensor small = Tensor::zeros({4 * rt * c, t, h, w});
    be->space_to_channels(x, rt, small, false);
    // einops "c (t r1) (h r2) (w r3) -> (r1 r2 r3 c) t h w"
    for (int64_t r1 = 0; r1 < rt; ++r1)
      for (int64_t r2 = 0; r2 < 2; ++r2)
        for (int64_t r3 = 0; r3 < 2; ++r3)
          for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t f = 0; f < t; ++f)
              for (int64_t i = 0; i < h; ++i)
                for (int64_t j = 0; j < w; ++j) {
                  const int64_t oc = ((r1 * 2 + r2) * 2 + r3) * c + ch;
                  EXPECT_EQ(small.f32()[((oc * t + f) * h + i) * w + j],
                            x.f32()[((ch * t * rt + f * rt + r1) * 2 * h + 2 * i + r2) * 2 * w +
                                    2 * j + r3]);
                }
    Tensor back = Tensor::zeros(x.shape());
    be->space_to_channels(small, rt, back, true);
    EXPECT_EQ(rel_l2(back, x), 0.0);
  }
  Tensor bad = Tensor::zeros({4, 3, 2, 2});
  EXPECT_THROW(be->space_to_channels(Tensor::zeros({1, 3, 4, 4}), 2, bad, false), Error);
}

TEST(CpuVideoOps, ChannelGroupMeanAndRepeat) {
  auto be = make_cpu_backend();
  const Tensor x = iota({6, 2, 2, 1});
  Tensor mean = Tensor::zeros({2, 2, 2, 1});
  be->channel_group_mean(x, 3, mean);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t i = 0; i < 4; ++i)
      EXPECT_FLOAT_EQ(
          mean.f32()[c * 4 + i],
          (x.f32()[(3 * c) * 4 + i] + x.f32()[(3 * c + 1) * 4 + i] + x.f32()[(3 * c + 2) * 4 + i]) /
              3.0f);
  Tensor rep = Tensor::zeros({12, 2, 2, 1});
  be->channel_repeat(x, 2, rep);
  for (int64_t o = 0; o < 12; ++o)
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(rep.f32()[o * 4 + i], x.f32()[(o / 2) * 4 + i]);
  EXPECT_THROW(be->channel_group_mean(x, 4, mean), Error);
}

// Frame-causal attention against float64 softmax attention with the mask written out.
TEST(CpuVideoOps, CausalVideoAttentionSeesEarlierFramesOnly) {
  auto be = make_cpu_backend();
  const int64_t c = 5, t = 3, h = 2, w = 2, n = h * w, tokens = t * n;
  auto rnd = [](const Shape& s, uint32_t seed) {
    Tensor r = Tensor::zeros(s);
    uint32_t z = seed;
    for (int64_t i = 0; i < r.numel(); ++i) {
      z = z * 1664525u + 1013904223u;
      r.f32()[i] = static_cast<float>(z >> 8) / 16777216.0f - 0.5f;
    }
    return r;
  };
  const Tensor q = rnd({c, t, h, w}, 1), k = rnd({c, t, h, w}, 2), v = rnd({c, t, h, w}, 3);
  Tensor out = Tensor::zeros({c, t, h, w});
  be->causal_video_attention(q, k, v, out);
  Tensor ref = Tensor::zeros({c, t, h, w});
  for (int64_t i = 0; i < tokens; ++i) {
    std::vector<double> p;
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < (i / n + 1) * n; ++j) {
      double s = 0;
      for (int64_t ch = 0; ch < c; ++ch)
        s += double(q.f32()[ch * tokens + i]) * k.f32()[ch * tokens + j];
      p.push_back(s / std::sqrt(double(c)));
      mx = std::max(mx, p.back());
    }
    for (double& e : p) sum += (e = std::exp(e - mx));
    for (int64_t ch = 0; ch < c; ++ch) {
      double acc = 0;
      for (size_t j = 0; j < p.size(); ++j) acc += p[j] * v.f32()[ch * tokens + int64_t(j)];
      ref.f32()[ch * tokens + i] = static_cast<float>(acc / sum);
    }
  }
  EXPECT_LE(rel_l2(out, ref), 1e-6);
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
