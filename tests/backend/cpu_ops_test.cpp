// CPU reference ops against straightforward float64 formulas, on random non-round sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "core/quantize.h"
#include "fisdit/error.h"

namespace fisdit {
namespace {

// fp32 results against float64 formulas: summation error only (K <= 300 terms).
constexpr double kTol = 1e-5;

Tensor random_tensor(const Shape& shape, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, scale);
  Tensor t = Tensor::zeros(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = n(rng);
  return t;
}

Tensor poisoned(const Shape& shape) {
  Tensor t = Tensor::zeros(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = NAN;
  return t;
}

double gelu_tanh(double v) {
  return 0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)));
}

class CpuOps : public ::testing::Test {
 protected:
  CpuBackend be;
};

TEST_F(CpuOps, LinearWithBiasAndActivationsMatchesFloat64) {
  const int64_t m = 37, k = 91, n = 53;
  const Tensor x = random_tensor({m, k}, 1), w = random_tensor({n, k}, 2, 0.1f),
               b = random_tensor({n}, 3);
  for (Activation act : {Activation::None, Activation::GeluTanh, Activation::Silu}) {
    Tensor y = poisoned({m, n}), ref = Tensor::zeros({m, n});
    be.linear(x, w, &b, y, act);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = b.f32()[j];
        for (int64_t c = 0; c < k; ++c) s += double(x.f32()[i * k + c]) * w.f32()[j * k + c];
        if (act == Activation::GeluTanh) s = gelu_tanh(s);
        if (act == Activation::Silu) s = s / (1.0 + std::exp(-s));
        ref.f32()[i * n + j] = static_cast<float>(s);
      }
    EXPECT_LE(rel_l2(y, ref), kTol);
  }
  EXPECT_EQ(be.flops().linear, 3 * 2.0 * m * n * k);
  Tensor wrong = Tensor::zeros({m, n + 1});
  EXPECT_THROW(be.linear(x, w, &b, wrong, Activation::None), Error);
}

TEST_F(CpuOps, LayerNormWithPerTokenModulationMatchesFloat64) {
  const int64_t rows = 10, d = 67;
  const Tensor x = random_tensor({rows, d}, 4, 3.0f), w = random_tensor({d}, 5),
               b = random_tensor({d}, 6);
  Modulation mod{random_tensor({2, 6, d}, 7), Tensor::zeros({rows}, DType::I32)};
  for (int64_t r = 0; r < rows; ++r) mod.token_rows.data_as<int32_t>()[r] = r % 3 == 0;
  Tensor y = poisoned({rows, d}), ref = Tensor::zeros({rows, d});
  be.layer_norm(x, &w, &b, 1e-6f, y, {&mod, 3}, {&mod, 4});
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x.f32()[r * d + i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) var += std::pow(x.f32()[r * d + i] - mean, 2);
    var /= d;
    const int row = r % 3 == 0;
    for (int64_t i = 0; i < d; ++i) {
      const double shift = mod.table.f32()[(row * 6 + 3) * d + i];
      const double scale = mod.table.f32()[(row * 6 + 4) * d + i];
      const double v =
          (x.f32()[r * d + i] - mean) / std::sqrt(var + 1e-6) * w.f32()[i] + b.f32()[i];
      ref.f32()[r * d + i] = static_cast<float>(v * (1 + scale) + shift);
    }
  }
  EXPECT_LE(rel_l2(y, ref), kTol);
  // Normalized and quantized in one op (the input of fp8 matrices): quantize_rows of y, bit for
  // bit (the CPU's activations are F32).
  const Fp8Rows q = be.layer_norm_fp8(x, &w, &b, 1e-6f, {&mod, 3}, {&mod, 4});
  const Fp8Rows want = quantize_rows_e4m3(y);
  ASSERT_EQ(q.codes.shape(), want.codes.shape());
  ASSERT_EQ(q.scales.shape(), want.scales.shape());
  EXPECT_EQ(std::memcmp(q.codes.raw(), want.codes.raw(), want.codes.nbytes()), 0);
  EXPECT_EQ(std::memcmp(q.scales.raw(), want.scales.raw(), want.scales.nbytes()), 0);
  const Tensor short_w = random_tensor({d - 1}, 5);
  EXPECT_THROW(be.layer_norm_fp8(x, &short_w, &b, 1e-6f), Error);
  EXPECT_THROW(be.layer_norm_fp8(x.reshape({rows * d}), nullptr, nullptr, 1e-6f), Error);
  EXPECT_THROW(be.layer_norm_fp8(x, nullptr, nullptr, 1e-6f, {&mod, 3}, {}), Error);
}

TEST_F(CpuOps, RmsNormMatchesFloat64InPlace) {
  const int64_t rows = 9, d = 40;
  Tensor x = random_tensor({rows, d}, 8), w = random_tensor({d}, 9), ref = Tensor::zeros({rows, d});
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += std::pow(x.f32()[r * d + i], 2);
    for (int64_t i = 0; i < d; ++i)
      ref.f32()[r * d + i] =
          static_cast<float>(x.f32()[r * d + i] / std::sqrt(ss / d + 1e-6) * w.f32()[i]);
  }
  be.rms_norm(x, w, 1e-6f, x);
  EXPECT_LE(rel_l2(x, ref), kTol);
}

TEST_F(CpuOps, AttentionMatchesFloat64Softmax) {
  const int64_t lq = 23, lk = 31, h = 3, d = 16;
  const Tensor q = random_tensor({lq, h, d}, 10), k = random_tensor({lk, h, d}, 11),
               v = random_tensor({lk, h, d}, 12);
  Tensor out = poisoned({lq, h, d}), ref = Tensor::zeros({lq, h, d});
  be.attention(q, k, v, out);
  for (int64_t hh = 0; hh < h; ++hh)
    for (int64_t i = 0; i < lq; ++i) {
      std::vector<double> s(lk);
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < lk; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c)
          dot += double(q.f32()[(i * h + hh) * d + c]) * k.f32()[(j * h + hh) * d + c];
        s[j] = dot / std::sqrt(double(d));
        mx = std::max(mx, s[j]);
      }
      for (auto& e : s) sum += (e = std::exp(e - mx));
      for (int64_t c = 0; c < d; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < lk; ++j) acc += s[j] * v.f32()[(j * h + hh) * d + c];
        ref.f32()[(i * h + hh) * d + c] = static_cast<float>(acc / sum);
      }
    }
  EXPECT_LE(rel_l2(out, ref), kTol);
  EXPECT_EQ(be.flops().attention, 4.0 * lq * lk * h * d);
}

TEST_F(CpuOps, RopeSplitsHeadDim128As22_21_21) {
  // Moving a token one frame later rotates only the first 22 pairs; one row later only the next
  // 21; one column later only the last 21.
  const int64_t d = 128;
  const Tensor x = random_tensor({1, 1, d}, 13);
  auto rotated = [&](int32_t f, int hh, int ww) {
    // A grid whose only token sits at (f, hh, ww): a 1-frame run with height/width large enough,
    // selecting the token by its position in the run.
    RopeGrid g{{f}, hh + 1, ww + 1};
    Tensor t = Tensor::zeros({(hh + 1) * (ww + 1), 1, d});
    const int64_t slot = hh * (ww + 1) + ww;
    std::copy(x.f32(), x.f32() + d, t.f32() + slot * d);
    be.rope_3d(t, g);
    return std::vector<float>(t.f32() + slot * d, t.f32() + (slot + 1) * d);
  };
  const auto base = rotated(0, 0, 0);
  for (int64_t c = 0; c < d; ++c) EXPECT_EQ(base[c], x.f32()[c]) << "position 0 is the identity";
  auto changed_pairs = [&](const std::vector<float>& a) {
    std::vector<int> pairs;
    for (int64_t j = 0; j < d / 2; ++j)
      if (a[2 * j] != base[2 * j] || a[2 * j + 1] != base[2 * j + 1]) pairs.push_back(int(j));
    return pairs;
  };
  const auto f = changed_pairs(rotated(1, 0, 0)), hh = changed_pairs(rotated(0, 1, 0)),
             ww = changed_pairs(rotated(0, 0, 1));
  ASSERT_EQ(f.size(), 22u);
  EXPECT_EQ(f.front(), 0);
  ASSERT_EQ(hh.size(), 21u);
  EXPECT_EQ(hh.front(), 22);
  ASSERT_EQ(ww.size(), 21u);
  EXPECT_EQ(ww.front(), 43);
  // Pair 0 of the frame part rotates by exactly f radians (frequency 1).
  const auto r = rotated(1, 0, 0);
  EXPECT_NEAR(r[0], x.f32()[0] * std::cos(1.0) - x.f32()[1] * std::sin(1.0), 1e-6);
}

// HunyuanVideo 1.5's split (rope_dim_list 16/56/56, theta 256): 8 pairs with the frame, 28 with
// the row, 28 with the column, each part's frequencies theta^(-2j / part width), against the
// rotation written out in float64 (posemb_layers.py get_1d_rotary_pos_embed: cos/sin repeated
// per interleaved pair).
TEST_F(CpuOps, RopeWithExplicitAxisPairsAndTheta) {
  const int64_t d = 128, heads = 2;
  RopeGrid g{{0, 3, 7}, 2, 3};
  g.axis_pairs = {8, 28, 28};
  g.theta = 256.0;
  const Tensor x = random_tensor({g.tokens(), heads, d}, 15);
  Tensor got = x.clone();
  be.rope_3d(got, g);
  Tensor ref = x.clone();
  const int parts[3] = {8, 28, 28};
  for (int64_t t = 0; t < g.tokens(); ++t) {
    const int64_t in_frame = t % 6;
    const double pos[3] = {double(g.frames[t / 6]), double(in_frame / 3), double(in_frame % 3)};
    for (int64_t h = 0; h < heads; ++h) {
      int64_t j = 0;
      for (int p = 0; p < 3; ++p)
        for (int i = 0; i < parts[p]; ++i, ++j) {
          const double a = pos[p] / std::pow(256.0, 2.0 * i / (2.0 * parts[p]));
          const float* in = x.f32() + (t * heads + h) * d + 2 * j;
          float* out = ref.f32() + (t * heads + h) * d + 2 * j;
          out[0] = float(in[0] * std::cos(a) - in[1] * std::sin(a));
          out[1] = float(in[1] * std::cos(a) + in[0] * std::sin(a));
        }
    }
  }
  EXPECT_LE(rel_l2(got, ref), 1e-6);
  // The default split is Wan's, and a split that does not cover head_dim is refused.
  EXPECT_EQ((RopeGrid{}.pairs_for(128)), (std::array<int, 3>{22, 21, 21}));
  g.axis_pairs = {8, 28, 27};
  EXPECT_THROW(be.rope_3d(got, g), Error);
}

TEST_F(CpuOps, ExactGeluIsTheErfForm) {
  const Tensor x = random_tensor({5, 40}, 16, 3.0f);
  Tensor y = Tensor::zeros({5, 40});
  be.activation(x, y, Activation::Gelu);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = x.f32()[i];
    EXPECT_NEAR(y.f32()[i], 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))), 1e-6) << v;
  }
}

TEST_F(CpuOps, RopeOnGatheredFramesUsesTheTrueFrameIndices) {
  const int64_t frames = 7, hh = 3, ww = 2, per = hh * ww, heads = 2, d = 24;
  Tensor full = random_tensor({frames * per, heads, d}, 14);
  const std::vector<int32_t> anchors = {0, 2, 5, 6};
  Tensor gathered = Tensor::zeros({4 * per, heads, d});
  be.gather_frames(full, anchors, per, gathered);
  RopeGrid all{{0, 1, 2, 3, 4, 5, 6}, int(hh), int(ww)};
  be.rope_3d(full, all);
  be.rope_3d(gathered, RopeGrid{anchors, int(hh), int(ww)});
  Tensor expected = Tensor::zeros({4 * per, heads, d});
  be.gather_frames(full, anchors, per, expected);
  EXPECT_EQ(rel_l2(gathered, expected), 0.0);
}

TEST_F(CpuOps, InterpolationReconstructsAffineInFrameInputsExactly) {
  // FIS.md invariant: X_f = U + f V through a per-frame-affine module (a linear layer) computed
  // on the anchors only and linearly reconstructed equals the module on every frame.
  const int64_t frames = 21, per = 5, c = 12, n = 9;
  const Tensor u = random_tensor({per, c}, 15), v = random_tensor({per, c}, 16);
  Tensor x = Tensor::zeros({frames * per, c});
  for (int64_t f = 0; f < frames; ++f)
    for (int64_t i = 0; i < per * c; ++i) x.f32()[f * per * c + i] = u.f32()[i] + f * v.f32()[i];
  const Tensor w = random_tensor({n, c}, 17), b = random_tensor({n}, 18);
  Tensor dense = Tensor::zeros({frames * per, n});
  be.linear(x, w, &b, dense, Activation::None);
  for (const std::vector<int32_t>& anchors :
       {std::vector<int32_t>{0, 3, 6, 9, 12, 15, 18, 20}, std::vector<int32_t>{0, 20},
        std::vector<int32_t>{0, 1, 4, 7, 10, 13, 16, 19, 20}}) {
    const int64_t a = static_cast<int64_t>(anchors.size());
    Tensor xa = Tensor::zeros({a * per, c}), za = Tensor::zeros({a * per, n});
    be.gather_frames(x, anchors, per, xa);
    be.linear(xa, w, &b, za, Activation::None);
    Tensor rec = poisoned({frames * per, n});
    be.interpolate_frames(za, anchors, per, rec, false);
    EXPECT_LE(rel_l2(rec, dense), 1e-6);
    // Anchor frames are copied exactly.
    for (int64_t s = 0; s < a; ++s)
      for (int64_t i = 0; i < per * n; ++i)
        ASSERT_EQ(rec.f32()[anchors[s] * per * n + i], za.f32()[s * per * n + i]);
  }
}

TEST_F(CpuOps, InterpolationAccumulatesAndRejectsBadAnchors) {
  const int64_t per = 2, c = 3;
  Tensor za = random_tensor({2 * per, c}, 19), dst = random_tensor({5 * per, c}, 20);
  const Tensor before = dst.clone();
  be.interpolate_frames(za, {0, 4}, per, dst, /*accumulate=*/true);
  for (int64_t i = 0; i < per * c; ++i) {
    // frame 1 = before + (3 Z_0 + 1 Z_4) / 4
    const float expect = before.f32()[per * c + i] + (3 * za.f32()[i] + za.f32()[per * c + i]) / 4;
    EXPECT_NEAR(dst.f32()[per * c + i], expect, 1e-6);
  }
  Tensor out = Tensor::zeros({5 * per, c});
  EXPECT_THROW(be.interpolate_frames(za, {1, 4}, per, out, false), Error);  // no frame 0
  EXPECT_THROW(be.interpolate_frames(za, {0, 3}, per, out, false), Error);  // no last frame
  EXPECT_THROW(be.gather_frames(out, {0, 9}, per, za), Error);              // out of range
}

TEST_F(CpuOps, DeltaReconstructionEqualsInterpolatingTheAnchorUpdate) {
  // x_f += linear(Y_A - X_A)_f on skipped frames, anchors := Y exactly; computed here in float64
  // from the definition (FIS.md, Reconstruction) for several anchor sets.
  const int64_t frames = 11, per = 3, c = 5, fe = per * c;
  const Tensor x0 = random_tensor({frames * per, c}, 41);
  for (const std::vector<int32_t>& anchors :
       {std::vector<int32_t>{0, 3, 6, 9, 10}, std::vector<int32_t>{0, 10},
        std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
        std::vector<int32_t>{0, 2, 7, 10}}) {
    const int64_t a = static_cast<int64_t>(anchors.size());
    const Tensor y = random_tensor({a * per, c}, 42 + static_cast<uint32_t>(a));
    Tensor x = x0.clone();
    be.reconstruct_frames_delta(y, anchors, per, x);
    std::vector<double> expect(static_cast<size_t>(frames * fe));
    for (int64_t s = 0; s < a; ++s)
      for (int64_t i = 0; i < fe; ++i) expect[anchors[s] * fe + i] = y.f32()[s * fe + i];
    for (int64_t s = 0; s + 1 < a; ++s) {
      const int64_t fa = anchors[s], fb = anchors[s + 1];
      for (int64_t f = fa + 1; f < fb; ++f)
        for (int64_t i = 0; i < fe; ++i) {
          const double da = double{y.f32()[s * fe + i]} - x0.f32()[fa * fe + i];
          const double db = double{y.f32()[(s + 1) * fe + i]} - x0.f32()[fb * fe + i];
          expect[f * fe + i] =
              x0.f32()[f * fe + i] + (double(fb - f) * da + double(f - fa) * db) / double(fb - fa);
        }
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < frames * fe; ++i) {
      num += (x.f32()[i] - expect[i]) * (x.f32()[i] - expect[i]);
      den += expect[i] * expect[i];
    }
    EXPECT_LE(std::sqrt(num / den), 1e-6) << a << " anchors";
    for (int64_t s = 0; s < a; ++s)  // anchors exactly
      for (int64_t i = 0; i < fe; ++i) ASSERT_EQ(x.f32()[anchors[s] * fe + i], y.f32()[s * fe + i]);
  }
  Tensor x = x0.clone();
  const Tensor y2 = random_tensor({2 * per, c}, 50);
  EXPECT_THROW(be.reconstruct_frames_delta(y2, {1, 10}, per, x), Error);     // no frame 0
  EXPECT_THROW(be.reconstruct_frames_delta(y2, {0, 9}, per, x), Error);      // no last frame
  EXPECT_THROW(be.reconstruct_frames_delta(y2, {0, 5, 10}, per, x), Error);  // row count
}

TEST_F(CpuOps, PatchifyMatchesConvLayoutAndUnpatchifyInvertsHeadLayout) {
  const int64_t c = 3, f = 2, h = 4, w = 6;
  const Tensor x = random_tensor({c, f, h, w}, 21);
  const std::array<int, 3> p = {1, 2, 2};
  Tensor patches = poisoned({f * 2 * 3, c * 4});
  be.patchify(x, p, patches);
  // token (a, b, e), vector index ((ch * 1 + 0) * 2 + j) * 2 + l  (Conv3d weight flattening)
  for (int64_t a = 0; a < f; ++a)
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t e = 0; e < 3; ++e)
        for (int64_t ch = 0; ch < c; ++ch)
          for (int j = 0; j < 2; ++j)
            for (int l = 0; l < 2; ++l)
              ASSERT_EQ(patches.f32()[((a * 2 + b) * 3 + e) * c * 4 + (ch * 2 + j) * 2 + l],
                        x.f32()[((ch * f + a) * h + b * 2 + j) * w + e * 2 + l]);
  // The head lays out [pt, ph, pw, c] with c fastest.
  Tensor head = random_tensor({f * 2 * 3, 4 * c}, 22), out = poisoned({c, f, h, w});
  be.unpatchify(head, p, f, 2, 3, out);
  for (int64_t a = 0; a < f; ++a)
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t e = 0; e < 3; ++e)
        for (int j = 0; j < 2; ++j)
          for (int l = 0; l < 2; ++l)
            for (int64_t ch = 0; ch < c; ++ch)
              ASSERT_EQ(out.f32()[((ch * f + a) * h + b * 2 + j) * w + e * 2 + l],
                        head.f32()[((a * 2 + b) * 3 + e) * 4 * c + (j * 2 + l) * c + ch]);
}

TEST_F(CpuOps, GatedAddUsesThePerTokenGate) {
  const int64_t rows = 4, d = 5;
  Tensor x = random_tensor({rows, d}, 23);
  const Tensor y = random_tensor({rows, d}, 24), before = x.clone();
  Modulation mod{random_tensor({2, 6, d}, 25), Tensor::zeros({rows}, DType::I32)};
  mod.token_rows.data_as<int32_t>()[2] = 1;
  be.add(x, y, {&mod, 2});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < d; ++i) {
      const float g = mod.table.f32()[((r == 2) * 6 + 2) * d + i];
      EXPECT_FLOAT_EQ(x.f32()[r * d + i], before.f32()[r * d + i] + y.f32()[r * d + i] * g);
    }
}

// The LoRA merge op: w += scale * up @ down for any w of rows * cols elements.
TEST_F(CpuOps, AddLowRankMatchesFloat64) {
  for (const Shape& ws : {Shape{29, 41}, Shape{6, 5, 14}}) {
    const int64_t rows = ws[0], cols = shape_numel(ws) / rows, rank = 7;
    const Tensor w = random_tensor(ws, 11), up = random_tensor({rows, rank}, 12, 0.5f),
                 down = random_tensor({rank, cols}, 13, 0.5f);
    Tensor got = w.clone(), ref = w.clone();
    be.add_low_rank(got, up, down, -0.6f);
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < cols; ++i) {
        double s = 0;
        for (int64_t k = 0; k < rank; ++k)
          s += double(up.f32()[o * rank + k]) * down.f32()[k * cols + i];
        ref.f32()[o * cols + i] = static_cast<float>(w.f32()[o * cols + i] - 0.6 * s);
      }
    EXPECT_LE(rel_l2(got, ref), kTol);
    EXPECT_GT(rel_l2(got, w), 0.1);
  }
  Tensor w = Tensor::zeros({4, 6});
  EXPECT_THROW(be.add_low_rank(w, Tensor::zeros({4, 2}), Tensor::zeros({3, 6}), 1.0f), Error);
}

// The 8-bit float formats decoded from their definitions (OCP FP8: E4M3 "fn" has no infinities
// and NaN at S.1111.111; E5M2 follows IEEE), apart from the library's decoders.
double fp8_value(uint8_t v, bool e5m2) {
  const double sign = (v & 0x80) ? -1.0 : 1.0;
  const int ebits = e5m2 ? 5 : 4, mbits = e5m2 ? 2 : 3, bias = e5m2 ? 15 : 7;
  const int e = (v >> mbits) & ((1 << ebits) - 1), m = v & ((1 << mbits) - 1);
  if (e5m2 && e == 31) return m == 0 ? sign * INFINITY : NAN;
  if (!e5m2 && e == 15 && m == 7) return NAN;
  if (e == 0) return sign * std::ldexp(m, 1 - bias - mbits);
  return sign * std::ldexp(1.0 + std::ldexp(m, -mbits), e - bias);
}

// Every code of both formats with a scale that rounds: fp32 gets the correctly rounded product
// (what widening and scaling in fp32 give), bf16 that product rounded once more to nearest even.
TEST_F(CpuOps, DequantizeEveryFp8CodeWithItsScale) {
  for (const DType format : {DType::F8_E4M3, DType::F8_E5M2}) {
    Tensor codes = Tensor::zeros({16, 16}, format);
    for (int v = 0; v < 256; ++v) codes.data_as<uint8_t>()[v] = static_cast<uint8_t>(v);
    for (const float scale : {1.0f, 0.0137f, -3.3f}) {
      const Tensor f = be.dequantize(codes, scale, DType::F32);
      const Tensor b = be.dequantize(codes, scale, DType::BF16);
      ASSERT_EQ(f.dtype(), DType::F32);
      ASSERT_EQ(b.dtype(), DType::BF16);
      ASSERT_EQ(b.shape(), codes.shape());
      for (int v = 0; v < 256; ++v) {
        const auto expected =
            static_cast<float>(fp8_value(static_cast<uint8_t>(v), format == DType::F8_E5M2) *
                               static_cast<double>(scale));
        const float got_b = bf16_to_float(b.data_as<uint16_t>()[v]);
        if (std::isnan(expected)) {
          EXPECT_TRUE(std::isnan(f.f32()[v])) << v;
          EXPECT_TRUE(std::isnan(got_b)) << v;
          continue;
        }
        EXPECT_EQ(f.f32()[v], expected)
            << dtype_name(format) << " code " << v << " scale " << scale;
        EXPECT_EQ(got_b, bf16_to_float(float_to_bf16(expected))) << v;
      }
    }
  }
  EXPECT_THROW(be.dequantize(Tensor::zeros({4}), 1.0f, DType::F32), Error);
  EXPECT_THROW(be.dequantize(Tensor::zeros({4}, DType::F8_E4M3), 1.0f, DType::F16), Error);
}

}  // namespace
}  // namespace fisdit
