// The CPU backend's VAE and umT5 ops that the model tests do not pin down on their own: frame
// copies, the 2x2 patchify pair, the elementwise product, and the errors of bad arguments.
#include <gtest/gtest.h>

#include <string>

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
