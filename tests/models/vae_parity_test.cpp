// The Wan 2.1 and 2.2 VAEs (CPU, fp32) against the official code's golden outputs
// (tests/data/wan, vae21_tiny / vae22_tiny: WanVAE_ of vae2_1.py / vae2_2.py, chunked
// encode/decode with caches), and `fisdit vae`.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/wan/vae.h"

namespace fisdit {
namespace {

// fp32 arithmetic in any summation order stays far below this (fixtures README, Tolerances:
// the official code re-run on another CPU/BLAS differs by <= 1.2e-6 on mu/decoded).
constexpr double kFp32Tolerance = 1e-5;

std::string fixture_path(const std::string& name = "vae21_tiny") {
  return std::string(FISDIT_TEST_DATA) + "/wan/" + name + ".safetensors";
}

// [1, C, F, H, W] -> [C, F, H, W]
Tensor unbatch(const Tensor& t) { return t.reshape(Shape(t.shape().begin() + 1, t.shape().end())); }

void expect_close(const Tensor& got, const Tensor& expected, const std::string& name) {
  ASSERT_EQ(shape_str(got.shape()), shape_str(unbatch(expected).shape())) << name;
  const double err = rel_l2(got, unbatch(expected));
  EXPECT_LE(err, kFp32Tolerance) << name << " rel L2 " << err;
  std::printf("%-24s rel L2 %.3g\n", name.c_str(), err);
}

// A fixture name, or "<fixture>.pth": the same weights converted to a torch.save checkpoint by
// tools/fixtures/gen_pth_fixtures.py (official keys, no metadata) with inputs and expected
// outputs from the fixture.
class VaeParity : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    std::string name = GetParam();
    const bool pth = name.size() > 4 && name.substr(name.size() - 4) == ".pth";
    if (pth) name.resize(name.size() - 4);
    fixture_ = SafetensorsFile::open(fixture_path(name));
    const wan::VaeSource reference = wan::open_vae(fixture_path(name));
    ASSERT_EQ(reference.prefix, "model.");
    ASSERT_EQ(reference.config_origin, "file metadata");
    ASSERT_EQ(reference.config.version, name == "vae22_tiny" ? 22 : 21);
    const wan::VaeSource src =
        pth ? wan::open_vae(std::string(FISDIT_TEST_DATA) + "/pth/" + GetParam()) : reference;
    if (pth) {
      // No metadata: the released layout with sizes from the tensor shapes must give the same.
      ASSERT_EQ(src.prefix, "");
      ASSERT_EQ(src.config_origin, "tensor shapes");
      EXPECT_EQ(src.config.version, reference.config.version);
      EXPECT_EQ(src.config.dim, reference.config.dim);
      EXPECT_EQ(src.config.z_dim, reference.config.z_dim);
      EXPECT_EQ(src.config.dim_mult, reference.config.dim_mult);
      EXPECT_EQ(src.config.num_res_blocks, reference.config.num_res_blocks);
      EXPECT_EQ(src.config.attn_scales, reference.config.attn_scales);
      EXPECT_EQ(src.config.temperal_downsample, reference.config.temperal_downsample);
    }
    std::printf("%s\n", GetParam());
    vae_ = wan::load_vae(src, backend_.get());
    stats_ = {fixture_->tensor_f32("input.scale_mean").to_vector(),
              fixture_->tensor_f32("input.scale_std").to_vector()};
  }
  std::shared_ptr<SafetensorsFile> fixture_;
  std::unique_ptr<Backend> backend_ = make_cpu_backend();
  std::unique_ptr<wan::WanVae> vae_;
  wan::LatentStats stats_;
};

TEST_P(VaeParity, ChunkedEncodeMatchesTheOfficialCode) {
  Tensor enc_raw;
  int chunks = 0;
  Tensor mu = vae_->encode(unbatch(fixture_->tensor_f32("input.video")), &enc_raw,
                           [&](int, int n, int64_t, int64_t) {
                             EXPECT_EQ(n, 3);
                             ++chunks;
                           });
  EXPECT_EQ(chunks, 3);  // frames 1, 4, 4
  expect_close(enc_raw, fixture_->tensor_f32("expected.enc_raw"), "enc_raw");
  wan::normalize_latent(mu, stats_);
  expect_close(mu, fixture_->tensor_f32("expected.mu"), "mu");
}

TEST_P(VaeParity, SingleFrameEncodeMatchesTheOfficialCode) {
  Tensor mu = vae_->encode(unbatch(fixture_->tensor_f32("input.image")));
  wan::normalize_latent(mu, stats_);
  expect_close(mu, fixture_->tensor_f32("expected.mu_image"), "mu_image");
}

TEST_P(VaeParity, DecodeMatchesTheOfficialCode) {
  Tensor z = unbatch(fixture_->tensor_f32("input.z")).clone();
  wan::denormalize_latent(z, stats_);
  Tensor conv2;
  Tensor video = vae_->decode(z, &conv2);
  expect_close(conv2, fixture_->tensor_f32("expected.dec_conv2"), "dec_conv2");
  expect_close(video, fixture_->tensor_f32("expected.decoded"), "decoded");
  float* p = video.f32();
  for (int64_t i = 0; i < video.numel(); ++i) p[i] = std::clamp(p[i], -1.0f, 1.0f);
  expect_close(video, fixture_->tensor_f32("expected.decoded_clamped"), "decoded_clamped");
}

TEST_P(VaeParity, DecodeInChunksFromTheFrameSizeMatchesTheOfficialCode) {
  // Chunks from the frame size (the default; tiny frames: up to 4 latent frames): frame 0, then
  // frames 1-2.
  vae_->set_decode_chunk(0);
  Tensor z = unbatch(fixture_->tensor_f32("input.z")).clone();
  wan::denormalize_latent(z, stats_);
  int chunks = 0;
  const Tensor video = vae_->decode(z, nullptr, [&](int k, int n, int64_t in, int64_t out) {
    EXPECT_EQ(k, chunks++);
    EXPECT_EQ(n, 2);
    EXPECT_EQ(in, k == 0 ? 1 : 2);
    EXPECT_EQ(out, k == 0 ? 1 : 8);
  });
  EXPECT_EQ(chunks, 2);
  expect_close(video, fixture_->tensor_f32("expected.decoded"), "decoded, auto chunks");
}

TEST_P(VaeParity, DecodeInChunksOfSeveralLatentFramesEqualsTheFramewiseDecode) {
  // Six latent frames (the fixture's three twice): chunks of 2 are frame 0, then 1-2, 3-4 and 5
  // (a shorter last chunk); of 4: 0, 1-4, 5; of 16: 0, 1-5. The causal caches carry across
  // chunks of any length, so each equals the framewise decode.
  Tensor z3 = unbatch(fixture_->tensor_f32("input.z")).clone();
  wan::denormalize_latent(z3, stats_);
  const Shape s3 = z3.shape();
  Tensor z = Tensor::zeros({s3[0], 6, s3[2], s3[3]});
  const int64_t frame = s3[2] * s3[3];
  for (int64_t c = 0; c < s3[0]; ++c)
    for (int64_t f = 0; f < 6; ++f)
      std::copy(z3.f32() + (c * 3 + f % 3) * frame, z3.f32() + (c * 3 + f % 3 + 1) * frame,
                z.f32() + (c * 6 + f) * frame);
  vae_->set_decode_chunk(1);
  backend_->flops().reset();
  const Tensor framewise = vae_->decode(z);
  ASSERT_EQ(framewise.dim(1), 21);
  // The same convolutions on the same frames however they are grouped: the causal caches hand
  // each chunk the frames before it, and nothing is computed twice.
  const double framewise_flops = backend_->flops().total();
  EXPECT_GT(backend_->flops().conv, 0);
  const std::vector<std::pair<int64_t, std::vector<int64_t>>> cases = {
      {2, {1, 2, 2, 1}}, {4, {1, 4, 1}}, {16, {1, 5}}, {0, {1, 4, 1}}};  // 0: from the frame size
  for (const auto& [per, sizes] : cases) {
    vae_->set_decode_chunk(per);
    backend_->flops().reset();
    std::vector<int64_t> seen;
    int64_t frames_out = 0;
    const Tensor video = vae_->decode(z, nullptr, [&](int k, int n, int64_t in, int64_t out) {
      EXPECT_EQ(k, static_cast<int>(seen.size()));
      EXPECT_EQ(n, static_cast<int>(sizes.size()));
      seen.push_back(in);
      frames_out += out;
    });
    EXPECT_EQ(seen, sizes) << "chunk " << per;
    EXPECT_EQ(frames_out, 21) << "chunk " << per;
    EXPECT_EQ(backend_->flops().total(), framewise_flops) << "chunk " << per;
    const double err = rel_l2(video, framewise);
    EXPECT_LE(err, 1e-6) << "chunk " << per;
    std::printf("chunk %lld: rel L2 %.3g to the framewise decode\n", static_cast<long long>(per),
                err);
  }
  vae_->set_decode_chunk(1);
  EXPECT_THROW(vae_->set_decode_chunk(-1), Error);
}

TEST(VaeDecodeChunk, FromTheFrameSize) {
  // Within 8M output pixel-frames per chunk: two latent frames (8 video frames) at 720p and at
  // Wan 2.2's 1280x704, at most four (480p, 512x512, tiny frames), one at 1080p (never none).
  EXPECT_EQ(wan::decode_chunk_frames(1280, 720, 4), 2);
  EXPECT_EQ(wan::decode_chunk_frames(1280, 704, 4), 2);
  EXPECT_EQ(wan::decode_chunk_frames(832, 480, 4), 4);
  EXPECT_EQ(wan::decode_chunk_frames(512, 512, 4), 4);
  EXPECT_EQ(wan::decode_chunk_frames(128, 128, 4), 4);
  EXPECT_EQ(wan::decode_chunk_frames(1920, 1080, 4), 1);
}

TEST_P(VaeParity, TrailingFramesBeyond4kPlus1AreDropped) {
  // 11 frames encode like their first 9 (upstream: 1 + (T - 1) // 4 chunks).
  const Tensor video = unbatch(fixture_->tensor_f32("input.video"));
  Shape s = video.shape();
  s[1] = 11;
  Tensor longer = Tensor::zeros(s);
  const int64_t plane = 32 * 32;
  for (int64_t c = 0; c < 3; ++c)
    std::copy(video.f32() + c * 9 * plane, video.f32() + (c + 1) * 9 * plane,
              longer.f32() + c * 11 * plane);
  const Tensor a = vae_->encode(video), b = vae_->encode(longer);
  EXPECT_EQ(rel_l2(b, a), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Wan, VaeParity,
                         ::testing::Values("vae21_tiny", "vae22_tiny", "vae21_tiny.pth",
                                           // tools/train/make_parity_fixture.py: our VAE
                                           "vae21_shapes_tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '.') c = '_';
                           return n;
                         });

class VaeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("fisdit_vae_cli_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  struct Result {
    int rc;
    std::string err;
  };
  Result run(const std::string& args) {
    const std::string err_path = (dir_ / "stderr.txt").string();
    const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) + " " + args +
                            " >/dev/null 2>" + err_path;
    FILE* p = popen(cmd.c_str(), "r");
    const int status = pclose(p);
    std::ifstream e(err_path);
    std::stringstream ss;
    ss << e.rdbuf();
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  // The fixture file itself serves as --inputs: it holds input.video, input.z and
  // input.scale_mean / input.scale_std (used by --normalize).
  void round_trip(const std::string& fx) {
    Result r = run("vae encode --vae " + fx + " --inputs " + fx + " --output " + path("z.st") +
                   " --normalize");
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.err.find("encode chunk 3/3"), std::string::npos) << r.err;
    const auto fixture = SafetensorsFile::open(fx);
    const auto z = SafetensorsFile::open(path("z.st"));
    const Tensor expected_mu = fixture->tensor_f32("expected.mu");
    EXPECT_LE(rel_l2(z->tensor_f32("z"), unbatch(expected_mu)), kFp32Tolerance);

    r = run("vae decode --vae " + fx + " --inputs " + fx + " --output " + path("video.st") +
            " --normalize --clamp");
    ASSERT_EQ(r.rc, 0) << r.err;
    // Frame 0, then frames 1-2 (the default chunks from the frame size).
    EXPECT_NE(r.err.find("decode chunk 2/2: 2 frame(s) -> 8"), std::string::npos) << r.err;
    const auto video = SafetensorsFile::open(path("video.st"));
    EXPECT_LE(rel_l2(video->tensor_f32("video"),
                     unbatch(fixture->tensor_f32("expected.decoded_clamped"))),
              kFp32Tolerance);
  }
  std::filesystem::path dir_;
};

TEST_F(VaeCli, EncodeThenDecodeMatchTheFixtures) {
  for (const char* name : {"vae21_tiny", "vae22_tiny"}) {
    SCOPED_TRACE(name);
    round_trip(fixture_path(name));
  }
}

TEST_F(VaeCli, BadInputIsOneLineNamingFileAndTensor) {
  const std::string in = path("bad.st");
  write_safetensors(in, {{"video", Tensor::zeros({4, 1, 32, 32})}});
  Result r =
      run("vae encode --vae " + fixture_path() + " --inputs " + in + " --output " + path("out.st"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("bad.st"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'video'"), std::string::npos) << r.err;

  r = run("vae decode --vae " + fixture_path() + " --inputs " + in + " --output " + path("out.st"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("'z' is missing"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(path("out.st")));
}

}  // namespace
}  // namespace fisdit
