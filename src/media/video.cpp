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

// libx264's CPU capabilities, for its `asm` parameter: those it detects itself (nullptr), or,
// where it would pick its AVX-512 code, the same set without AVX-512.
//
// Why: x264's AVX-512 MB-tree code (mbtree_propagate_cost/_list; core 164 r3095, Debian 12's
// build; upstream's asm is unchanged since) works on whole vectors of macroblocks past the end of
// each row, where the other versions stop at the row's end, and reads memory x264 never
// initialised. The file then depends on what the heap held (at 64x48 as at 832x480): two encodes
// of the same frames in one process differ in every frame, while a process's first encodes
// usually agree (fresh zeroed pages). Not threads (x264 runs one thread at 64x48; it is
// deterministic when threaded) nor the reused AVFrame: with AVX-512 (or MB-tree) off, every
// encode is the same, and without AVX-512 the same as x264's plain-C code. The AVX2 code is what
// x264 runs on any CPU without AVX-512, at nearly the same speed (832x480: within timing noise);
// with it the files are deterministic and a chunked write gives the file a whole write gives.
const char* x264_cpu_flags() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  // x264 takes AVX-512 for F, CD, BW, DQ and VL with the OS saving the ZMM state; so does
  // __builtin_cpu_supports.
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  if (!avx512) return nullptr;
  // x264's names: "AVX2" is SSE2 .. SSE4.2, AVX, FMA3, LZCNT, BMI1, BMI2 and AVX2 (every AVX-512
  // CPU has them; LZCNT came with BMI1); "SSE2Fast" is what x264 adds on any SSSE3 CPU.
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  return avx2 ? "SSE2Fast,AVX2" : "SSE2Fast,AVX";
#else
  return nullptr;  // no AVX-512 outside x86
#endif
}

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

// The frames a writer takes: width x height at fps, with these options.
void validate_format(const std::string& path, int64_t width, int64_t height, double fps,
                     const Mp4Options& options) {
  const int64_t h = height, w = width;
  if (h < 2 || w < 2)
    fail(path, "cannot encode frames of " + std::to_string(w) + "x" + std::to_string(h));
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

void validate_video(const std::string& path, const Tensor& video) {
  if (!video.defined() || video.device() != Device::CPU || !is_float(video.dtype()))
    fail(path, "write_mp4 needs a host float tensor [3, F, H, W]");
  if (video.ndim() != 4 || video.dim(0) != 3)
    fail(path, "write_mp4 needs a video [3, F, H, W] (RGB), got " + shape_str(video.shape()));
  if (video.dim(1) < 1)
    fail(path, "cannot encode a video of " + std::to_string(video.dim(1)) + " frame(s)");
}

}  // namespace

bool have_h264_encoder() { return avcodec_find_encoder_by_name("libx264") != nullptr; }

struct Mp4Writer::Impl {
  Impl(const std::string& output, int w, int h) : path(output), enc(path), width(w), height(h) {}
  std::string path;
  PartialOutput partial{path};
  Encoder enc;
  Scaler scaler;
  Frame frame;
  int width, height;
  bool x264 = false, closed = false;
  int64_t next_pts = 0;
  Mp4Result result;
};

Mp4Writer::Mp4Writer(const std::string& path, int width, int height, double fps,
                     const Mp4Options& options) {
  validate_format(path, width, height, fps, options);
  quiet_libav_logs();
  impl_ = std::make_unique<Impl>(path, width, height);
  Impl& m = *impl_;
  Mp4Result& result = m.result;
  result.width = width;
  result.height = height;
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
  m.x264 = result.encoder == "libx264";

  Encoder& enc = m.enc;
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
  if (m.x264) {
    av_opt_set(c->priv_data, "preset", options.preset.c_str(), 0);
    av_opt_set(c->priv_data, "crf", std::to_string(options.crf).c_str(), 0);
    if (const char* cpu = x264_cpu_flags()) {
      rc = av_opt_set(c->priv_data, "x264-params", (std::string("asm=") + cpu).c_str(), 0);
      if (rc < 0) fail(path, "cannot set the libx264 CPU flags: " + av_error_text(rc));
    }
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
  m.partial.created = std::filesystem::is_regular_file(path, ec);
  AVDictionary* muxer_options = nullptr;
  if (options.faststart) av_dict_set(&muxer_options, "movflags", "+faststart", 0);
  rc = avformat_write_header(enc.out.ctx, &muxer_options);
  av_dict_free(&muxer_options);
  if (rc < 0) fail(path, "cannot write the MP4 header: " + av_error_text(rc));

  m.scaler.ctx = sws_getContext(width, height, AV_PIX_FMT_RGB24, width, height, AV_PIX_FMT_YUV420P,
                                SWS_BICUBIC | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INP, nullptr,
                                nullptr, nullptr);
  if (!m.scaler.ctx) fail(path, "libswscale cannot convert RGB to YUV 4:2:0");
  const int* bt709 = sws_getCoefficients(SWS_CS_ITU709);
  // Source RGB is full range, destination YUV limited range, both with BT.709 coefficients.
  sws_setColorspaceDetails(m.scaler.ctx, bt709, 1, bt709, 0, 0, 1 << 16, 1 << 16);

  AVFrame* frame = m.frame.frame;
  if (!frame) fail(path, "cannot allocate a video frame (out of memory)");
  frame->format = AV_PIX_FMT_YUV420P;
  frame->width = width;
  frame->height = height;
  frame->color_range = AVCOL_RANGE_MPEG;
  frame->colorspace = AVCOL_SPC_BT709;
  frame->color_primaries = AVCOL_PRI_BT709;
  frame->color_trc = AVCOL_TRC_BT709;
  rc = av_frame_get_buffer(frame, 0);
  if (rc < 0) fail(path, "cannot allocate a video frame: " + av_error_text(rc));
  if (!enc.packet.packet) fail(path, "cannot allocate a packet (out of memory)");
}

Mp4Writer::~Mp4Writer() = default;  // not closed: the partial file is removed (PartialOutput)

void Mp4Writer::write(const Tensor& video, int64_t first, int64_t count) {
  Impl& m = *impl_;
  const std::string& path = m.path;
  if (m.closed) fail(path, "write after close");
  validate_video(path, video);
  if (video.dim(2) != m.height || video.dim(3) != m.width)
    fail(path, "frames of " + std::to_string(video.dim(3)) + "x" + std::to_string(video.dim(2)) +
                   " in a video of " + std::to_string(m.width) + "x" + std::to_string(m.height));
  if (first < 0 || count < 0 || first + count > video.dim(1))
    fail(path, "frames " + std::to_string(first) + ".." + std::to_string(first + count) +
                   " are outside the video's " + std::to_string(video.dim(1)));
  AVCodecContext* c = m.enc.codec.ctx;
  for (int64_t f = first; f < first + count; ++f) {
    const Tensor rgb = video_frame_to_rgb8(video, f);
    const int rc = av_frame_make_writable(m.frame.frame);
    if (rc < 0) fail(path, "cannot reuse the video frame: " + av_error_text(rc));
    // sws_scale reads four plane pointers and strides: packed RGB uses the first.
    const uint8_t* src_planes[4] = {rgb.data_as<uint8_t>(), nullptr, nullptr, nullptr};
    const int src_strides[4] = {m.width * 3, 0, 0, 0};
    sws_scale(m.scaler.ctx, src_planes, src_strides, 0, m.height, m.frame.frame->data,
              m.frame.frame->linesize);
    m.frame.frame->pts = m.next_pts++;
    if (!m.x264) m.frame.frame->quality = c->global_quality;
    m.enc.send(m.frame.frame);
  }
}

Mp4Result Mp4Writer::close() {
  Impl& m = *impl_;
  const std::string& path = m.path;
  if (m.closed) return m.result;
  if (m.next_pts == 0) fail(path, "cannot encode a video of 0 frame(s)");
  m.enc.send(nullptr);  // flush the frames the encoder holds back (B-frames, lookahead)
  int rc = av_write_trailer(m.enc.out.ctx);
  if (rc < 0) fail(path, "cannot finish the MP4 file: " + av_error_text(rc));
  rc = avio_closep(&m.enc.out.ctx->pb);
  if (rc < 0) fail(path, "cannot close the video file: " + av_error_text(rc));
  m.partial.complete = true;
  m.closed = true;
  m.result.frames = m.next_pts;
  return m.result;
}

Mp4Result write_mp4(const std::string& path, const Tensor& video, double fps,
                    const Mp4Options& options) {
  validate_video(path, video);
  validate_format(path, video.dim(3), video.dim(2), fps, options);
  const Tensor v = video.dtype() == DType::F32 ? video : video.to_f32();
  Mp4Writer writer(path, static_cast<int>(v.dim(3)), static_cast<int>(v.dim(2)), fps, options);
  writer.write(v, 0, v.dim(1));
  return writer.close();
}

}  // namespace fisdit
