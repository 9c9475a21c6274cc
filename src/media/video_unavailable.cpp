// write_mp4 in a build without FFmpeg's libraries (FISDIT_MP4=OFF): a clear error, no crash.
#include "fisdit/error.h"
#include "media/video.h"

namespace fisdit {

namespace {
[[noreturn]] void unavailable(const std::string& path) {
  throw Error(path +
              ": this fisdit was built without MP4 support (FISDIT_MP4=OFF: FFmpeg's "
              "libraries were not available); write PNG frames with --frames-dir, or "
              "rebuild with libavcodec-dev, libavformat-dev, libavutil-dev and "
              "libswscale-dev installed");
}
}  // namespace

struct Mp4Writer::Impl {};

Mp4Writer::Mp4Writer(const std::string& path, int, int, double, const Mp4Options&) {
  unavailable(path);
}
Mp4Writer::~Mp4Writer() = default;
void Mp4Writer::write(const Tensor&, int64_t, int64_t) {}
Mp4Result Mp4Writer::close() { return {}; }

Mp4Result write_mp4(const std::string& path, const Tensor& /*video*/, double /*fps*/,
                    const Mp4Options& /*options*/) {
  unavailable(path);
}

bool have_h264_encoder() { return false; }

}  // namespace fisdit
