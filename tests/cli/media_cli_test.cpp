// `fisdit video encode` and `fisdit image prepare` as a user runs them: files written, exit codes,
// one-line errors naming the file or flag.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "media/image.h"
#include "media/video.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc;
  std::string out, err;
};

class MediaCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fisdit_media_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result run(const std::string& args) {
    const std::string err_path = (dir_ / "stderr.txt").string();
    const std::string cmd = std::string(FISDIT_CLI_PATH) + " " + args + " 2>" + err_path;
    Result r{};
    FILE* p = popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int status = pclose(p);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream e(err_path);
    std::stringstream ss;
    ss << e.rdbuf();
    r.err = ss.str();
    return r;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static int lines(const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
  }
  fs::path dir_;
};

Tensor ramp_video(int64_t frames, int64_t h, int64_t w) {
  Tensor v = Tensor::zeros({3, frames, h, w});
  for (int64_t i = 0; i < v.numel(); ++i)
    v.f32()[i] = std::sin(0.01f * static_cast<float>(i % (h * w))) * 0.8f;
  return v;
}

TEST_F(MediaCli, VideoEncodeWritesMp4AndFrames) {
  const std::string in = path("video.safetensors");
  // As `vae decode` writes it, with the batch dimension some tools keep.
  write_safetensors(in, {{"video", ramp_video(5, 16, 24).reshape({1, 3, 5, 16, 24})}});
  const Result r = run("video encode --inputs " + in + " --output " + path("out.mp4") +
                       " --fps 24 --frames-dir " + path("frames"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(fs::file_size(path("out.mp4")) > 0);
  EXPECT_NE(r.err.find("5 frames 24x16 at 24 fps"), std::string::npos) << r.err;
  if (have_h264_encoder()) {
    EXPECT_NE(r.err.find("H.264, libx264 CRF 18"), std::string::npos) << r.err;
  }
  EXPECT_NE(r.err.find("wrote 5 PNG frames"), std::string::npos) << r.err;
  for (int f = 0; f < 5; ++f) {
    const Tensor img = read_image(path("frames/frame_000" + std::to_string(f) + ".png"));
    EXPECT_EQ(img.shape(), (Shape{3, 16, 24}));
  }
  EXPECT_FALSE(fs::exists(path("frames/frame_0005.png")));
}

TEST_F(MediaCli, VideoEncodeErrorsAreOneLineAndNameTheProblem) {
  const std::string in = path("in.safetensors");
  write_safetensors(
      in, {{"latent", Tensor::zeros({16, 2, 4, 4})}, {"odd", Tensor::zeros({3, 2, 5, 8})}});
  Result r = run("video encode --inputs " + in + " --output " + path("a.mp4"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(in + ": required input tensor 'video' is missing"), std::string::npos)
      << r.err;
  r = run("video encode --inputs " + in + " --tensor latent --output " + path("a.mp4"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("'latent' must be a video [3, F, H, W]"), std::string::npos) << r.err;
  r = run("video encode --inputs " + in + " --tensor odd --output " + path("a.mp4"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("a.mp4") + ": frames are 8x5"), std::string::npos) << r.err;
  r = run("video encode --inputs " + in + " --tensor odd");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--output FILE.mp4 and/or --frames-dir DIR"), std::string::npos) << r.err;
  r = run("video encode --inputs " + in + " --output " + path("a.mp4") + " --codec vp9");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--codec"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("a.mp4")));
}

TEST_F(MediaCli, ImagePrepareMatchesTheLibraryForBothMethods) {
  // A 300x200 picture: TI2V at 1280*704 picks 1152x768 (crop), I2V at 480*832 picks 768x512.
  Tensor rgb = Tensor::zeros({200, 300, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i)
    rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>((i * 7) % 251);
  const std::string png = path("cond.png");
  write_png(png, rgb);
  const Tensor img = read_image(png);

  Result r = run("image prepare --image " + png + " --max-area 901120 --output " +
                 path("crop.safetensors") + " --png " + path("crop.png"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const ImageSize ti2v = wan_ti2v_video_size(300, 200, 901120);
  EXPECT_EQ(ti2v.width, 1152);
  EXPECT_EQ(ti2v.height, 768);
  Tensor got = SafetensorsFile::open(path("crop.safetensors"))->tensor_f32("image");
  EXPECT_EQ(got.shape(), (Shape{3, ti2v.height, ti2v.width}));
  EXPECT_EQ(rel_l2(got, resize_and_center_crop(img, ti2v.width, ti2v.height)), 0.0);
  EXPECT_EQ(read_image(path("crop.png")).shape(), got.shape());

  r = run("image prepare --image " + png + " --max-area 399360 --method stretch --output " +
          path("stretch.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const ImageSize i2v = wan_i2v_video_size(300, 200, 399360);
  EXPECT_EQ(i2v.width, 768);
  EXPECT_EQ(i2v.height, 512);
  got = SafetensorsFile::open(path("stretch.safetensors"))->tensor_f32("image");
  EXPECT_EQ(got.shape(), (Shape{3, i2v.height, i2v.width}));
  EXPECT_EQ(rel_l2(got, resize_image(img, i2v.width, i2v.height, ResizeFilter::Bicubic)), 0.0);

  // HunyuanVideo 1.5: the 480p bucket of a 3:2 image is 768x512, cropped at rounded offsets.
  r = run("image prepare --image " + png + " --method hunyuan --resolution 480p --output " +
          path("hy.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  got = SafetensorsFile::open(path("hy.safetensors"))->tensor_f32("image");
  EXPECT_EQ(got.shape(), (Shape{3, 512, 768}));
  EXPECT_EQ(rel_l2(got, resize_and_center_crop_rounded(img, 768, 512)), 0.0);
  r = run("image prepare --image " + png + " --resolution 480p --output " + path("x.safetensors"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--method hunyuan"), std::string::npos) << r.err;

  r = run("image prepare --image " + png + " --size 64x48 --output " + path("s.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(SafetensorsFile::open(path("s.safetensors"))->tensor_f32("image").shape(),
            (Shape{3, 48, 64}));
}

TEST_F(MediaCli, ImagePrepareErrorsNameTheFile) {
  std::ofstream(path("notes.png")) << "not an image\n";
  Result r = run("image prepare --image " + path("notes.png") + " --size 64x48 --output " +
                 path("o.safetensors"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(path("notes.png") + ": is not a PNG or JPEG image"), std::string::npos)
      << r.err;
  r = run("image prepare --image " + path("missing.jpg") + " --size 64x48 --output " +
          path("o.safetensors"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find(path("missing.jpg") + ": cannot open image"), std::string::npos) << r.err;
  r = run("image prepare --image " + path("notes.png") + " --size 64x48 --max-area 1000");
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("excludes"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(path("o.safetensors")));
}

// HunyuanVideo 1.5's image features from a PNG: the 8-bit image of the SigLIP fixture written as
// a PNG goes through PIL's bicubic resize and the encoder; fisdit's fp32 resize differs from PIL's
// 8-bit one by about a level, which moves the output by far less than the 1e-2 rel. L2 bound.
TEST_F(MediaCli, ImageEncodeGivesTheOfficialVisionStates) {
  const std::string enc = std::string(FISDIT_TEST_DATA) + "/hunyuan15/vision_tiny.safetensors";
  const auto f = SafetensorsFile::open(enc);
  const Tensor chw = f->tensor_f32("input.image");  // 0..255 [3, H, W]
  const int64_t h = chw.dim(1), w = chw.dim(2);
  Tensor rgb = Tensor::zeros({h, w, 3}, DType::U8);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < h * w; ++i)
      rgb.data_as<uint8_t>()[i * 3 + c] = static_cast<uint8_t>(chw.f32()[c * h * w + i]);
  const std::string png = path("first.png");
  write_png(png, rgb);
  Result r = run("image encode --image " + png + " --vision-encoder " + enc + " --output " +
                 path("v.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const double err = rel_l2(SafetensorsFile::open(path("v.safetensors"))->tensor_f32("vision"),
                            f->tensor_f32("expected.last_hidden_state"));
  std::printf("image encode from PNG: rel L2 %.3g vs official\n", err);
  EXPECT_LE(err, 1e-2);
  r = run("image encode --image " + png + " --output " + path("v.safetensors"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--vision-encoder"), std::string::npos) << r.err;
  r = run("image encode --image " + png + " --vision-encoder " + png + " --output " +
          path("v.safetensors"));
  EXPECT_EQ(r.rc, 1);
  EXPECT_EQ(lines(r.err), 1) << r.err;
}

}  // namespace
}  // namespace fisdit
