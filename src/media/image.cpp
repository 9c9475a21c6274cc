#include "media/image.h"

// jpeglib.h uses FILE and size_t without including their headers.
#include <cstdio>
#include <cstdlib>
// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <system_error>
#include <utility>

#include "fisdit/error.h"

namespace fisdit {

namespace {

namespace fs = std::filesystem;

// Encoded images larger than this are refused before they are read (a 2^27-pixel PNG of noise
// is ~400 MB).
constexpr uint64_t kMaxImageFileBytes = uint64_t{1} << 30;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

// Closes a stdio file on scope exit (unless release()d to check fclose's result).
struct StdioFile {
  FILE* f = nullptr;
  ~StdioFile() {
    if (f) std::fclose(f);
  }
  FILE* release() { return std::exchange(f, nullptr); }
};

std::vector<uint8_t> read_whole_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail(path, "is a directory, expected a PNG or JPEG image file");
  StdioFile file{std::fopen(path.c_str(), "rb")};
  if (!file.f) fail(path, "cannot open image: " + errno_text(errno));
  std::vector<uint8_t> bytes;
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, file.f)) > 0) {
    if (bytes.size() + n > kMaxImageFileBytes)
      fail(path, "is larger than 1 GiB; not an image fisdit reads");
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  if (std::ferror(file.f)) fail(path, "cannot read image: " + errno_text(errno));
  return bytes;
}

void check_pixel_count(const std::string& path, uint64_t width, uint64_t height) {
  if (width == 0 || height == 0) fail(path, "image has no pixels");
  if (width * height > static_cast<uint64_t>(kMaxImagePixels))
    fail(path, "image is " + std::to_string(width) + "x" + std::to_string(height) +
                   ", larger than the " + std::to_string(kMaxImagePixels) +
                   " pixels fisdit reads; downscale it first");
}

// 8-bit interleaved RGB rows -> float [3, H, W] in [-1, 1].
Tensor planar_from_rgb8(const uint8_t* rgb, int64_t width, int64_t height, size_t stride) {
  Tensor out = Tensor::zeros({3, height, width});
  float* dst = out.f32();
  const int64_t plane = width * height;
#pragma omp parallel for schedule(static)
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = rgb + static_cast<size_t>(y) * stride;
    for (int64_t x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        dst[c * plane + y * width + x] = static_cast<float>(row[x * 3 + c]) / 255.0f * 2.0f - 1.0f;
  }
  return out;
}

// 16-bit big-endian interleaved RGB rows (PNG's byte order) -> float [3, H, W] in [-1, 1].
Tensor planar_from_rgb16be(const uint8_t* rgb, int64_t width, int64_t height, size_t stride) {
  Tensor out = Tensor::zeros({3, height, width});
  float* dst = out.f32();
  const int64_t plane = width * height;
#pragma omp parallel for schedule(static)
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = rgb + static_cast<size_t>(y) * stride;
    for (int64_t x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c) {
        const uint8_t* s = row + (x * 3 + c) * 2;
        const int v = (s[0] << 8) | s[1];
        dst[c * plane + y * width + x] = static_cast<float>(v) / 65535.0f * 2.0f - 1.0f;
      }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// PNG (libpng). libpng reports errors by longjmp to png_jmpbuf. Each function that calls into
// libpng sets its own jump point and holds only trivially destructible locals, so the jump skips
// no destructor; buffers are allocated by the callers, outside the jump's reach.

struct PngMessages {
  char text[256] = {};
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* m = static_cast<PngMessages*>(png_get_error_ptr(png));
  std::snprintf(m->text, sizeof m->text, "%s", message ? message : "unknown libpng error");
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {
  // Warnings (unknown or damaged ancillary chunks, odd sRGB profiles) do not change the pixels.
}

struct PngSource {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
};

void png_on_read(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->pos) png_error(png, "file ends early");
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

struct PngReadHandle {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReadHandle() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

struct PngLayout {
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, channels = 0;
  size_t rowbytes = 0;
};

// Reads the header and sets the transforms that turn any PNG into 8- or 16-bit RGB.
bool png_read_layout(PngReadHandle& h, PngLayout& layout) {
  if (setjmp(png_jmpbuf(h.png))) return false;
  png_read_info(h.png, h.info);
  const int color_type = png_get_color_type(h.png, h.info);
  const int bit_depth = png_get_bit_depth(h.png, h.info);
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(h.png);
  if ((color_type & PNG_COLOR_MASK_COLOR) == 0) {
    if (bit_depth < 8) png_set_expand_gray_1_2_4_to_8(h.png);
    png_set_gray_to_rgb(h.png);
  }
  // Drops an alpha channel, whether stored or made from tRNS by the palette expansion.
  png_set_strip_alpha(h.png);
  png_set_interlace_handling(h.png);
  png_read_update_info(h.png, h.info);
  layout.width = png_get_image_width(h.png, h.info);
  layout.height = png_get_image_height(h.png, h.info);
  layout.bit_depth = png_get_bit_depth(h.png, h.info);
  layout.channels = png_get_channels(h.png, h.info);
  layout.rowbytes = png_get_rowbytes(h.png, h.info);
  return true;
}

bool png_read_rows(PngReadHandle& h, png_bytepp rows) {
  if (setjmp(png_jmpbuf(h.png))) return false;
  png_read_image(h.png, rows);
  png_read_end(h.png, nullptr);
  return true;
}

std::string png_failure(const PngMessages& m) {
  const std::string what = m.text;
  if (what == "file ends early")
    return "PNG data ends early: the file is truncated; re-export or re-download it";
  if (what.find("Not enough image data") != std::string::npos)
    return "PNG image data is incomplete (libpng: " + what +
           "): the file is truncated or damaged; re-export or re-download it";
  return "damaged PNG (libpng: " + what + "); re-export the image";
}

Tensor decode_png(const std::string& path, const std::vector<uint8_t>& bytes) {
  PngMessages messages;
  PngSource source{bytes.data(), bytes.size(), 0};
  PngReadHandle h;
  h.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &messages, png_on_error, png_on_warning);
  if (!h.png) fail(path, "libpng could not start (out of memory)");
  h.info = png_create_info_struct(h.png);
  if (!h.info) fail(path, "libpng could not start (out of memory)");
  png_set_read_fn(h.png, &source, png_on_read);
  // libpng's own bound on width and height is 1e6 each; the pixel count is checked below.
  PngLayout layout;
  if (!png_read_layout(h, layout)) fail(path, png_failure(messages));
  check_pixel_count(path, layout.width, layout.height);
  if (layout.channels != 3 || (layout.bit_depth != 8 && layout.bit_depth != 16))
    fail(path, "PNG decodes to " + std::to_string(layout.channels) + " channel(s) of " +
                   std::to_string(layout.bit_depth) + " bits, expected RGB (fisdit bug)");
  const size_t stride = layout.rowbytes;
  std::vector<uint8_t> pixels(stride * layout.height);
  std::vector<png_bytep> rows(layout.height);
  for (png_uint_32 y = 0; y < layout.height; ++y) rows[y] = pixels.data() + stride * y;
  if (!png_read_rows(h, rows.data())) fail(path, png_failure(messages));
  return layout.bit_depth == 16
             ? planar_from_rgb16be(pixels.data(), layout.width, layout.height, stride)
             : planar_from_rgb8(pixels.data(), layout.width, layout.height, stride);
}

struct PngWriteHandle {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngWriteHandle() { png_destroy_write_struct(&png, info ? &info : nullptr); }
};

struct PngSink {
  std::vector<uint8_t> bytes;
  bool out_of_memory = false;
};

void png_on_write(png_structp png, png_bytep data, size_t n) {
  auto* sink = static_cast<PngSink*>(png_get_io_ptr(png));
  try {
    sink->bytes.insert(sink->bytes.end(), data, data + n);
  } catch (const std::bad_alloc&) {
    sink->out_of_memory = true;
  }
  // Outside the handler: a longjmp must not leave a catch block.
  if (sink->out_of_memory) png_error(png, "out of memory");
}

void png_on_flush(png_structp) {}

bool png_write_rows(PngWriteHandle& h, png_uint_32 width, png_uint_32 height, png_bytepp rows) {
  if (setjmp(png_jmpbuf(h.png))) return false;
  png_set_IHDR(h.png, h.info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(h.png, h.info);
  png_write_image(h.png, rows);
  png_write_end(h.png, nullptr);
  return true;
}

// Writes `bytes` to `path` whole, or removes what it left and throws.
void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  StdioFile file{std::fopen(path.c_str(), "wb")};
  if (!file.f) fail(path, "cannot create file: " + errno_text(errno));
  const bool wrote = std::fwrite(bytes.data(), 1, bytes.size(), file.f) == bytes.size();
  int err = errno;
  const bool closed = std::fclose(file.release()) == 0;
  if (wrote && !closed) err = errno;
  if (!wrote || !closed) {
    // Only a regular file is removed (never a device such as /dev/full).
    std::error_code ec;
    if (fs::is_regular_file(path, ec)) std::remove(path.c_str());
    fail(path, "cannot write file: " + errno_text(err));
  }
}

// ---------------------------------------------------------------------------------------------
// JPEG (libjpeg). libjpeg's error_exit must not return; it longjmps to the jump point of the
// function that called into libjpeg, under the same rules as for libpng above.

struct JpegErrors {
  jpeg_error_mgr mgr;  // first member: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char text[JMSG_LENGTH_MAX];
  bool truncated;
};

void jpeg_on_error(j_common_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, e->text);
  std::longjmp(e->jump, 1);
}

void jpeg_on_message(j_common_ptr, int) {
  // Warnings about corrupt but decodable data ("extraneous bytes before marker") are dropped,
  // as PIL drops them; running out of data is caught by the source below.
}

// A source manager over bytes in memory whose end of data is an error (libjpeg's own managers
// would invent an end-of-image marker and let a truncated file decode as grey).
void jpeg_source_init(j_decompress_ptr) {}
void jpeg_source_term(j_decompress_ptr) {}

boolean jpeg_source_fill(j_decompress_ptr cinfo) {
  auto* e = reinterpret_cast<JpegErrors*>(cinfo->err);
  e->truncated = true;
  std::snprintf(e->text, sizeof e->text, "file ends early");
  std::longjmp(e->jump, 1);
}

void jpeg_source_skip(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  jpeg_source_mgr* src = cinfo->src;
  if (static_cast<unsigned long>(count) > src->bytes_in_buffer) jpeg_source_fill(cinfo);
  src->next_input_byte += count;
  src->bytes_in_buffer -= static_cast<size_t>(count);
}

struct JpegReadHandle {
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  jpeg_source_mgr source;
  JpegReadHandle() {
    std::memset(&cinfo, 0, sizeof cinfo);
    std::memset(&errors, 0, sizeof errors);
    std::memset(&source, 0, sizeof source);
  }
  // Safe on a struct jpeg_create_decompress never reached: jpeg_destroy skips a NULL pool.
  ~JpegReadHandle() { jpeg_destroy_decompress(&cinfo); }
};

enum class JpegStart { Ok, Failed, Cmyk };

JpegStart jpeg_start(JpegReadHandle& h, const uint8_t* data, size_t size) {
  h.cinfo.err = jpeg_std_error(&h.errors.mgr);
  h.errors.mgr.error_exit = jpeg_on_error;
  h.errors.mgr.emit_message = jpeg_on_message;
  if (setjmp(h.errors.jump)) return JpegStart::Failed;
  jpeg_create_decompress(&h.cinfo);
  h.source.next_input_byte = data;
  h.source.bytes_in_buffer = size;
  h.source.init_source = jpeg_source_init;
  h.source.fill_input_buffer = jpeg_source_fill;
  h.source.skip_input_data = jpeg_source_skip;
  h.source.resync_to_restart = jpeg_resync_to_restart;
  h.source.term_source = jpeg_source_term;
  h.cinfo.src = &h.source;
  jpeg_read_header(&h.cinfo, TRUE);
  if (h.cinfo.jpeg_color_space == JCS_CMYK || h.cinfo.jpeg_color_space == JCS_YCCK)
    return JpegStart::Cmyk;
  h.cinfo.out_color_space = JCS_RGB;
  jpeg_calc_output_dimensions(&h.cinfo);
  return JpegStart::Ok;
}

bool jpeg_decode_rows(JpegReadHandle& h, uint8_t* pixels, size_t stride) {
  if (setjmp(h.errors.jump)) return false;
  jpeg_start_decompress(&h.cinfo);
  while (h.cinfo.output_scanline < h.cinfo.output_height) {
    JSAMPROW row = pixels + stride * h.cinfo.output_scanline;
    jpeg_read_scanlines(&h.cinfo, &row, 1);
  }
  jpeg_finish_decompress(&h.cinfo);
  return true;
}

std::string jpeg_failure(const JpegErrors& e) {
  if (e.truncated)
    return "JPEG data ends early: the file is truncated; re-export or re-download it";
  return std::string("damaged JPEG (libjpeg: ") + e.text + "); re-export the image";
}

Tensor decode_jpeg(const std::string& path, const std::vector<uint8_t>& bytes) {
  JpegReadHandle h;
  switch (jpeg_start(h, bytes.data(), bytes.size())) {
    case JpegStart::Failed:
      fail(path, jpeg_failure(h.errors));
    case JpegStart::Cmyk:
      fail(path, "is a CMYK JPEG; fisdit reads RGB and grayscale JPEGs: convert it to RGB");
    case JpegStart::Ok:
      break;
  }
  check_pixel_count(path, h.cinfo.output_width, h.cinfo.output_height);
  if (h.cinfo.output_components != 3)
    fail(path, "JPEG decodes to " + std::to_string(h.cinfo.output_components) +
                   " components, expected 3 (RGB)");
  const size_t stride = static_cast<size_t>(h.cinfo.output_width) * 3;
  std::vector<uint8_t> pixels(stride * h.cinfo.output_height);
  if (!jpeg_decode_rows(h, pixels.data(), stride)) fail(path, jpeg_failure(h.errors));
  return planar_from_rgb8(pixels.data(), h.cinfo.output_width, h.cinfo.output_height, stride);
}

// ---------------------------------------------------------------------------------------------

bool starts_with(const std::vector<uint8_t>& bytes, std::string_view magic, size_t at = 0) {
  return bytes.size() >= at + magic.size() &&
         std::memcmp(bytes.data() + at, magic.data(), magic.size()) == 0;
}

// The name of a common image format fisdit does not read, or "".
std::string other_format(const std::vector<uint8_t>& bytes) {
  if (starts_with(bytes, "GIF87a") || starts_with(bytes, "GIF89a")) return "a GIF";
  if (starts_with(bytes, "RIFF") && starts_with(bytes, "WEBP", 8)) return "a WebP";
  if (starts_with(bytes, "BM")) return "a BMP";
  if (starts_with(bytes, "II*") || starts_with(bytes, "MM\0*")) return "a TIFF";
  if (starts_with(bytes, "ftyp", 4)) return "an ISO media (HEIC/AVIF/MP4)";
  return "";
}

uint8_t to_u8(float x) {
  if (!(x > -1.0f)) return 0;  // NaN too
  if (!(x < 1.0f)) return 255;
  return static_cast<uint8_t>(std::lround((static_cast<double>(x) + 1.0) * 127.5));
}

// Host F32 view or copy of a float tensor; `what` names the argument in errors.
Tensor host_f32(const Tensor& t, const char* what) {
  if (!t.defined()) throw Error(std::string(what) + ": undefined tensor");
  if (t.device() != Device::CPU) throw Error(std::string(what) + ": tensor must be on the host");
  if (!is_float(t.dtype()))
    throw Error(std::string(what) + ": expected a float tensor, got " +
                std::string(dtype_name(t.dtype())));
  return t.dtype() == DType::F32 ? t : t.to_f32();
}

// ---------------------------------------------------------------------------------------------
// Resampling: per output position, `taps` source indices and weights.

struct Taps {
  int taps = 0;
  std::vector<int> count;     // [out]: taps in use (the rest have weight 0)
  std::vector<int> index;     // [out * taps]
  std::vector<float> weight;  // [out * taps]
};

double sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= std::numbers::pi;
  return std::sin(x) / x;
}

double lanczos3(double x) { return (x > -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0; }

// PIL's bicubic kernel (a = -0.5), support 2.
double pil_cubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

// PIL's resampling geometry: output pixel o covers source [o * scale, (o + 1) * scale); the
// kernel `filter` of half-width `radius` is widened by the scale when shrinking.
Taps pil_taps(int in, int out, double (*filter)(double), double radius) {
  const double scale = static_cast<double>(in) / out;
  const double filter_scale = std::max(scale, 1.0);
  const double support = radius * filter_scale;
  Taps t;
  t.taps = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.count.assign(out, 0);
  t.index.assign(static_cast<size_t>(out) * t.taps, 0);
  t.weight.assign(static_cast<size_t>(out) * t.taps, 0.0f);
  std::vector<double> w(t.taps);
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int first = std::max(static_cast<int>(std::floor(center - support + 0.5)), 0);
    const int last = std::min(static_cast<int>(std::floor(center + support + 0.5)), in);
    const int count = std::clamp(last - first, 0, t.taps);
    t.count[o] = count;
    double sum = 0.0;
    for (int k = 0; k < count; ++k) {
      w[k] = filter((first + k - center + 0.5) / filter_scale);
      sum += w[k];
    }
    for (int k = 0; k < count; ++k) {
      t.index[static_cast<size_t>(o) * t.taps + k] = first + k;
      t.weight[static_cast<size_t>(o) * t.taps + k] =
          static_cast<float>(sum != 0.0 ? w[k] / sum : 0.0);
    }
  }
  return t;
}

// PyTorch's bicubic (upsample_bicubic2d, align_corners=False): Keys' cubic, a = -0.75.
Taps bicubic_taps(int in, int out) {
  constexpr double a = -0.75;
  const auto near = [](double x) { return ((a + 2) * x - (a + 3)) * x * x + 1; };       // |x| <= 1
  const auto far = [](double x) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; };  // 1..2
  const double scale = static_cast<double>(in) / out;
  Taps t;
  t.taps = 4;
  t.count.assign(out, 4);
  t.index.resize(static_cast<size_t>(out) * 4);
  t.weight.resize(static_cast<size_t>(out) * 4);
  for (int o = 0; o < out; ++o) {
    const double src = (o + 0.5) * scale - 0.5;
    const double base = std::floor(src);
    const double f = src - base;
    const double w[4] = {far(f + 1), near(f), near(1 - f), far(2 - f)};
    for (int k = 0; k < 4; ++k) {
      t.index[static_cast<size_t>(o) * 4 + k] =
          std::clamp(static_cast<int>(base) - 1 + k, 0, in - 1);
      t.weight[static_cast<size_t>(o) * 4 + k] = static_cast<float>(w[k]);
    }
  }
  return t;
}

Taps make_taps(int in, int out, ResizeFilter filter) {
  switch (filter) {
    case ResizeFilter::Lanczos:
      return pil_taps(in, out, lanczos3, 3.0);
    case ResizeFilter::PilBicubic:
      return pil_taps(in, out, pil_cubic, 2.0);
    case ResizeFilter::Bicubic:
      break;
  }
  return bicubic_taps(in, out);
}

// Python's float floor division a // b for b > 0 (exact: fmod is exact), as the official size
// formulas use it.
double py_floordiv(double a, double b) {
  const double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod < 0.0) div -= 1.0;  // a < 0
  if (div == 0.0) return 0.0;
  double floor_div = std::floor(div);
  if (div - floor_div > 0.5) floor_div += 1.0;
  return floor_div;
}

void check_size_args(const char* fn, int image_width, int image_height, int64_t max_area,
                     int multiple) {
  if (image_width <= 0 || image_height <= 0 || max_area <= 0 || multiple <= 0)
    throw Error(std::string(fn) + ": image size " + std::to_string(image_width) + "x" +
                std::to_string(image_height) + ", max_area " + std::to_string(max_area) +
                " and multiple " + std::to_string(multiple) + " must all be positive");
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Tensor read_image(const std::string& path) {
  const std::vector<uint8_t> bytes = read_whole_file(path);
  if (bytes.empty()) fail(path, "is empty, expected a PNG or JPEG image");
  if (starts_with(bytes, "\x89PNG\r\n\x1a\n")) return decode_png(path, bytes);
  if (starts_with(bytes, "\xff\xd8\xff")) return decode_jpeg(path, bytes);
  const std::string other = other_format(bytes);
  if (!other.empty())
    fail(path, "is " + other + " image; fisdit reads PNG and JPEG: convert it to PNG");
  fail(path, "is not a PNG or JPEG image (unknown first bytes); give a .png or .jpg file");
}

Tensor image_to_rgb8(const Tensor& image) {
  const Tensor img = host_f32(image, "image_to_rgb8");
  if (img.ndim() != 3 || img.dim(0) != 3)
    throw Error("image_to_rgb8: expected an image [3, H, W], got " + shape_str(img.shape()));
  const int64_t h = img.dim(1), w = img.dim(2), plane = h * w;
  Tensor out = Tensor::zeros({h, w, 3}, DType::U8);
  const float* src = img.f32();
  auto* dst = out.data_as<uint8_t>();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) dst[i * 3 + c] = to_u8(src[c * plane + i]);
  return out;
}

Tensor video_frame_to_rgb8(const Tensor& video, int64_t index) {
  const Tensor v = host_f32(video, "video_frame_to_rgb8");
  if (v.ndim() != 4 || v.dim(0) != 3)
    throw Error("video_frame_to_rgb8: expected a video [3, F, H, W], got " + shape_str(v.shape()));
  const int64_t frames = v.dim(1), h = v.dim(2), w = v.dim(3), plane = h * w;
  if (index < 0 || index >= frames)
    throw Error("video_frame_to_rgb8: frame " + std::to_string(index) + " of a video of " +
                std::to_string(frames) + " frames");
  Tensor out = Tensor::zeros({h, w, 3}, DType::U8);
  const float* src = v.f32();
  auto* dst = out.data_as<uint8_t>();
  for (int c = 0; c < 3; ++c) {
    const float* channel = src + (c * frames + index) * plane;
    for (int64_t i = 0; i < plane; ++i) dst[i * 3 + c] = to_u8(channel[i]);
  }
  return out;
}

Tensor rgb8_to_image(const Tensor& rgb8) {
  if (!rgb8.defined() || rgb8.device() != Device::CPU || rgb8.dtype() != DType::U8 ||
      rgb8.ndim() != 3 || rgb8.dim(2) != 3)
    throw Error("rgb8_to_image: expected a host U8 tensor [H, W, 3], got " +
                std::string(rgb8.defined() ? dtype_name(rgb8.dtype()) : "undefined") + " " +
                shape_str(rgb8.shape()));
  return planar_from_rgb8(rgb8.data_as<uint8_t>(), rgb8.dim(1), rgb8.dim(0),
                          static_cast<size_t>(rgb8.dim(1)) * 3);
}

void write_png(const std::string& path, const Tensor& rgb8) {
  if (!rgb8.defined() || rgb8.device() != Device::CPU || rgb8.dtype() != DType::U8 ||
      rgb8.ndim() != 3 || rgb8.dim(2) != 3)
    fail(path, "write_png needs a host U8 tensor [H, W, 3] (see image_to_rgb8), got " +
                   std::string(rgb8.defined() ? dtype_name(rgb8.dtype()) : "undefined") + " " +
                   shape_str(rgb8.shape()));
  const int64_t h = rgb8.dim(0), w = rgb8.dim(1);
  if (h <= 0 || w <= 0 || h > 1000000 || w > 1000000)
    fail(path, "cannot write a PNG of " + std::to_string(w) + "x" + std::to_string(h) + " pixels");
  std::vector<png_bytep> rows(static_cast<size_t>(h));
  // libpng takes non-const row pointers but only reads them when writing.
  auto* base = const_cast<uint8_t*>(rgb8.data_as<uint8_t>());
  for (int64_t y = 0; y < h; ++y) rows[y] = base + static_cast<size_t>(y * w * 3);
  PngMessages messages;
  PngSink sink;
  PngWriteHandle handle;
  handle.png =
      png_create_write_struct(PNG_LIBPNG_VER_STRING, &messages, png_on_error, png_on_warning);
  if (!handle.png) fail(path, "libpng could not start (out of memory)");
  handle.info = png_create_info_struct(handle.png);
  if (!handle.info) fail(path, "libpng could not start (out of memory)");
  png_set_write_fn(handle.png, &sink, png_on_write, png_on_flush);
  if (!png_write_rows(handle, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h),
                      rows.data()))
    fail(path, std::string("cannot encode PNG (libpng: ") + messages.text + ")");
  write_file(path, sink.bytes);
}

std::vector<std::string> write_png_frames(const std::string& dir, const Tensor& video) {
  const Tensor v = host_f32(video, dir.c_str());
  if (v.ndim() != 4 || v.dim(0) != 3)
    fail(dir, "PNG frames need a video [3, F, H, W], got " + shape_str(v.shape()));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir))
    fail(dir, "cannot create the frames directory: " +
                  (ec ? ec.message() : std::string("a file of that name exists")));
  const int64_t frames = v.dim(1);
  std::vector<std::string> paths, errors(static_cast<size_t>(frames));
  for (int64_t f = 0; f < frames; ++f) {
    char name[32];
    std::snprintf(name, sizeof name, "frame_%04lld.png", static_cast<long long>(f));
    paths.push_back((fs::path(dir) / name).string());
  }
  // Frames are compressed in parallel (81 frames of 1280x720 take ~17 s on one core); the first
  // failure, in frame order, is reported after all threads are done.
#pragma omp parallel for schedule(dynamic)
  for (int64_t f = 0; f < frames; ++f) {
    try {
      write_png(paths[static_cast<size_t>(f)], video_frame_to_rgb8(v, f));
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(f)] = e.what();
    }
  }
  for (const std::string& e : errors)
    if (!e.empty()) throw Error(e);
  return paths;
}

Tensor resize_image(const Tensor& image, int width, int height, ResizeFilter filter) {
  const Tensor img = host_f32(image, "resize_image");
  if (img.ndim() != 3 || img.dim(0) != 3)
    throw Error("resize_image: expected an image [3, H, W], got " + shape_str(img.shape()));
  if (width <= 0 || height <= 0 || int64_t{width} * height > kMaxImagePixels)
    throw Error("resize_image: cannot resize to " + std::to_string(width) + "x" +
                std::to_string(height));
  const int in_h = static_cast<int>(img.dim(1)), in_w = static_cast<int>(img.dim(2));
  if (in_h <= 0 || in_w <= 0) throw Error("resize_image: the image has no pixels");
  const Taps tx = make_taps(in_w, width, filter), ty = make_taps(in_h, height, filter);
  // PIL's 8-bit passes saturate at 0 and 255 after each pass; PyTorch's float bicubic does not.
  const bool clamp = filter != ResizeFilter::Bicubic;
  // Horizontal pass: [3, in_h, in_w] -> [3, in_h, width].
  std::vector<float> mid(static_cast<size_t>(3) * in_h * width);
  const float* src = img.f32();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t{3} * in_h; ++row) {
    const float* s = src + row * in_w;
    float* d = mid.data() + row * width;
    for (int o = 0; o < width; ++o) {
      const int* idx = tx.index.data() + static_cast<size_t>(o) * tx.taps;
      const float* wt = tx.weight.data() + static_cast<size_t>(o) * tx.taps;
      float acc = 0.0f;
      for (int k = 0; k < tx.count[o]; ++k) acc += wt[k] * s[idx[k]];
      d[o] = clamp ? std::clamp(acc, -1.0f, 1.0f) : acc;
    }
  }
  // Vertical pass: -> [3, height, width].
  Tensor out = Tensor::zeros({3, height, width});
  float* dst = out.f32();
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < int64_t{3} * height; ++row) {
    const int64_t c = row / height, o = row % height;
    const int* idx = ty.index.data() + static_cast<size_t>(o) * ty.taps;
    const float* wt = ty.weight.data() + static_cast<size_t>(o) * ty.taps;
    float* d = dst + row * width;
    for (int k = 0; k < ty.count[o]; ++k) {
      const float* s = mid.data() + (c * in_h + idx[k]) * width;
      for (int x = 0; x < width; ++x) d[x] += wt[k] * s[x];
    }
    if (clamp)
      for (int x = 0; x < width; ++x) d[x] = std::clamp(d[x], -1.0f, 1.0f);
  }
  return out;
}

namespace {
Tensor resize_and_crop(const Tensor& image, int width, int height, bool round_offset);
}  // namespace

Tensor resize_and_center_crop(const Tensor& image, int width, int height) {
  return resize_and_crop(image, width, height, false);
}

Tensor resize_and_center_crop_rounded(const Tensor& image, int width, int height) {
  return resize_and_crop(image, width, height, true);
}

ImageSize hunyuan15_video_size(int image_width, int image_height, int base_size, int stride) {
  if (image_width <= 0 || image_height <= 0 || base_size <= 0 || stride <= 0)
    throw Error("hunyuan15_video_size: sizes must be positive, got " + std::to_string(image_width) +
                "x" + std::to_string(image_height) + ", base " + std::to_string(base_size) +
                ", stride " + std::to_string(stride));
  // generate_crop_size_list(base, stride, max_ratio 4): (first, second) pairs in walk order.
  const double ratio_patches = static_cast<double>(base_size) / stride;
  const int64_t patches = std::llrint(ratio_patches * ratio_patches);
  std::vector<std::pair<int64_t, int64_t>> sizes;
  int64_t a = patches, b = 1;
  while (a > 0) {
    if (static_cast<double>(std::max(a, b)) / static_cast<double>(std::min(a, b)) <= 4.0)
      sizes.emplace_back(a * stride, b * stride);
    if ((b + 1) * a <= patches)
      ++b;
    else
      --a;
  }
  // The pipeline reads each pair as (height, width) and compares round(h / w, 5) with the
  // image's height / width.
  const double aspect = static_cast<double>(image_height) / image_width;
  size_t best = 0;
  double best_diff = INFINITY;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double r =
        std::nearbyint(static_cast<double>(sizes[i].first) / sizes[i].second * 1e5) / 1e5;
    const double diff = std::abs(r - aspect);
    if (diff < best_diff) {
      best_diff = diff;
      best = i;
    }
  }
  return {static_cast<int>(sizes[best].second), static_cast<int>(sizes[best].first)};
}

namespace {
Tensor resize_and_crop(const Tensor& image, int width, int height, bool round_offset) {
  const Tensor img = host_f32(image, "resize_and_center_crop");
  if (img.ndim() != 3 || img.dim(0) != 3)
    throw Error("resize_and_center_crop: expected an image [3, H, W], got " +
                shape_str(img.shape()));
  if (width <= 0 || height <= 0)
    throw Error("resize_and_center_crop: cannot crop to " + std::to_string(width) + "x" +
                std::to_string(height));
  const int64_t in_h = img.dim(1), in_w = img.dim(2);
  const double scale = std::max(static_cast<double>(width) / static_cast<double>(in_w),
                                static_cast<double>(height) / static_cast<double>(in_h));
  // Python's round(): half to even, as nearbyint in the default rounding mode.
  const int64_t scaled_w = std::llrint(static_cast<double>(in_w) * scale);
  const int64_t scaled_h = std::llrint(static_cast<double>(in_h) * scale);
  if (scaled_w < width || scaled_h < height || scaled_w * scaled_h > kMaxImagePixels)
    throw Error("resize_and_center_crop: cannot cover " + std::to_string(width) + "x" +
                std::to_string(height) + " from a " + std::to_string(in_w) + "x" +
                std::to_string(in_h) + " image");
  const Tensor scaled = scaled_w == in_w && scaled_h == in_h
                            ? img
                            : resize_image(img, static_cast<int>(scaled_w),
                                           static_cast<int>(scaled_h), ResizeFilter::Lanczos);
  // Floor, or Python's round half to even (nearbyint in the default rounding mode).
  const auto offset = [&](int64_t extra) {
    return round_offset ? static_cast<int64_t>(std::nearbyint(static_cast<double>(extra) / 2.0))
                        : extra / 2;
  };
  const int64_t left = offset(scaled_w - width), top = offset(scaled_h - height);
  Tensor out = Tensor::zeros({3, height, width});
  const float* s = scaled.f32();
  float* d = out.f32();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < height; ++y)
      std::memcpy(d + (c * height + y) * width, s + (c * scaled_h + top + y) * scaled_w + left,
                  sizeof(float) * static_cast<size_t>(width));
  return out;
}
}  // namespace

ImageSize wan_ti2v_video_size(int image_width, int image_height, int64_t max_area, int multiple) {
  check_size_args("wan_ti2v_video_size", image_width, image_height, max_area, multiple);
  const double area = static_cast<double>(max_area), m = multiple;
  const double ratio = static_cast<double>(image_width) / image_height;
  const double ow = std::pow(area * ratio, 0.5);
  const double oh = area / ow;
  // Width first, then height first (best_output_size); Python's int() truncates.
  const auto w1 = static_cast<int64_t>(py_floordiv(ow, m) * m);
  const auto h2 = static_cast<int64_t>(py_floordiv(oh, m) * m);
  if (w1 <= 0 || h2 <= 0)
    throw Error("wan_ti2v_video_size: a " + std::to_string(image_width) + "x" +
                std::to_string(image_height) + " image is too narrow or too wide for max_area " +
                std::to_string(max_area) + " (a side would be under " + std::to_string(multiple) +
                " pixels)");
  const auto h1 = static_cast<int64_t>(py_floordiv(area / static_cast<double>(w1), m) * m);
  const auto w2 = static_cast<int64_t>(py_floordiv(area / static_cast<double>(h2), m) * m);
  if (h1 <= 0 || w2 <= 0)
    throw Error("wan_ti2v_video_size: a " + std::to_string(image_width) + "x" +
                std::to_string(image_height) + " image is too narrow or too wide for max_area " +
                std::to_string(max_area));
  const double ratio1 = static_cast<double>(w1) / static_cast<double>(h1);
  const double ratio2 = static_cast<double>(w2) / static_cast<double>(h2);
  if (std::max(ratio / ratio1, ratio1 / ratio) < std::max(ratio / ratio2, ratio2 / ratio))
    return {static_cast<int>(w1), static_cast<int>(h1)};
  return {static_cast<int>(w2), static_cast<int>(h2)};
}

ImageSize wan_i2v_video_size(int image_width, int image_height, int64_t max_area, int multiple) {
  check_size_args("wan_i2v_video_size", image_width, image_height, max_area, multiple);
  const double area = static_cast<double>(max_area);
  const double aspect = static_cast<double>(image_height) / image_width;
  const double h = py_floordiv(std::sqrt(area * aspect), multiple) * multiple;
  const double w = py_floordiv(std::sqrt(area / aspect), multiple) * multiple;
  if (h <= 0 || w <= 0)
    throw Error("wan_i2v_video_size: a " + std::to_string(image_width) + "x" +
                std::to_string(image_height) + " image is too narrow or too wide for max_area " +
                std::to_string(max_area) + " (a side would be under " + std::to_string(multiple) +
                " pixels)");
  return {static_cast<int>(w), static_cast<int>(h)};
}

}  // namespace fisdit
