// The video VAE ops of the CUDA backend against the fp32 CPU reference on random inputs, in both
// video dtypes (channels-last [T, H, W, C]), and the whole Wan 2.1 / 2.2 VAE on the GPU against
// the official code's outputs (tests/data/wan vae21_tiny / vae22_tiny).
//
// Precision. F32: convolutions may run on TF32 tensor cores by default (inputs rounded to 10-bit
// mantissas, fp32 accumulation), so they are held to 2e-3 rel L2 per op; with FISDIT_VAE_TF32=0
// they are plain fp32 (1e-5). Each F32 conv runs with cuDNN in both layouts (NDHWC as stored,
// NCDHW via transposes) and the automatic choice; each BF16 and F32 NDHWC conv also runs on each
// cuDNN API alone (FISDIT_VAE_CONV_API legacy and graph), held to the same tolerances. Attention
// GEMMs are fp32; elementwise ops match to 1e-6 and data movement exactly.
// BF16: the host inputs are rounded to bf16 first, so the CPU reference and the GPU see the same
// values. Data movement is then exact. Elementwise ops compute in fp32 and round each output once
// to bf16 (at most 2^-9 relative, so rel L2 <= 2^-9 plus fp32 noise): held to 2^-8.
// Convolutions multiply bf16 values exactly and accumulate in fp32 before that one rounding; the
// attention also rounds its probabilities to bf16 before P V: both held to 1e-2.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <vector>

#include "analysis/metrics.h"
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
constexpr double kBf16Elementwise = 1.0 / 256;
constexpr double kBf16Accumulated = 1e-2;

constexpr DType kVideoDtypes[] = {DType::F32, DType::BF16};

// The values a device tensor of `dtype` holds for host `t`: what both backends compute on.
Tensor stored(const Tensor& t, DType dtype) {
  return dtype == DType::BF16 ? test::round_bf16(t) : t;
}
std::string name_of(DType dtype) { return std::string(dtype_name(dtype)); }

class Tf32Scope : public test::EnvScope {
 public:
  explicit Tf32Scope(bool on) : EnvScope("FISDIT_VAE_TF32", on ? "1" : "0") {}
};

TEST(CudaVaeOps, VideoDtypeComesFromTheEnvironmentAndSetVideoDtype) {
  FISDIT_REQUIRE_GPU();
  {
    test::EnvScope unset("FISDIT_VAE_PRECISION", nullptr);
    EXPECT_EQ(make_cuda_backend()->video_dtype(), DType::BF16);
  }
  {
    test::EnvScope fp32("FISDIT_VAE_PRECISION", "fp32");
    EXPECT_EQ(make_cuda_backend()->video_dtype(), DType::F32);
  }
  {
    test::EnvScope bf16("FISDIT_VAE_PRECISION", "bf16");
    EXPECT_EQ(make_cuda_backend()->video_dtype(), DType::BF16);
  }
  {
    test::EnvScope bad("FISDIT_VAE_PRECISION", "fp16");
    try {
      make_cuda_backend();
      ADD_FAILURE() << "FISDIT_VAE_PRECISION=fp16 accepted";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("FISDIT_VAE_PRECISION"), std::string::npos) << what;
      EXPECT_NE(what.find("fp16"), std::string::npos) << what;
    }
  }
  const DType before = gpu.video_dtype();
  gpu.set_video_dtype(DType::F32);
  EXPECT_EQ(gpu.video_dtype(), DType::F32);
  gpu.set_video_dtype(DType::BF16);
  EXPECT_EQ(gpu.video_dtype(), DType::BF16);
  EXPECT_THROW(gpu.set_video_dtype(DType::F16), Error);
  EXPECT_EQ(gpu.video_dtype(), DType::BF16);
  gpu.set_video_dtype(before);
}

struct ConvCase {
  Shape x, w;  // [T, H, W, Cin], [Cout, kt, kh, kw, Cin]
  Conv3dParams p;
  bool bias;
};

class CudaConv3d : public ::testing::TestWithParam<ConvCase> {};

TEST_P(CudaConv3d, MatchesTheCpuReference) {
  FISDIT_REQUIRE_GPU();
  const ConvCase c = GetParam();
  auto cpu = make_cpu_backend();
  const float fan_in = static_cast<float>(c.w[1] * c.w[2] * c.w[3] * c.w[4]);
  const Tensor b = randn({c.w[0]}, 3, 0.1f);  // F32 in both dtypes
  const Tensor bd = gpu.upload(b, DType::F32);
  const Shape os = conv3d_output_shape(c.x, c.w, c.p);
  struct Run {
    const char* layout;
    bool tf32;
    double tol;
    const char* api = "auto";  // FISDIT_VAE_CONV_API
  };
  for (const DType dt : kVideoDtypes) {
    const Tensor x = stored(randn(c.x, 1), dt);
    const Tensor w = stored(randn(c.w, 2, 1.0f / std::sqrt(fan_in)), dt);
    Tensor ref = Tensor::zeros(os);
    cpu->conv3d(x, w, c.bias ? &b : nullptr, c.p, ref);
    const Tensor xd = gpu.upload(x, dt), wd = gpu.upload(w, dt);
    // BF16 runs NDHWC (what auto picks for it); F32 either layout and the automatic choice.
    // BF16 and F32 NDHWC also run on the legacy and on the graph API alone.
    std::vector<Run> runs;
    if (dt == DType::BF16) {
      for (const char* api : {"auto", "legacy", "graph"})
        for (const char* layout : {"auto", "ndhwc"})
          runs.push_back({layout, false, kBf16Accumulated, api});
    } else {
      for (const char* layout : {"ncdhw", "ndhwc", "auto"})
        for (const bool tf32 : {true, false})
          runs.push_back({layout, tf32, tf32 ? kTf32Conv : kF32Conv});
      for (const char* api : {"legacy", "graph"})
        for (const bool tf32 : {true, false})
          runs.push_back({"ndhwc", tf32, tf32 ? kTf32Conv : kF32Conv, api});
    }
    for (const Run& r : runs) {
      test::EnvScope in_layout("FISDIT_VAE_CONV_LAYOUT", r.layout);
      test::EnvScope in_api("FISDIT_VAE_CONV_API", r.api);
      Tf32Scope scope(r.tf32);
      const std::string what = shape_str(c.x) + " * " + shape_str(c.w) + " " + name_of(dt) + " " +
                               r.layout + " tf32=" + std::to_string(r.tf32) + " api=" + r.api;
      Tensor yd = poisoned(gpu, os, dt);
      try {
        gpu.conv3d(xd, wd, c.bias ? &bd : nullptr, c.p, yd);
      } catch (const Error& e) {
        // The graph API alone may have no engine for a shape (it says so); cuDNN's legacy API
        // has no fp32 NDHWC kernel for some shapes (96 -> 3 channels), which auto runs NCDHW.
        // Everything else must run.
        const std::string msg = e.what();
        const bool graph = std::string(r.api) == "graph";
        const bool declined =
            graph ? msg.find("no cuDNN graph engine runs this convolution") != std::string::npos
                  : dt == DType::F32 && std::string(r.layout) == "ndhwc";
        if (declined) {
          std::printf("conv3d %s: not run (%s)\n", what.c_str(), msg.c_str());
          continue;
        }
        ADD_FAILURE() << what << ": " << msg;
        continue;
      }
      const double err = gpu_err(gpu, yd, ref);
      std::printf("conv3d %s rel L2 %.3g\n", what.c_str(), err);
      EXPECT_LE(err, r.tol) << what;
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

// Channel counts that are not multiples of 8 (cuDNN's NDHWC runs them on zero-padded copies):
// 5 -> 7, the VAE's RGB input (3 -> 16) and output (96 -> 3), 16 -> 12; the stride-2
// downsampling with its bottom/right padding; temporal kernels and strides; a plain 32 -> 32.
INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaConv3d,
    ::testing::Values(ConvCase{{4, 9, 11, 5}, {7, 3, 3, 3, 5}, pad(1), true},
                      ConvCase{{4, 9, 11, 5}, {7, 3, 3, 3, 5}, pad(1), false},
                      ConvCase{{3, 8, 10, 3}, {16, 3, 3, 3, 3}, pad(1), true},
                      ConvCase{{3, 6, 5, 96}, {3, 3, 3, 3, 96}, pad(1), true},
                      ConvCase{{2, 6, 7, 16}, {12, 1, 3, 3, 16}, pad(1), true},
                      ConvCase{{3, 8, 6, 24}, {16, 1, 1, 1, 24}, {}, true},
                      ConvCase{{2, 9, 10, 6}, {6, 1, 3, 3, 6}, down2d(), true},
                      ConvCase{{2, 9, 10, 16}, {16, 1, 3, 3, 16}, down2d(), true},
                      ConvCase{{5, 4, 6, 6}, {6, 3, 1, 1, 6}, time_stride2(), true},
                      ConvCase{{3, 5, 7, 4}, {8, 3, 1, 1, 4}, {}, true},
                      ConvCase{{4, 6, 8, 32}, {32, 3, 3, 3, 32}, pad(1), true}));

TEST(CudaVaeOps, ChannelRmsNormMatchesTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  // 19 channels: fewer than a warp's lanes; 70: a warp's lanes loop over them thrice.
  for (const Shape& s : {Shape{3, 7, 9, 19}, Shape{2, 3, 5, 70}}) {
    const Tensor gamma = randn({s[3]}, 5, 0.5f, 1.0f);
    const Tensor gd = gpu.upload(gamma, DType::F32);
    for (const DType dt : kVideoDtypes) {
      const Tensor x = stored(randn(s, 4), dt);
      const Tensor xd = gpu.upload(x, dt);
      for (const bool silu : {false, true}) {
        Tensor ref = Tensor::zeros(s);
        cpu->channel_rms_norm(x, gamma, silu, ref);
        Tensor yd = poisoned(gpu, s, dt);
        gpu.channel_rms_norm(xd, gd, silu, yd);
        EXPECT_LE(gpu_err(gpu, yd, ref), dt == DType::BF16 ? kBf16Elementwise : kF32Elementwise)
            << shape_str(s) << " " << name_of(dt) << " silu " << silu;
      }
    }
  }
}

TEST(CudaVaeOps, UpsampleAndPatchifyMoveDataExactly) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  // 3 channels move in 4- or 2-byte units, 8 in 16-byte units.
  for (const int64_t c : {3, 8}) {
    for (const DType dt : kVideoDtypes) {
      const std::string what = std::to_string(c) + " channels " + name_of(dt);
      const Tensor x = stored(randn({2, 5, 6, c}, 6), dt);
      const Tensor xd = gpu.upload(x, dt);
      Tensor up = Tensor::zeros({2, 10, 12, c});
      cpu->upsample_nearest2x(x, up);
      Tensor upd = poisoned(gpu, up.shape(), dt);
      gpu.upsample_nearest2x(xd, upd);
      EXPECT_EQ(gpu_err(gpu, upd, up), 0.0) << what;

      Tensor small = Tensor::zeros({2, 5, 6, 4 * c});
      cpu->space_to_channels2(up, small, false);
      Tensor smalld = poisoned(gpu, small.shape(), dt);
      gpu.space_to_channels2(upd, smalld, false);
      EXPECT_EQ(gpu_err(gpu, smalld, small), 0.0) << what;
      Tensor back = poisoned(gpu, up.shape(), dt);
      gpu.space_to_channels2(smalld, back, true);
      EXPECT_EQ(gpu_err(gpu, back, up), 0.0) << what;
    }
  }
}

TEST(CudaVaeOps, CopyFramesAndFillZero) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (const DType dt : kVideoDtypes) {
    const Tensor src = stored(randn({4, 3, 5, 6}, 7), dt);
    const Tensor sd = gpu.upload(src, dt);
    // A channel range (a 2D copy) and whole pixels (one contiguous copy).
    Tensor ref = stored(randn({7, 3, 5, 5}, 8), dt);
    Tensor dst = gpu.upload(ref, dt);
    cpu->copy_frames(src, 2, 1, ref, 1, 3, 3, 2);
    gpu.copy_frames(sd, 2, 1, dst, 1, 3, 3, 2);
    EXPECT_EQ(gpu_err(gpu, dst, ref), 0.0) << name_of(dt);
    Tensor whole_ref = stored(randn({7, 3, 5, 6}, 9), dt);
    Tensor whole = gpu.upload(whole_ref, dt);
    cpu->copy_frames(src, 0, 1, whole_ref, 0, 4, 6, 3);
    gpu.copy_frames(sd, 0, 1, whole, 0, 4, 6, 3);
    EXPECT_EQ(gpu_err(gpu, whole, whole_ref), 0.0) << name_of(dt);

    gpu.fill_zero(dst);
    EXPECT_EQ(gpu.download(dst).to_vector(), std::vector<float>(dst.numel(), 0.0f));
    EXPECT_THROW(gpu.copy_frames(sd, 0, 3, dst, 0, 0, 5, 2), Error);  // frames 3, 4 of 4
  }
}

TEST(CudaVaeOps, AvgDownAndDupUpMatchTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (const DType dt : kVideoDtypes) {
    const Tensor x = stored(randn({3, 8, 10, 6}, 9), dt);  // 3 frames: one zero frame in front
    const Tensor xd = gpu.upload(x, dt);
    Tensor ref = Tensor::zeros({2, 4, 5, 12});
    cpu->avg_down3d(x, 2, 2, ref);
    Tensor yd = poisoned(gpu, ref.shape(), dt);
    gpu.avg_down3d(xd, 2, 2, yd);
    EXPECT_LE(gpu_err(gpu, yd, ref), dt == DType::BF16 ? kBf16Elementwise : kF32Elementwise)
        << name_of(dt);

    for (const int skip : {0, 1}) {
      Tensor up = Tensor::zeros({6 - skip, 16, 20, 3});
      cpu->dup_up3d(x, 2, 2, skip, up);
      Tensor upd = poisoned(gpu, up.shape(), dt);
      gpu.dup_up3d(xd, 2, 2, skip, upd);
      EXPECT_EQ(gpu_err(gpu, upd, up), 0.0) << name_of(dt) << " skip " << skip;
    }
  }
}

TEST(CudaVaeOps, FrameAttentionMatchesTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const Shape s{2, 5, 7, 24};
  for (const DType dt : kVideoDtypes) {
    const Tensor q = stored(randn(s, 10), dt), k = stored(randn(s, 11), dt),
                 v = stored(randn(s, 12), dt);
    Tensor ref = Tensor::zeros(s);
    cpu->frame_attention(q, k, v, ref);
    Tensor od = poisoned(gpu, s, dt);
    gpu.frame_attention(gpu.upload(q, dt), gpu.upload(k, dt), gpu.upload(v, dt), od);
    const double err = gpu_err(gpu, od, ref);
    std::printf("frame_attention %s rel L2 %.3g\n", name_of(dt).c_str(), err);
    EXPECT_LE(err, dt == DType::BF16 ? kBf16Accumulated : 1e-5) << name_of(dt);
  }
}

// HunyuanVideo 1.5 VAE ops: data movement exactly, the group mean and the frame-causal
// attention as the precision notes at the top say.
TEST(CudaVaeOps, HunyuanResamplingOpsMatchTheCpu) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (const DType dt : kVideoDtypes) {
    const std::string name = name_of(dt);
    const double mean_tol = dt == DType::BF16 ? kBf16Elementwise : kF32Elementwise;
    const Tensor x = stored(randn({5, 4, 6, 6}, 20), dt);
    const Tensor xd = gpu.upload(x, dt);
    Tensor ref = Tensor::zeros({7, 6, 8, 6});
    cpu->pad_replicate(x, 2, 1, ref);
    Tensor od = poisoned(gpu, ref.shape(), dt);
    gpu.pad_replicate(xd, 2, 1, od);
    EXPECT_EQ(gpu_err(gpu, od, ref), 0.0) << "pad_replicate " << name;
    for (const int64_t c : {3, 8}) {
      for (int rt : {1, 2}) {
        const Tensor big = stored(randn({4, 6, 8, c}, 21 + rt), dt);
        const Shape small_shape{4 / rt, 3, 4, 4 * rt * c};
        Tensor sref = Tensor::zeros(small_shape);
        cpu->space_to_channels(big, rt, sref, false);
        Tensor sd = poisoned(gpu, small_shape, dt);
        gpu.space_to_channels(gpu.upload(big, dt), rt, sd, false);
        EXPECT_EQ(gpu_err(gpu, sd, sref), 0.0) << "space_to_channels rt " << rt << " " << name;
        Tensor back = poisoned(gpu, big.shape(), dt);
        gpu.space_to_channels(sd, rt, back, true);
        EXPECT_EQ(gpu_err(gpu, back, big), 0.0) << "inverse rt " << rt << " " << name;
      }
    }
    Tensor mref = Tensor::zeros({5, 4, 6, 2});
    cpu->channel_group_mean(x, 3, mref);
    Tensor md = poisoned(gpu, mref.shape(), dt);
    gpu.channel_group_mean(xd, 3, md);
    EXPECT_LE(gpu_err(gpu, md, mref), mean_tol) << "channel_group_mean " << name;
    Tensor rref = Tensor::zeros({5, 4, 6, 18});
    cpu->channel_repeat(x, 3, rref);
    Tensor rd = poisoned(gpu, rref.shape(), dt);
    gpu.channel_repeat(xd, 3, rd);
    EXPECT_EQ(gpu_err(gpu, rd, rref), 0.0) << "channel_repeat " << name;

    const Shape s{3, 5, 7, 24};
    const Tensor q = stored(randn(s, 30), dt), k = stored(randn(s, 31), dt),
                 v = stored(randn(s, 32), dt);
    Tensor aref = Tensor::zeros(s);
    cpu->causal_video_attention(q, k, v, aref);
    Tensor ad = poisoned(gpu, s, dt);
    gpu.causal_video_attention(gpu.upload(q, dt), gpu.upload(k, dt), gpu.upload(v, dt), ad);
    const double err = gpu_err(gpu, ad, aref);
    std::printf("causal_video_attention %s rel L2 %.3g\n", name.c_str(), err);
    EXPECT_LE(err, dt == DType::BF16 ? kBf16Accumulated : 1e-5) << name;
  }
}

// The whole HunyuanVideo 1.5 VAE (tests/data/hunyuan15/vae_tiny) on the GPU against the official
// outputs: TF32 convolutions by default (2e-3 per conv; through ~40 convs 1e-2), fp32 with
// FISDIT_VAE_TF32=0 (1e-5 per op; 1e-4 through the network).
// The whole VAEs in each precision the GPU runs them in. BF16 rounds every activation and weight
// to bf16 (2^-9 relative), along a path of some twenty convs whose errors add up in quadrature,
// with residual branches that do not compound them: held to 3e-2. TF32 rounds the conv inputs
// to 10-bit mantissas: 1e-2 (Hunyuan) / 5e-3 (Wan); fp32: 1e-4.
struct VaeMode {
  const char* name;
  DType dtype;
  bool tf32;
  double tol_wan, tol_hunyuan;
};
constexpr VaeMode kVaeModes[] = {{"bf16", DType::BF16, false, 3e-2, 3e-2},
                                 {"tf32", DType::F32, true, 5e-3, 1e-2},
                                 {"fp32", DType::F32, false, 1e-4, 1e-4}};

// The shared backend's video dtype for one scope (the VAE's weights follow it at load).
class VideoDtypeScope {
 public:
  VideoDtypeScope(Backend& b, DType dtype) : b_(b), old_(b.video_dtype()) {
    b.set_video_dtype(dtype);
  }
  ~VideoDtypeScope() { b_.set_video_dtype(old_); }
  VideoDtypeScope(const VideoDtypeScope&) = delete;
  VideoDtypeScope& operator=(const VideoDtypeScope&) = delete;

 private:
  Backend& b_;
  DType old_;
};

TEST(CudaHunyuanVae, EncodeAndDecodeMatchTheOfficialCode) {
  FISDIT_REQUIRE_GPU();
  const auto f =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/hunyuan15/vae_tiny.safetensors");
  for (const VaeMode& mode : kVaeModes) {
    Tf32Scope scope(mode.tf32);
    VideoDtypeScope dtype(gpu, mode.dtype);
    hunyuan15::HunyuanVae vae(
        hunyuan15::vae_config_from_json(
            nlohmann::json::parse(f->metadata().at("config")).at("constructor"), "meta"),
        [&](const std::string& name, const Shape&) { return f->tensor_f32("model." + name); }, gpu);
    const double enc =
        rel_l2(vae.encode(f->tensor_f32("input.video")), f->tensor_f32("expected.mean"));
    const double dec =
        rel_l2(vae.decode(f->tensor_f32("input.z")), f->tensor_f32("expected.video"));
    std::printf("hunyuan15 vae %s: encode rel L2 %.3g, decode %.3g\n", mode.name, enc, dec);
    EXPECT_LE(enc, mode.tol_hunyuan) << mode.name;
    EXPECT_LE(dec, mode.tol_hunyuan) << mode.name;
  }
}

TEST(CudaVaeOps, BadInputsSayWhat) {
  FISDIT_REQUIRE_GPU();
  const Tensor x = gpu.upload(randn({3, 5, 5, 4}, 13), DType::BF16);
  const Tensor w = gpu.upload(randn({4, 3, 3, 3, 4}, 14), DType::F32);
  Tensor y = gpu.empty({1, 3, 3, 4}, DType::F32);
  try {
    gpu.conv3d(x, w, nullptr, {}, y);
    FAIL() << "a BF16 input with an F32 weight accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv3d"), std::string::npos) << e.what();
  }
  const Tensor xf = gpu.upload(randn({3, 5, 5, 5}, 13), DType::F32);
  EXPECT_THROW(gpu.conv3d(xf, w, nullptr, {}, y), Error);  // channel mismatch
}

// ---- the whole VAE against the official outputs
Tensor unbatch(const Tensor& t) { return t.reshape(Shape(t.shape().begin() + 1, t.shape().end())); }

struct VaeRun {
  double enc_raw = 0, mu = 0, mu_image = 0, decoded = 0;
  double decoded_auto = 0;  // decode chunks from the frame size (all latent frames after frame 0)
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
  vae->set_decode_chunk(1);  // the official code's frame at a time
  const Tensor video = vae->decode(z);
  r.decoded = rel_l2(video, unbatch(fixture->tensor_f32("expected.decoded")));
  vae->set_decode_chunk(0);  // the default, from the frame size
  r.decoded_auto = rel_l2(vae->decode(z), unbatch(fixture->tensor_f32("expected.decoded")));
  return r;
}

class CudaVae : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaVae, EncodeAndDecodeMatchTheOfficialCode) {
  FISDIT_REQUIRE_GPU();
  for (const VaeMode& mode : kVaeModes) {
    Tf32Scope scope(mode.tf32);  // F32 conv layouts: auto (per shape, the faster)
    VideoDtypeScope dtype(gpu, mode.dtype);
    const VaeRun r = run_vae(gpu, GetParam());
    std::printf(
        "%s %s: enc_raw rel L2 %.3g, mu %.3g, mu_image %.3g, decoded %.3g framewise, %.3g in auto "
        "chunks\n",
        GetParam(), mode.name, r.enc_raw, r.mu, r.mu_image, r.decoded, r.decoded_auto);
    EXPECT_LE(r.enc_raw, mode.tol_wan) << mode.name;
    EXPECT_LE(r.mu, mode.tol_wan) << mode.name;
    EXPECT_LE(r.mu_image, mode.tol_wan) << mode.name;
    EXPECT_LE(r.decoded, mode.tol_wan) << mode.name;
    EXPECT_LE(r.decoded_auto, mode.tol_wan) << mode.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Wan, CudaVae, ::testing::Values("vae21_tiny", "vae22_tiny"));

// The bundled model's VAE (a trained Wan 2.1 VAE, models/fisdit-shapes): the bf16 and TF32
// decodes against the fp32 decode of latents of a moving-disk video (encoded in fp32), as PSNR on
// the [0, 1] scale. bf16 leaves each activation 2^-9 relative off, so the decoded pixels some 1e-3
// off (about 60 dB); held to 40 dB.
TEST(CudaVae, BundledModelDecodesInBf16CloseToFp32) {
  FISDIT_REQUIRE_GPU();
  const std::string path =
      std::string(FISDIT_TEST_DATA) + "/../../models/fisdit-shapes/Wan2.1_VAE.safetensors";
  if (!std::ifstream(path)) GTEST_SKIP() << "no bundled model at " << path;
  const wan::VaeSource src = wan::open_vae(path);
  const int64_t t = 17, h = 128, w = 128;
  Tensor video = Tensor::zeros({3, t, h, w});
  for (int64_t f = 0; f < t; ++f)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const double cx = 30 + 4.0 * f, cy = 64 + 20 * std::sin(0.3 * f);
        const bool disk = (i - cy) * (i - cy) + (j - cx) * (j - cx) < 18 * 18;
        const float bg[3] = {static_cast<float>(i) / h - 0.5f, 0.2f,
                             static_cast<float>(j) / w - 0.7f};
        const float fg[3] = {0.9f, -0.6f, 0.1f};
        for (int64_t c = 0; c < 3; ++c)
          video.f32()[((c * t + f) * h + i) * w + j] = disk ? fg[c] : bg[c];
      }
  Tensor z, reference;
  {
    Tf32Scope scope(false);
    VideoDtypeScope dtype(gpu, DType::F32);
    auto vae = wan::load_vae(src, &gpu);
    z = vae->encode(video);
    reference = vae->decode(z);
  }
  std::printf("bundled VAE fp32: reconstruction %.1f dB PSNR\n", analysis::psnr(reference, video));
  for (const VaeMode& mode : kVaeModes) {
    if (!mode.tf32 && mode.dtype == DType::F32) continue;
    Tf32Scope scope(mode.tf32);
    VideoDtypeScope dtype(gpu, mode.dtype);
    auto vae = wan::load_vae(src, &gpu);
    const Tensor decoded = vae->decode(z);
    const double db = analysis::psnr(decoded, reference);
    std::printf("bundled VAE %s decode vs fp32: %.1f dB PSNR, rel L2 %.3g\n", mode.name, db,
                rel_l2(decoded, reference));
    EXPECT_GT(db, 40.0) << mode.name;
  }
}

}  // namespace
}  // namespace fisdit
