#pragma once
// Still images for `fisdit generate`: reading the I2V / TI2V conditioning image (PNG or JPEG, via
// libpng and libjpeg), writing frames as PNG, and preparing the first frame the way the official
// Wan 2.2 pipelines do (github.com/Wan-Video/Wan2.2).
//
// Layouts: a float image is [3, H, W] RGB in [-1, 1] (as TF.to_tensor(img).sub_(0.5).div_(0.5));
// a video is [3, F, H, W] (the VAE's decoded output); an 8-bit image is a U8 tensor [H, W, 3].
// 8-bit values from float: x clamped to [-1, 1] (NaN -> -1), then round((x + 1) / 2 * 255).
// The official save_video truncates instead of rounding, so fisdit's frames are up to one level
// brighter; rounding is the exact inverse of reading (v / 255 * 2 - 1), which truncation is not.
//
// Every failure throws fisdit::Error naming the file: missing or unreadable file, a file that is
// neither PNG nor JPEG, truncated or corrupt data, images larger than kMaxImagePixels, unwritable
// output. libpng's and libjpeg's own error exits are caught; no input makes them abort.
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace fisdit {

// Largest image read_image decodes (2^27 pixels, e.g. 16384 x 8192): a guard against headers
// that promise gigabytes of pixels.
constexpr int64_t kMaxImagePixels = int64_t{1} << 27;

// Reads a PNG or JPEG, told apart by their magic bytes (the extension is ignored), as a float
// image [3, H, W] in [-1, 1], as PIL's Image.open(path).convert("RGB") followed by to_tensor:
//   - grayscale is repeated into R, G and B; palette images are expanded;
//   - an alpha channel (or PNG tRNS transparency) is dropped, not composited (as convert("RGB"));
//   - 16-bit PNG samples keep their precision (v / 65535 * 2 - 1; PIL reduces them to 8 bits);
//   - gamma, ICC profiles and EXIF orientation are ignored (PIL ignores them too);
//   - JPEG: YCbCr and grayscale; CMYK/YCCK JPEGs are refused with a message.
Tensor read_image(const std::string& path);

// Float image [3, H, W] -> U8 [H, W, 3] (see the conversion above). Any host float dtype.
Tensor image_to_rgb8(const Tensor& image);
// Frame `index` of a video [3, F, H, W] -> U8 [H, W, 3].
Tensor video_frame_to_rgb8(const Tensor& video, int64_t index);
// U8 [H, W, 3] -> float [3, H, W] in [-1, 1] (v / 255 * 2 - 1).
Tensor rgb8_to_image(const Tensor& rgb8);

// Writes an 8-bit RGB PNG from a U8 tensor [H, W, 3]. The file is written whole or not at all
// (a failed write removes what it left).
void write_png(const std::string& path, const Tensor& rgb8);
// Writes every frame of a video [3, F, H, W] as `dir`/frame_0000.png, frame_0001.png, ...
// (at least four digits), creating `dir` and its parents. Returns the paths written.
std::vector<std::string> write_png_frames(const std::string& dir, const Tensor& video);

// Resampling filters of resize_image, each as the official code that uses it computes it (in
// fp32 on float pixels, where PIL works on 8-bit pixels: see resize_and_center_crop).
enum class ResizeFilter {
  // PIL Image.LANCZOS: Lanczos-3 taps centred on (x + 0.5) * in / out; when shrinking, the kernel
  // is widened by in / out (antialiasing). Taps outside the image are dropped and the rest
  // renormalised. TI2V-5B (wan/textimage2video.py) prepares its first frame with it. As PIL's
  // 8-bit passes saturate, each pass clamps to [-1, 1].
  Lanczos,
  // torch.nn.functional.interpolate(mode='bicubic', align_corners=False): Keys cubic with
  // a = -0.75, four taps at (x + 0.5) * in / out - 0.5, edge pixels repeated, no antialiasing.
  // I2V-A14B (wan/image2video.py) resizes its [-1, 1] image with it; values may overshoot
  // [-1, 1] and are kept, as there.
  Bicubic,
  // PIL Image.BICUBIC: the cubic with a = -0.5 and support 2 in PIL's geometry (as Lanczos:
  // taps centred on (x + 0.5) * in / out, widened by in / out when shrinking, renormalised), each
  // pass clamped to [-1, 1]. SiglipImageProcessor (HunyuanVideo 1.5's image encoder) resizes
  // with it.
  PilBicubic,
};

// A float image [3, H, W] resampled to [3, height, width], horizontally then vertically.
Tensor resize_image(const Tensor& image, int width, int height, ResizeFilter filter);

// TI2V-5B's first frame (wan/textimage2video.py, i2v): scale the image by
// s = max(width / W, height / H) to (round(W * s), round(H * s)) with Lanczos, so that it covers
// width x height, then cut out the centre: left = (scaled W - width) / 2, top likewise, rounded
// down. What differs from PIL: fisdit resamples the [-1, 1] floats in fp32, PIL resamples 8-bit
// values with 22-bit fixed-point weights and rounds to 8 bits after each pass; results agree to
// about one 8-bit level (tests/io/image_test.cpp checks against values from Pillow 13).
Tensor resize_and_center_crop(const Tensor& image, int width, int height);

struct ImageSize {
  int width = 0;
  int height = 0;
};

// The video size TI2V-5B picks for an image (best_output_size in wan/utils/utils.py): the
// multiples of `multiple` (32 = VAE stride 16 x patch 2) with area <= max_area whose aspect is
// closest to the image's, trying width first and height first. Throws when the image is so
// narrow or wide that one side would be 0.
ImageSize wan_ti2v_video_size(int image_width, int image_height, int64_t max_area,
                              int multiple = 32);
// The video size I2V-A14B picks (wan/image2video.py): height = floor(sqrt(max_area * H / W) /
// 16) * 16, width = floor(sqrt(max_area * W / H) / 16) * 16 (16 = VAE stride 8 x patch 2); the
// image is then stretched to it with ResizeFilter::Bicubic, without cropping.
ImageSize wan_i2v_video_size(int image_width, int image_height, int64_t max_area,
                             int multiple = 16);
// The video size HunyuanVideo 1.5 picks for a first frame (the pipeline's
// get_closest_resolution_given_original_size with hyvideo/utils/data_utils.py's buckets): the
// sizes (a * stride, b * stride) with a * b <= round((base / stride)^2) made by walking a down
// from that count (b up while it fits), the sides at most 4:1 apart, then the one whose
// height / width (rounded to 5 decimals) is closest to the image's, the first on a tie. base 640
// is the pipeline's "480p", 960 its "720p". Throws for sizes that are not positive.
ImageSize hunyuan15_video_size(int image_width, int image_height, int base_size, int stride = 16);
// HunyuanVideo 1.5's resize_and_center_crop (hyvideo/utils/data_utils.py) and its first frame's
// Resize + CenterCrop: as resize_and_center_crop above, but the crop starts at Python's
// round((scaled - size) / 2), half to even (PIL's crop box and torchvision's CenterCrop round
// so), not at the floor.
Tensor resize_and_center_crop_rounded(const Tensor& image, int width, int height);

}  // namespace fisdit
