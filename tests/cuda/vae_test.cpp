// The video VAE ops of the CUDA backend against the fp32 CPU reference on random inputs, and the
// whole Wan 2.1 / 2.2 VAE on the GPU against the official code's outputs (tests/data/wan
// vae21_tiny / vae22_tiny).
//
// Precision: the VAE keeps F32 tensors on the GPU. Convolutions may run on TF32 tensor cores by
// default (inputs rounded to 10-bit mantissas, fp32 accumulation), so they are held to 2e-3 rel
// L2 per op; with FISDIT_VAE_TF32=0 they are plain fp32 (1e-5). Each conv runs in both cuDNN
// layouts (NCDHW as stored, NDHWC via transposes) and the automatic choice. Attention GEMMs are
// always fp32; elementwise ops match to 1e-6 and data movement exactly.
#include <cstdlib>

#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "models/hunyuan15/vae.h"
#include "models/wan/vae.h"

#include <nlohmann/json.hpp>

namespace fisdit {
namespace {

using test::gpu_err;
using test::poisoned;
using test::randn;

constexpr double kTf32Conv = 2e-3;
constexpr double kF32Conv = 1e-5;
constexpr double kF32Elementwise = 1e-6;

// Sets an environment variable for one scope.
class EnvScope {
 public:
  EnvScope(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~EnvScope() { unsetenv(name_); }
  EnvScope(const EnvScope&) = delete;
  EnvScope& operator=(const EnvScope&) = delete;

 private:
  const char* name_;
};
class Tf32Scope : public EnvScope {
 public:
  explicit Tf32Scope(bool on) : EnvScope("FISDIT_VAE_TF32", on ? "1" : "0") {}
};

struct ConvCase {
  Shape x, w;
  Conv3dParams p;
  bool bias;
};

class CudaConv3d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CudaConv3d, MatchesTheCpuReference) {
  FISDIT_REQUIRE_GPU();
  const ConvCase c = GetParam();
  auto cpu = make_cpu_backend();
  const Tensor x = randn(c.x, 1);
  const float fan_in = static_cast<float>(c.w[1] * c.w[2] * c.w[3] * c.w[4]);
  const Tensor w = randn(c.w, 2, 1.0f / std::sqrt(fan_in));
  const Tensor b = randn({c.w[0]}, 3, 0.1f);
  const Shape os = conv3d_output_shape(c.x, c.w, c.p);
  Tensor ref = Tensor::zeros(os);
  cpu->conv3d(x, w, c.bias ? &b : nullptr, c.p, ref);
  const Tensor xd = gpu.upload(x, DType::F32), wd = gpu.upload(w, DType::F32),
               bd = gpu.upload(b, DType::F32);
  for (const char* layout : {"ncdhw", "ndhwc", "auto"}) {
    EnvScope in_layout("FISDIT_VAE_CONV_LAYOUT", layout);
    for (const bool tf32 : {true, false}) {
      Tf32Scope scope(tf32);
      Tensor yd = poisoned(gpu, os, DType::F32);
      gpu.conv3d(xd, wd, c.bias ? &bd : nullptr, c.p, yd);
      const double err = gpu_err(gpu, yd, ref);
      std::printf("conv3d %s * %s %s tf32=%d rel L2 %.3g\n", shape_str(c.x).c_str(),
                  shape_str(c.w).c_str(), layout, tf32, err);
      EXPECT_LE(err, tf32 ? kTf32Conv : kF32Conv)
          << shape_str(c.x) << " * " << shape_str(c.w) << " " << layout;
    }
  }
}

Conv3dParams pad(int s) {
  Conv3dParams p;
  p.pad_top = p.pad_bottom = p.pad_left = p.pad_right = s;
  return p;
}
Conv3dParams down2d() {  // nn.ZeroPad2d((0, 1, 0, 1)) + stride 2
  Conv3dParams p;
  p.pad_bottom = p.pad_right = 1;
  p.stride_h = p.stride_w = 2;
  return p;
}
Conv3dParams time_stride2() {
  Conv3dParams p;
  p.stride_t = 2;
  return p;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaConv3d,
                         ::testing::Values(ConvCase{{5, 4, 9, 11}, {7, 5, 3, 3, 3}, pad(1), true},
                                           ConvCase{{5, 4, 9, 11}, {7, 5, 3, 3, 3}, pad(1), false},
                                           ConvCase{{24, 3, 8, 6}, {16, 24, 1, 1, 1}, {}, true},
                                           ConvCase{{6, 2, 9, 10}, {6, 6, 1, 3, 3}, down2d(), true},
                                           ConvCase{
                                               {6, 5, 4, 6}, {6, 6, 3, 1, 1}, time_stride2(), true},
                                           ConvCase{{4, 3, 5, 7}, {8, 4, 3, 1, 1}, {}, true}));

TEST(CudaVaeOps, ChannelRmsNormMatchesTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Tensor x = randn({19, 3, 7, 9}, 4), gamma = randn({19, 1, 1, 1}, 5, 0.5f, 1.0f);
  for (const bool silu : {false, true}) {
    Tensor ref = Tensor::zeros(x.shape());
    cpu->channel_rms_norm(x, gamma, silu, ref);
    Tensor yd = poisoned(gpu, x.shape(), DType::F32);
    gpu.channel_rms_norm(gpu.upload(x, DType::F32), gpu.upload(gamma, DType::F32), silu, yd);
    EXPECT_LE(gpu_err(gpu, yd, ref), kF32Elementwise) << "silu " << silu;
  }
}

TEST(CudaVaeOps, UpsampleAndPatchifyMoveDataExactly) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Tensor x = randn({3, 2, 5, 6}, 6);
  const Tensor xd = gpu.upload(x, DType::F32);
  Tensor up = Tensor::zeros({3, 2, 10, 12});
  cpu->upsample_nearest2x(x, up);
  Tensor upd = poisoned(gpu, up.shape(), DType::F32);
  gpu.upsample_nearest2x(xd, upd);
  EXPECT_EQ(gpu_err(gpu, upd, up), 0.0);

  Tensor small = Tensor::zeros({12, 2, 5, 6});
  cpu->space_to_channels2(up, small, false);
  Tensor smalld = poisoned(gpu, small.shape(), DType::F32);
  gpu.space_to_channels2(upd, smalld, false);
  EXPECT_EQ(gpu_err(gpu, smalld, small), 0.0);
  Tensor back = poisoned(gpu, up.shape(), DType::F32);
  gpu.space_to_channels2(smalld, back, true);
  EXPECT_EQ(gpu_err(gpu, back, up), 0.0);
}

TEST(CudaVaeOps, CopyFramesAndFillZero) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Tensor src = randn({6, 4, 3, 5}, 7);
  Tensor ref = randn({5, 7, 3, 5}, 8);
  Tensor dst = gpu.upload(ref, DType::F32);
  cpu->copy_frames(src, 2, 1, ref, 1, 3, 3, 2);
  gpu.copy_frames(gpu.upload(src, DType::F32), 2, 1, dst, 1, 3, 3, 2);
  EXPECT_EQ(gpu_err(gpu, dst, ref), 0.0);
  gpu.fill_zero(dst);
  EXPECT_EQ(gpu.download(dst).to_vector(), std::vector<float>(dst.numel(), 0.0f));
  EXPECT_THROW(gpu.copy_frames(gpu.upload(src, DType::F32), 0, 3, dst, 0, 0, 6, 2), Error);
}

TEST(CudaVaeOps, AvgDownAndDupUpMatchTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Tensor x = randn({6, 3, 8, 10}, 9);  // 3 frames: one zero frame of front padding
  Tensor ref = Tensor::zeros({12, 2, 4, 5});
  cpu->avg_down3d(x, 2, 2, ref);
  Tensor yd = poisoned(gpu, ref.shape(), DType::F32);
  gpu.avg_down3d(gpu.upload(x, DType::F32), 2, 2, yd);
  EXPECT_LE(gpu_err(gpu, yd, ref), kF32Elementwise);

  for (const int skip : {0, 1}) {
    Tensor up = Tensor::zeros({3, 6 - skip, 16, 20});
    cpu->dup_up3d(x, 2, 2, skip, up);
    Tensor upd = poisoned(gpu, up.shape(), DType::F32);
    gpu.dup_up3d(gpu.upload(x, DType::F32), 2, 2, skip, upd);
    EXPECT_EQ(gpu_err(gpu, upd, up), 0.0) << "skip " << skip;
  }
}

TEST(CudaVaeOps, FrameAttentionMatchesTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Shape s{24, 2, 5, 7};
  const Tensor q = randn(s, 10), k = randn(s, 11), v = randn(s, 12);
  Tensor ref = Tensor::zeros(s);
  cpu->frame_attention(q, k, v, ref);
  Tensor od = poisoned(gpu, s, DType::F32);
  gpu.frame_attention(gpu.upload(q, DType::F32), gpu.upload(k, DType::F32),
                      gpu.upload(v, DType::F32), od);
  const double err = gpu_err(gpu, od, ref);
  std::printf("frame_attention rel L2 %.3g\n", err);
  EXPECT_LE(err, 1e-5);
}

// HunyuanVideo 1.5 VAE ops: data movement exactly, the group mean and the frame-causal
// attention (fp32 GEMMs) to fp32 rounding.
TEST(CudaVaeOps, HunyuanResamplingOpsMatchTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Tensor x = randn({6, 5, 4, 6}, 20);
  const Tensor xd = gpu.upload(x, DType::F32);
  Tensor ref = Tensor::zeros({6, 7, 6, 8});
  cpu->pad_replicate(x, 2, 1, ref);
  Tensor od = poisoned(gpu, ref.shape(), DType::F32);
  gpu.pad_replicate(xd, 2, 1, od);
  EXPECT_EQ(gpu_err(gpu, od, ref), 0.0) << "pad_replicate";
  for (int rt : {1, 2}) {
    const Tensor big = randn({3, 4, 6, 8}, 21 + rt);
    const Shape small_shape{4 * rt * 3, 4 / rt, 3, 4};
    Tensor sref = Tensor::zeros(small_shape);
    cpu->space_to_channels(big, rt, sref, false);
    Tensor sd = poisoned(gpu, small_shape, DType::F32);
    gpu.space_to_channels(gpu.upload(big, DType::F32), rt, sd, false);
    EXPECT_EQ(gpu_err(gpu, sd, sref), 0.0) << "space_to_channels rt " << rt;
    Tensor back = poisoned(gpu, big.shape(), DType::F32);
    gpu.space_to_channels(sd, rt, back, true);
    EXPECT_EQ(gpu_err(gpu, back, big), 0.0) << "inverse rt " << rt;
  }
  Tensor mref = Tensor::zeros({2, 5, 4, 6});
  cpu->channel_group_mean(x, 3, mref);
  Tensor md = poisoned(gpu, mref.shape(), DType::F32);
  gpu.channel_group_mean(xd, 3, md);
  EXPECT_LE(gpu_err(gpu, md, mref), kF32Elementwise) << "channel_group_mean";
  Tensor rref = Tensor::zeros({18, 5, 4, 6});
  cpu->channel_repeat(x, 3, rref);
  Tensor rd = poisoned(gpu, rref.shape(), DType::F32);
  gpu.channel_repeat(xd, 3, rd);
  EXPECT_EQ(gpu_err(gpu, rd, rref), 0.0) << "channel_repeat";

  const Shape s{24, 3, 5, 7};
  const Tensor q = randn(s, 30), k = randn(s, 31), v = randn(s, 32);
  Tensor aref = Tensor::zeros(s);
  cpu->causal_video_attention(q, k, v, aref);
  Tensor ad = poisoned(gpu, s, DType::F32);
  gpu.causal_video_attention(gpu.upload(q, DType::F32), gpu.upload(k, DType::F32),
                             gpu.upload(v, DType::F32), ad);
  const double err = gpu_err(gpu, ad, aref);
  std::printf("causal_video_attention rel L2 %.3g\n", err);
  EXPECT_LE(err, 1e-5);
}

// The whole HunyuanVideo 1.5 VAE (tests/data/hunyuan15/vae_tiny) on the GPU against the official
// outputs: TF32 convolutions by default (2e-3 per conv; through ~40 convs 1e-2), fp32 with
// FISDIT_VAE_TF32=0 (1e-5 per op; 1e-4 through the network).
TEST(CudaHunyuanVae, EncodeAndDecodeMatchTheOfficialCode) {
  FISDIT_REQUIRE_GPU();
  const auto f =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/hunyuan15/vae_tiny.safetensors");
  for (bool tf32 : {true, false}) {
    Tf32Scope scope(tf32);
    hunyuan15::HunyuanVae vae(
        hunyuan15::vae_config_from_json(
            nlohmann::json::parse(f->metadata().at("config")).at("constructor"), "meta"),
        [&](const std::string& name, const Shape&) { return f->tensor_f32("model." + name); }, gpu);
    const double enc =
        rel_l2(vae.encode(f->tensor_f32("input.video")), f->tensor_f32("expected.mean"));
    const double dec =
        rel_l2(vae.decode(f->tensor_f32("input.z")), f->tensor_f32("expected.video"));
    std::printf("hunyuan15 vae %s: encode rel L2 %.3g, decode %.3g\n", tf32 ? "tf32" : "fp32", enc,
                dec);
    EXPECT_LE(enc, tf32 ? 1e-2 : 1e-4);
    EXPECT_LE(dec, tf32 ? 1e-2 : 1e-4);
  }
}

TEST(CudaVaeOps, BadInputsSayWhat) {
  FISDIT_REQUIRE_GPU();
  const Tensor x = gpu.upload(randn({4, 3, 5, 5}, 13), DType::BF16);
  const Tensor w = gpu.upload(randn({4, 4, 3, 3, 3}, 14), DType::F32);
  Tensor y = gpu.empty({4, 1, 3, 3}, DType::F32);
  try {
    gpu.conv3d(x, w, nullptr, {}, y);
    FAIL() << "BF16 input accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv3d"), std::string::npos) << e.what();
  }
  const Tensor xf = gpu.upload(randn({5, 3, 5, 5}, 13), DType::F32);
  EXPECT_THROW(gpu.conv3d(xf, w, nullptr, {}, y), Error);  // channel mismatch
}

// ---- the whole VAE against the official outputs
Tensor unbatch(const Tensor& t) { return t.reshape(Shape(t.shape().begin() + 1, t.shape().end())); }

struct VaeRun {
  double enc_raw = 0, mu = 0, mu_image = 0, decoded = 0;
};

VaeRun run_vae(Backend& gpu, const std::string& name) {
  const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/" + name + ".safetensors";
  const auto fixture = SafetensorsFile::open(path);
  const wan::VaeSource src = wan::open_vae(path);
  auto vae = wan::load_vae(src, &gpu);
  EXPECT_EQ(&vae->backend(), &gpu);
  const wan::LatentStats stats{fixture->tensor_f32("input.scale_mean").to_vector(),
                               fixture->tensor_f32("input.scale_std").to_vector()};
  VaeRun r;
  Tensor raw;
  Tensor mu = vae->encode(unbatch(fixture->tensor_f32("input.video")), &raw);
  r.enc_raw = rel_l2(raw, unbatch(fixture->tensor_f32("expected.enc_raw")));
  wan::normalize_latent(mu, stats);
  r.mu = rel_l2(mu, unbatch(fixture->tensor_f32("expected.mu")));
  Tensor mi = vae->encode(unbatch(fixture->tensor_f32("input.image")));
  wan::normalize_latent(mi, stats);
  r.mu_image = rel_l2(mi, unbatch(fixture->tensor_f32("expected.mu_image")));
  Tensor z = unbatch(fixture->tensor_f32("input.z")).clone();
  wan::denormalize_latent(z, stats);
  const Tensor video = vae->decode(z);
  r.decoded = rel_l2(video, unbatch(fixture->tensor_f32("expected.decoded")));
  return r;
}

class CudaVae : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaVae, EncodeAndDecodeMatchTheOfficialCode) {
  FISDIT_REQUIRE_GPU();
  for (const bool tf32 : {true, false}) {
    Tf32Scope scope(tf32);  // conv layouts: auto (per shape, the faster)
    const VaeRun r = run_vae(gpu, GetParam());
    std::printf("%s tf32=%d: enc_raw rel L2 %.3g, mu %.3g, mu_image %.3g, decoded %.3g\n",
                GetParam(), tf32, r.enc_raw, r.mu, r.mu_image, r.decoded);
    const double tol = tf32 ? 5e-3 : 1e-4;
    EXPECT_LE(r.enc_raw, tol);
    EXPECT_LE(r.mu, tol);
    EXPECT_LE(r.mu_image, tol);
    EXPECT_LE(r.decoded, tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Wan, CudaVae, ::testing::Values("vae21_tiny", "vae22_tiny"));

}  // namespace
}  // namespace fisdit
