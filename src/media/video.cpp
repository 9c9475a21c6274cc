#include "media/video.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libavutil/log.h>
#include <libavutil/opt.h>
#include <libavutil/rational.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>

#include "fisdit/error.h"
#include "media/image.h"

namespace fisdit {

namespace {

constexpr std::array<const char*, 10> kX264Presets = {
    "ultrafast", "superfast", "veryfast", "faster",   "fast",
    "medium",    "slow",      "slower",   "veryslow", "placebo"};

// Quantiser of the MPEG-4 Part 2 fallback (libavcodec's own mpeg4 encoder): 2 is near-transparent.
constexpr int kMpeg4QScale = 2;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

std::string av_error_text(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(err, buf, sizeof buf);
  return buf;
}

// libav* log to stderr at INFO by default (x264 prints its settings and statistics); fisdit
// reports through exceptions, so only errors are let through, unless the application has chosen
// a level of its own.
void quiet_libav_logs() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (av_log_get_level() == AV_LOG_INFO) av_log_set_level(AV_LOG_ERROR);
  });
}

// Removes the output file on scope exit unless the write completed.
struct PartialOutput {
  std::string path;
  bool created = false, complete = false;
  ~PartialOutput() {
    if (created && !complete) std::remove(path.c_str());
  }
};

struct OutputContext {
  AVFormatContext* ctx = nullptr;
  ~OutputContext() {
    if (!ctx) return;
    if (ctx->pb) avio_closep(&ctx->pb);
    avformat_free_context(ctx);
  }
};

struct CodecContext {
  AVCodecContext* ctx = nullptr;
  ~CodecContext() { avcodec_free_context(&ctx); }
};

struct Frame {
  AVFrame* frame = av_frame_alloc();
  ~Frame() { av_frame_free(&frame); }
};

struct Packet {
  AVPacket* packet = av_packet_alloc();
  ~Packet() { av_packet_free(&packet); }
};

struct Scaler {
  SwsContext* ctx = nullptr;
  ~Scaler() { sws_freeContext(ctx); }
};

struct Encoder {
  explicit Encoder(const std::string& output) : path(output) {}
  const std::string& path;
  OutputContext out;
  CodecContext codec;
  AVStream* stream = nullptr;
  Packet packet;

  // Moves every packet the encoder has ready into the file.
  void drain() {
    for (;;) {
      const int rc = avcodec_receive_packet(codec.ctx, packet.packet);
      if (rc == AVERROR(EAGAIN) || rc == AVERROR_EOF) return;
      if (rc < 0) fail(path, "video encoder failed: " + av_error_text(rc));
      av_packet_rescale_ts(packet.packet, codec.ctx->time_base, stream->time_base);
      packet.packet->stream_index = stream->index;
      const int wrc = av_interleaved_write_frame(out.ctx, packet.packet);
      av_packet_unref(packet.packet);
      if (wrc < 0) fail(path, "cannot write the video (disk full?): " + av_error_text(wrc));
    }
  }
  void send(const AVFrame* frame) {
    const int rc = avcodec_send_frame(codec.ctx, frame);
    if (rc < 0) fail(path, "video encoder refused a frame: " + av_error_text(rc));
    drain();
  }
};

void validate(const std::string& path, const Tensor& video, double fps, const Mp4Options& options) {
  if (!video.defined() || video.device() != Device::CPU || !is_float(video.dtype()))
    fail(path, "write_mp4 needs a host float tensor [3, F, H, W]");
  if (video.ndim() != 4 || video.dim(0) != 3)
    fail(path, "write_mp4 needs a video [3, F, H, W] (RGB), got " + shape_str(video.shape()));
  const int64_t frames = video.dim(1), h = video.dim(2), w = video.dim(3);
  if (frames < 1 || h < 2 || w < 2)
    fail(path, "cannot encode a video of " + std::to_string(frames) + " frame(s) of " +
                   std::to_string(w) + "x" + std::to_string(h));
  if (h % 2 != 0 || w % 2 != 0)
    fail(path, "frames are " + std::to_string(w) + "x" + std::to_string(h) +
                   ": 4:2:0 video needs an even width and height; crop or pad the frames by one "
                   "pixel (or write PNG frames instead)");
  if (h > 16384 || w > 16384)
    fail(path, "frames of " + std::to_string(w) + "x" + std::to_string(h) +
                   " are larger than the 16384 pixels per side fisdit encodes");
  if (!std::isfinite(fps) || fps <= 0.0 || fps > 1000.0)
    fail(path, "frame rate " + std::to_string(fps) + " is not in (0, 1000] frames per second");
  if (options.crf < 0 || options.crf > 51)
    fail(path, "CRF " + std::to_string(options.crf) + " is not in 0..51");
  if (std::find_if(kX264Presets.begin(), kX264Presets.end(),
                   [&](const char* p) { return options.preset == p; }) == kX264Presets.end())
    fail(path, "unknown x264 preset '" + options.preset +
                   "' (ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, "
                   "veryslow, placebo)");
}

}  // namespace

bool have_h264_encoder() { return avcodec_find_encoder_by_name("libx264") != nullptr; }

Mp4Result write_mp4(const std::string& path, const Tensor& video, double fps,
                    const Mp4Options& options) {
  validate(path, video, fps, options);
  quiet_libav_logs();
  const Tensor v = video.dtype() == DType::F32 ? video : video.to_f32();
  const int64_t frames = v.dim(1);
  const int height = static_cast<int>(v.dim(2)), width = static_cast<int>(v.dim(3));

  Mp4Result result;
  result.width = width;
  result.height = height;
  result.frames = frames;
  const AVCodec* encoder = nullptr;
  if (options.codec == VideoCodec::H264) {
    encoder = avcodec_find_encoder_by_name("libx264");
    if (!encoder && !options.allow_mpeg4_fallback)
      fail(path,
           "this libavcodec was built without libx264, the H.264 encoder; use a build with it "
           "(Debian's and Ubuntu's libavcodec have it) or allow the MPEG-4 fallback");
    if (!encoder)
      result.warning =
          "libavcodec has no libx264 encoder: wrote MPEG-4 Part 2 video instead of H.264 "
          "(plays in VLC and ffmpeg-based players, not in every browser)";
  }
  if (!encoder) {
    encoder = avcodec_find_encoder(AV_CODEC_ID_MPEG4);
    if (!encoder) fail(path, "this libavcodec has neither the libx264 nor the MPEG-4 encoder");
  }
  result.encoder = encoder->name;
  const bool x264 = result.encoder == "libx264";

  PartialOutput partial{path};
  Encoder enc(path);
  int rc = avformat_alloc_output_context2(&enc.out.ctx, nullptr, "mp4", path.c_str());
  if (rc < 0 || !enc.out.ctx) fail(path, "libavformat has no MP4 muxer: " + av_error_text(rc));
  enc.codec.ctx = avcodec_alloc_context3(encoder);
  if (!enc.codec.ctx) fail(path, "cannot allocate the video encoder (out of memory)");
  AVCodecContext* c = enc.codec.ctx;
  // MPEG-4 Part 2 limits the time base denominator to 16 bits; 65535 also represents every
  // common rate exactly (24000/1001 = 23.976...).
  const AVRational frame_rate = av_d2q(fps, 65535);
  if (frame_rate.num <= 0 || frame_rate.den <= 0)
    fail(path, "cannot represent the frame rate " + std::to_string(fps));
  c->width = width;
  c->height = height;
  c->pix_fmt = AV_PIX_FMT_YUV420P;
  c->time_base = av_inv_q(frame_rate);
  c->framerate = frame_rate;
  c->sample_aspect_ratio = AVRational{1, 1};
  c->color_range = AVCOL_RANGE_MPEG;
  c->colorspace = AVCOL_SPC_BT709;
  c->color_primaries = AVCOL_PRI_BT709;
  c->color_trc = AVCOL_TRC_BT709;
  if (enc.out.ctx->oformat->flags & AVFMT_GLOBALHEADER) c->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  if (x264) {
    av_opt_set(c->priv_data, "preset", options.preset.c_str(), 0);
    av_opt_set(c->priv_data, "crf", std::to_string(options.crf).c_str(), 0);
  } else {
    c->flags |= AV_CODEC_FLAG_QSCALE;
    c->global_quality = FF_QP2LAMBDA * kMpeg4QScale;
  }
  rc = avcodec_open2(c, encoder, nullptr);
  if (rc < 0) fail(path, "cannot open the " + result.encoder + " encoder: " + av_error_text(rc));

  enc.stream = avformat_new_stream(enc.out.ctx, nullptr);
  if (!enc.stream) fail(path, "cannot add a video stream (out of memory)");
  rc = avcodec_parameters_from_context(enc.stream->codecpar, c);
  if (rc < 0) fail(path, "cannot set the stream parameters: " + av_error_text(rc));
  enc.stream->time_base = c->time_base;
  enc.stream->avg_frame_rate = frame_rate;
  enc.stream->r_frame_rate = frame_rate;

  rc = avio_open(&enc.out.ctx->pb, path.c_str(), AVIO_FLAG_WRITE);
  if (rc < 0) fail(path, "cannot create the video file: " + av_error_text(rc));
  // Only a regular file is removed after a failure (never /dev/stdout or a named pipe).
  std::error_code ec;
  partial.created = std::filesystem::is_regular_file(path, ec);
  AVDictionary* muxer_options = nullptr;
  if (options.faststart) av_dict_set(&muxer_options, "movflags", "+faststart", 0);
  rc = avformat_write_header(enc.out.ctx, &muxer_options);
  av_dict_free(&muxer_options);
  if (rc < 0) fail(path, "cannot write the MP4 header: " + av_error_text(rc));

  Scaler scaler;
  scaler.ctx = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                              SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr, nullptr,
                              nullptr);
  if (!scaler.ctx) fail(path, "libswscale cannot convert RGB to YUV 4:2:0");
  const int* bt709 = sws_getCoefficients(SWS_CS_ITU709);
  // Source RGB is full range, destination YUV limited range, both with BT.709 coefficients.
  sws_setColorspaceDetails(scaler.ctx, bt709, 1, bt709, 0, 0, 1 << 16, 1 << 16);

  Frame frame;
  if (!frame.frame) fail(path, "cannot allocate a video frame (out of memory)");
  frame.frame->format = AV_PIX_FMT_YUV420P;
  frame.frame->width = width;
  frame.frame->height = height;
  frame.frame->color_range = AVCOL_RANGE_MPEG;
  frame.frame->colorspace = AVCOL_SPC_BT709;
  frame.frame->color_primaries = AVCOL_PRI_BT709;
  frame.frame->color_trc = AVCOL_TRC_BT709;
  rc = av_frame_get_buffer(frame.frame, 0);
  if (rc < 0) fail(path, "cannot allocate a video frame: " + av_error_text(rc));
  if (!enc.packet.packet) fail(path, "cannot allocate a packet (out of memory)");

  for (int64_t f = 0; f < frames; ++f) {
    const Tensor rgb = video_frame_to_rgb8(v, f);
    rc = av_frame_make_writable(frame.frame);
    if (rc < 0) fail(path, "cannot reuse the video frame: " + av_error_text(rc));
    const uint8_t* src_planes[1] = {rgb.data_as<uint8_t>()};
    const int src_strides[1] = {width * 3};
    sws_scale(scaler.ctx, src_planes, src_strides, 0, height, frame.frame->data,
              frame.frame->linesize);
    frame.frame->pts = f;
    if (!x264) frame.frame->quality = c->global_quality;
    enc.send(frame.frame);
  }
  enc.send(nullptr);  // flush the frames the encoder holds back (B-frames, lookahead)

  rc = av_write_trailer(enc.out.ctx);
  if (rc < 0) fail(path, "cannot finish the MP4 file: " + av_error_text(rc));
  rc = avio_closep(&enc.out.ctx->pb);
  if (rc < 0) fail(path, "cannot close the video file: " + av_error_text(rc));
  partial.complete = true;
  return result;
}

}  // namespace fisdit
