#pragma once
// MP4 output of `fisdit generate`: H.264 through libavcodec's libx264 wrapper, muxed by
// libavformat. The official Wan 2.2 code writes its videos with imageio-ffmpeg (libx264,
// yuv420p) at the model's sample_fps: 16 for T2V/I2V-A14B, 24 for TI2V-5B.
//
// Pixels: the [-1, 1] floats are turned into 8-bit RGB as in io/image.h (clamp, round), then into
// limited-range BT.709 YUV 4:2:0 by libswscale, and the stream is tagged BT.709 so that players
// convert back with the same matrix.
//
// Encoders: libx264 (CRF, preset) by default. When the libavcodec at run time was built without
// libx264, write_mp4 falls back to libavcodec's own MPEG-4 Part 2 encoder at near-transparent
// quality (qscale 2) and says so in Mp4Result::warning, unless the options forbid the fallback,
// in which case it throws. Every failure throws fisdit::Error naming the output path; a partly
// written file is removed.
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"

namespace fisdit {

enum class VideoCodec { H264, Mpeg4 };

struct Mp4Options {
  VideoCodec codec = VideoCodec::H264;
  // libx264's constant rate factor, 0 (lossless) .. 51; 18 is close to visually lossless.
  int crf = 18;
  // libx264 preset: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow,
  // placebo.
  std::string preset = "medium";
  // Moves the index (moov box) to the front of the file so a browser can start playing at once
  // (a second pass over the file when it is closed).
  bool faststart = true;
  // With codec H264 and no libx264 available: MPEG-4 Part 2 with a warning instead of an error.
  bool allow_mpeg4_fallback = true;
};

struct Mp4Result {
  std::string encoder;  // the libavcodec encoder used: "libx264" or "mpeg4"
  int width = 0, height = 0;
  int64_t frames = 0;
  std::string warning;  // non-empty when the encoder is not the one asked for
};

// An MP4 written as its frames become ready (fisdit generate encodes each decoded chunk while the
// VAE decodes the next), with write_mp4's encoders, pixels and errors; write_mp4 is one writer.
// Destroyed without close(), it removes the partial file.
class Mp4Writer {
 public:
  // Opens `path` for frames of width x height at `fps`; throws naming the path.
  Mp4Writer(const std::string& path, int width, int height, double fps,
            const Mp4Options& options = {});
  ~Mp4Writer();
  Mp4Writer(const Mp4Writer&) = delete;
  Mp4Writer& operator=(const Mp4Writer&) = delete;
  // Appends frames [first, first + count) of `video` [3, F, height, width] (host floats in
  // [-1, 1]; outside values are clamped). Not thread-safe: one thread writes.
  void write(const Tensor& video, int64_t first, int64_t count);
  // Flushes the encoder and finishes the file (at least one frame written).
  Mp4Result close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Encodes a video [3, F, H, W] (values in [-1, 1]; outside values are clamped) into an MP4 file
// at `fps` frames per second (any positive rate up to 1000, e.g. 16, 24, 23.976). The container
// is MP4 whatever the extension. H.264 4:2:0 needs an even width and height: odd sizes are
// refused (Wan's sizes are multiples of 16). Any host float dtype is accepted.
Mp4Result write_mp4(const std::string& path, const Tensor& video, double fps,
                    const Mp4Options& options = {});

// Whether the libavcodec in use has the encoder (for callers that want to say so up front).
bool have_h264_encoder();

}  // namespace fisdit
