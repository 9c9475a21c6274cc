// write_mp4 in a build without FFmpeg's libraries (FISDIT_MP4=OFF): a clear error, no crash.
#include "fisdit/error.h"
#include "media/video.h"

namespace fisdit {

Mp4Result write_mp4(const std::string& path, const Tensor& /*video*/, double /*fps*/,
                    const Mp4Options& /*options*/) {
  throw Error(path +
              ": this fisdit was built without MP4 support (FISDIT_MP4=OFF: FFmpeg's "
              "libraries were not available); write PNG frames with --frames-dir, or "
              "rebuild with libavcodec-dev, libavformat-dev, libavutil-dev and "
              "libswscale-dev installed");
}

bool have_h264_encoder() { return false; }

}  // namespace fisdit
