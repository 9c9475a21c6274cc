#include "media/video.h"

#include <gtest/gtest.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
#include <libswscale/swscale.h>
}

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "../io/io_test_util.h"
#include "media/image.h"

namespace fisdit {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::TempDir;

namespace fs = std::filesystem;

// What an independent libavformat/libavcodec decode of a file finds.
struct Decoded {
  AVCodecID codec = AV_CODEC_ID_NONE;
  int width = 0, height = 0;
  AVRational frame_rate{0, 1};
  int64_t stream_frames = 0;  // as the container declares
  double duration_s = 0;
  AVPixelFormat pix_fmt = AV_PIX_FMT_NONE;
  AVColorSpace colorspace = AVCOL_SPC_UNSPECIFIED;
  AVColorRange color_range = AVCOL_RANGE_UNSPECIFIED;
  std::vector<std::vector<uint8_t>> frames;  // RGB24, converted as the tags say
};

// Decodes every frame of the first video stream; gtest failures on any error.
void decode(const std::string& path, Decoded& out) {
  AVFormatContext* fmt = nullptr;
  ASSERT_EQ(avformat_open_input(&fmt, path.c_str(), nullptr, nullptr), 0) << path;
  std::unique_ptr<AVFormatContext*, void (*)(AVFormatContext**)> fmt_guard(&fmt,
                                                                           avformat_close_input);
  ASSERT_GE(avformat_find_stream_info(fmt, nullptr), 0);
  ASSERT_EQ(fmt->nb_streams, 1u);
  const int index = av_find_best_stream(fmt, AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
  ASSERT_GE(index, 0);
  AVStream* stream = fmt->streams[index];
  out.codec = stream->codecpar->codec_id;
  out.frame_rate = stream->avg_frame_rate;
  out.stream_frames = stream->nb_frames;
  out.duration_s = fmt->duration / static_cast<double>(AV_TIME_BASE);
  const AVCodec* codec = avcodec_find_decoder(out.codec);
  ASSERT_NE(codec, nullptr);
  AVCodecContext* ctx = avcodec_alloc_context3(codec);
  std::unique_ptr<AVCodecContext*, void (*)(AVCodecContext**)> ctx_guard(&ctx,
                                                                         avcodec_free_context);
  ASSERT_GE(avcodec_parameters_to_context(ctx, stream->codecpar), 0);
  ASSERT_EQ(avcodec_open2(ctx, codec, nullptr), 0);
  AVPacket* packet = av_packet_alloc();
  std::unique_ptr<AVPacket*, void (*)(AVPacket**)> packet_guard(&packet, av_packet_free);
  AVFrame* frame = av_frame_alloc();
  std::unique_ptr<AVFrame*, void (*)(AVFrame**)> frame_guard(&frame, av_frame_free);
  SwsContext* sws = nullptr;
  std::unique_ptr<SwsContext, void (*)(SwsContext*)> sws_guard(nullptr, sws_freeContext);

  const auto receive = [&]() -> bool {
    for (;;) {
      const int rc = avcodec_receive_frame(ctx, frame);
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return true;
      if (rc < 0) return false;
      out.width = frame->width;
      out.height = frame->height;
      out.pix_fmt = static_cast<AVPixelFormat>(frame->format);
      out.colorspace = frame->colorspace;
      out.color_range = frame->color_range;
      if (!sws) {
        sws = sws_getContext(frame->width, frame->height, out.pix_fmt, frame->width, frame->height,
                             AV_PIX_FMT_RGB24, SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT,
                             nullptr, nullptr, nullptr);
        if (!sws) return false;
        sws_guard.reset(sws);
        const int* coeffs = sws_getCoefficients(
            frame->colorspace == AVCOL_SPC_BT709 ? SWS_CS_ITU709 : SWS_CS_ITU601);
        sws_setColorspaceDetails(sws, coeffs, frame->color_range == AVCOL_RANGE_JPEG, coeffs, 1, 0,
                                 1 << 16, 1 << 16);
      }
      std::vector<uint8_t> rgb(static_cast<size_t>(frame->width) * frame->height * 3);
      uint8_t* dst[4] = {rgb.data(), nullptr, nullptr, nullptr};  // sws_scale reads four
      const int dst_stride[4] = {frame->width * 3, 0, 0, 0};
      sws_scale(sws, frame->data, frame->linesize, 0, frame->height, dst, dst_stride);
      out.frames.push_back(std::move(rgb));
      av_frame_unref(frame);
    }
  };
  while (av_read_frame(fmt, packet) >= 0) {
    if (packet->stream_index == index) {
      ASSERT_GE(avcodec_send_packet(ctx, packet), 0);
      ASSERT_TRUE(receive());
    }
    av_packet_unref(packet);
  }
  ASSERT_GE(avcodec_send_packet(ctx, nullptr), 0);
  ASSERT_TRUE(receive());
}

// A moving colour gradient [3, F, H, W] in [-1, 1]: red ramps across and drifts with time,
// green ramps down, blue is a travelling wave. Smooth (no edge that 4:2:0 chroma would blur), so
// a good encoder keeps it well.
Tensor moving_gradient(int frames, int height, int width) {
  Tensor v = Tensor::zeros({3, frames, height, width});
  float* p = v.f32();
  for (int f = 0; f < frames; ++f)
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x) {
        const float r = (x + 2.0f * f) / (width + 2.0f * frames);
        const float g = static_cast<float>(y) / (height - 1);
        const float b = 0.5f + 0.4f * std::sin(0.15f * (x + y) - 0.4f * f);
        const float rgb[3] = {r, g, b};
        for (int c = 0; c < 3; ++c)
          p[((static_cast<int64_t>(c) * frames + f) * height + y) * width + x] = rgb[c] * 2 - 1;
      }
  return v;
}

// PSNR (dB) of decoded RGB24 frames against the video's own 8-bit frames.
double psnr(const Tensor& video, const std::vector<std::vector<uint8_t>>& frames) {
  double se = 0;
  size_t n = 0;
  for (size_t f = 0; f < frames.size(); ++f) {
    const Tensor want = video_frame_to_rgb8(video, static_cast<int64_t>(f));
    const uint8_t* w = want.data_as<uint8_t>();
    for (size_t i = 0; i < frames[f].size(); ++i) {
      const double d = static_cast<double>(frames[f][i]) - w[i];
      se += d * d;
    }
    n += frames[f].size();
  }
  const double mse = se / static_cast<double>(n);
  return mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(VideoTest, H264RoundTripKeepsFramesSizeRateAndQuality) {
  if (!have_h264_encoder()) GTEST_SKIP() << "this libavcodec has no libx264";
  TempDir dir;
  const std::string path = dir.file("gradient.mp4");
  const Tensor video = moving_gradient(17, 48, 64);
  const Mp4Result r = write_mp4(path, video, 16.0);
  EXPECT_EQ(r.encoder, "libx264");
  EXPECT_TRUE(r.warning.empty());
  EXPECT_EQ(r.frames, 17);
  Decoded d;
  ASSERT_NO_FATAL_FAILURE(decode(path, d));
  EXPECT_EQ(d.codec, AV_CODEC_ID_H264);
  EXPECT_EQ(d.width, 64);
  EXPECT_EQ(d.height, 48);
  EXPECT_EQ(d.pix_fmt, AV_PIX_FMT_YUV420P);
  EXPECT_EQ(d.colorspace, AVCOL_SPC_BT709);
  EXPECT_EQ(d.color_range, AVCOL_RANGE_MPEG);
  EXPECT_EQ(d.frame_rate.num, 16);
  EXPECT_EQ(d.frame_rate.den, 1);
  EXPECT_EQ(d.stream_frames, 17);
  EXPECT_NEAR(d.duration_s, 17.0 / 16.0, 0.01);
  ASSERT_EQ(d.frames.size(), 17u);
  // CRF 18 on a smooth gradient: ~40 dB in practice; 35 dB is the bar for "visually the same"
  // that also catches a wrong colour matrix or range (those cost > 10 dB on this content).
  EXPECT_GE(psnr(video, d.frames), 35.0);
  // faststart: the index (moov) precedes the media data (mdat).
  const std::string bytes = read_bytes(path);
  ASSERT_NE(bytes.find("moov"), std::string::npos);
  EXPECT_LT(bytes.find("moov"), bytes.find("mdat"));
}

// Mp4Writer: frames written in uneven chunks as they become ready decode to what write_mp4 of
// the whole video decodes to, frame for frame; a writer destroyed without close() leaves no file,
// and writes outside the video or of another size are refused.
TEST(VideoTest, WriterTakesChunksAndEqualsTheWholeVideo) {
  TempDir dir;
  const Tensor video = moving_gradient(17, 48, 64);
  const std::string whole = dir.file("whole.mp4"), chunks = dir.file("chunks.mp4");
  Mp4Options o;
  o.codec = have_h264_encoder() ? VideoCodec::H264 : VideoCodec::Mpeg4;
  write_mp4(whole, video, 16.0, o);
  {
    Mp4Writer w(chunks, 64, 48, 16.0, o);
    for (const auto& [first, count] : {std::pair<int64_t, int64_t>{0, 1}, {1, 4}, {5, 0}, {5, 12}})
      w.write(video, first, count);
    const Mp4Result r = w.close();
    EXPECT_EQ(r.frames, 17);
    EXPECT_EQ(r.width, 64);
  }
  Decoded a, b;
  ASSERT_NO_FATAL_FAILURE(decode(whole, a));
  ASSERT_NO_FATAL_FAILURE(decode(chunks, b));
  ASSERT_EQ(a.frames.size(), 17u);
  ASSERT_EQ(b.frames.size(), a.frames.size());
  for (size_t f = 0; f < a.frames.size(); ++f) EXPECT_EQ(a.frames[f], b.frames[f]) << f;

  const std::string dropped = dir.file("dropped.mp4");
  {
    Mp4Writer w(dropped, 64, 48, 16.0, o);
    w.write(video, 0, 3);
    EXPECT_TRUE(fs::exists(dropped));
  }
  EXPECT_FALSE(fs::exists(dropped)) << "a writer not closed removes its partial file";
  Mp4Writer w(dir.file("bad.mp4"), 64, 48, 16.0, o);
  EXPECT_TRUE(contains(error_of([&] { w.write(video, 10, 8); }), "outside the video"));
  EXPECT_TRUE(contains(error_of([&] { w.write(moving_gradient(2, 32, 64), 0, 1); }), "64x32"));
  EXPECT_TRUE(contains(error_of([&] { w.close(); }), "0 frame(s)"));
  EXPECT_TRUE(contains(error_of([&] { Mp4Writer odd(dir.file("odd.mp4"), 63, 48, 16.0); }),
                       "even width and height"));
}

// The same frames make the same file however many encodes the process ran before: libx264's
// AVX-512 MB-tree code reads memory x264 never initialised, so later encodes of a process
// differed from the first (9 runs of this test in 10 failed before the writer kept x264 off it).
TEST(VideoTest, EncodesInOneProcessAreTheSameFile) {
  if (!have_h264_encoder()) GTEST_SKIP() << "this libavcodec has no libx264";
  TempDir dir;
  const Tensor video = moving_gradient(17, 48, 64);
  const std::string path = dir.file("again.mp4");
  write_mp4(path, video, 16.0);
  const std::string first = read_bytes(path);
  for (int i = 1; i < 6; ++i) {
    write_mp4(path, video, 16.0);
    EXPECT_TRUE(read_bytes(path) == first) << "encode " << i << " differs from the first";
  }
}

TEST(VideoTest, FrameRateIsWhatWasAsked) {
  if (!have_h264_encoder()) GTEST_SKIP() << "this libavcodec has no libx264";
  TempDir dir;
  const Tensor video = moving_gradient(9, 16, 16);
  for (const auto& [fps, num, den] :
       {std::tuple{24.0, 24, 1}, std::tuple{24000.0 / 1001.0, 24000, 1001},
        std::tuple{12.5, 25, 2}}) {
    const std::string path = dir.file("rate.mp4");
    write_mp4(path, video, fps, Mp4Options{.faststart = false});
    Decoded d;
    ASSERT_NO_FATAL_FAILURE(decode(path, d));
    EXPECT_EQ(d.frame_rate.num, num) << fps;
    EXPECT_EQ(d.frame_rate.den, den) << fps;
    EXPECT_EQ(d.frames.size(), 9u);
    EXPECT_NEAR(d.duration_s, 9.0 / fps, 0.01);
  }
}

TEST(VideoTest, Mpeg4EncoderWritesAPlayableFile) {
  TempDir dir;
  const std::string path = dir.file("mpeg4.mp4");
  const Tensor video = moving_gradient(5, 32, 48);
  const Mp4Result r = write_mp4(path, video, 16.0, Mp4Options{.codec = VideoCodec::Mpeg4});
  EXPECT_EQ(r.encoder, "mpeg4");
  Decoded d;
  ASSERT_NO_FATAL_FAILURE(decode(path, d));
  EXPECT_EQ(d.codec, AV_CODEC_ID_MPEG4);
  EXPECT_EQ(d.frames.size(), 5u);
  EXPECT_EQ(d.frame_rate.num, 16);
  // qscale 2 keeps a smooth picture above 35 dB as well (~40 dB in practice).
  EXPECT_GE(psnr(video, d.frames), 35.0);
}

TEST(VideoTest, ValuesOutsideTheRangeAreClamped) {
  if (!have_h264_encoder()) GTEST_SKIP() << "this libavcodec has no libx264";
  TempDir dir;
  Tensor video = Tensor::zeros({3, 2, 16, 16});
  float* p = video.f32();
  const int64_t half = video.numel() / 2;
  // [3, 2, 16, 16]: red 5 in both frames, green 5 in frame 0 and -3 in frame 1, blue -3; the
  // first pixel NaN (black in red). Decoded: frame 0 yellow, frame 1 red.
  for (int64_t i = 0; i < video.numel(); ++i) p[i] = i < half ? 5.0f : -3.0f;
  p[0] = std::numeric_limits<float>::quiet_NaN();
  write_mp4(dir.file("clamp.mp4"), video, 16.0);
  Decoded d;
  ASSERT_NO_FATAL_FAILURE(decode(dir.file("clamp.mp4"), d));
  ASSERT_EQ(d.frames.size(), 2u);
  const size_t centre = (8 * 16 + 8) * 3;
  EXPECT_GE(d.frames[0][centre + 0], 250);
  EXPECT_GE(d.frames[0][centre + 1], 250);
  EXPECT_LE(d.frames[0][centre + 2], 5);
  EXPECT_GE(d.frames[1][centre + 0], 250);
  EXPECT_LE(d.frames[1][centre + 1], 5);
  EXPECT_LE(d.frames[1][centre + 2], 5);
}

TEST(VideoTest, BadInputsAreRefusedNamingTheFile) {
  TempDir dir;
  const std::string path = dir.file("x.mp4");
  const auto msg = [&](const Tensor& v, double fps, const Mp4Options& o = {}) {
    return error_of([&] { write_mp4(path, v, fps, o); });
  };
  std::string m = msg(Tensor::zeros({3, 2, 9, 16}), 16);
  EXPECT_TRUE(contains(m, path));
  EXPECT_TRUE(contains(m, "even width and height"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({4, 2, 8, 8}), 16), "[3, F, H, W]"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 8, 8}), 16), "[3, F, H, W]"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 0, 8, 8}), 16), "0 frame(s)"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 1, 8, 8}, DType::I32), 16), "float"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 1, 8, 8}), 0), "frame rate"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 1, 8, 8}), std::nan("")), "frame rate"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 1, 8, 8}), 16, Mp4Options{.crf = 52}), "CRF 52"));
  EXPECT_TRUE(contains(msg(Tensor::zeros({3, 1, 8, 8}), 16, Mp4Options{.preset = "quick"}),
                       "unknown x264 preset 'quick'"));
  EXPECT_FALSE(fs::exists(path));
}

TEST(VideoTest, UnwritableOutputIsAnErrorAndLeavesNoFile) {
  TempDir dir;
  const Tensor video = moving_gradient(3, 16, 16);
  const std::string missing_dir = dir.file("no/such/dir/out.mp4");
  std::string m = error_of([&] { write_mp4(missing_dir, video, 16); });
  EXPECT_TRUE(contains(m, missing_dir));
  EXPECT_TRUE(contains(m, "cannot create the video file"));
  EXPECT_TRUE(contains(m, "No such file or directory"));
  m = error_of([&] { write_mp4(dir.path().string(), video, 16); });
  EXPECT_TRUE(contains(m, "cannot create the video file"));
  EXPECT_TRUE(fs::is_directory(dir.path()));
  // A device that takes no data: the write fails late (in the muxer), the device stays.
  if (fs::exists("/dev/full")) {
    m = error_of([&] { write_mp4("/dev/full", video, 16, Mp4Options{.faststart = false}); });
    EXPECT_TRUE(contains(m, "/dev/full: "));
    EXPECT_TRUE(fs::exists("/dev/full"));
  }
}

}  // namespace
}  // namespace fisdit
