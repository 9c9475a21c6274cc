#include "media/image.h"

#include <gtest/gtest.h>
// clang-format off
#include <cstdio>
#include <jpeglib.h>
// clang-format on
#include <png.h>

#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../io/io_test_util.h"
#include "io/safetensors.h"

namespace fisdit {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::TempDir;
using iotest::write_bytes;

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Test images written with libpng and libjpeg directly, in layouts fisdit itself never writes.

struct PngSpec {
  PngSpec(int w, int h, int type, int depth)
      : width(w), height(h), color_type(type), bit_depth(depth) {}
  int width, height;
  int color_type;
  int bit_depth;
  bool interlaced = false;
  std::vector<png_color> palette;
  std::vector<uint8_t> palette_alpha;  // tRNS of a palette image
};

// Writes `rows` (already packed in PNG's layout: big-endian 16-bit samples, bits packed MSB
// first) as a PNG. Returns false when libpng fails.
bool write_raw_png(const std::string& path, const PngSpec& spec, std::vector<uint8_t>& rows) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  const size_t stride = rows.size() / spec.height;
  std::vector<png_bytep> row_ptrs(spec.height);
  for (int y = 0; y < spec.height; ++y) row_ptrs[y] = rows.data() + stride * y;
  bool ok = false;
  if (setjmp(png_jmpbuf(png)) == 0) {
    png_init_io(png, f);
    png_set_IHDR(png, info, spec.width, spec.height, spec.bit_depth, spec.color_type,
                 spec.interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (!spec.palette.empty())
      png_set_PLTE(png, info, spec.palette.data(), static_cast<int>(spec.palette.size()));
    if (!spec.palette_alpha.empty())
      png_set_tRNS(png, info, spec.palette_alpha.data(),
                   static_cast<int>(spec.palette_alpha.size()), nullptr);
    png_write_info(png, info);
    png_write_image(png, row_ptrs.data());
    png_write_end(png, nullptr);
    ok = true;
  }
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
  return ok;
}

// Writes `pixels` (interleaved, `components` per pixel) as a baseline JPEG.
void write_jpeg(const std::string& path, int width, int height, int components, J_COLOR_SPACE space,
                const std::vector<uint8_t>& pixels, int quality) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  jpeg_compress_struct cinfo;
  jpeg_error_mgr err;
  cinfo.err = jpeg_std_error(&err);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, f);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = space;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) +
                   static_cast<size_t>(cinfo.next_scanline) * width * components;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(f);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Tensor random_rgb8(int64_t h, int64_t w, uint32_t seed) {
  Tensor t = Tensor::zeros({h, w, 3}, DType::U8);
  std::mt19937 rng(seed);
  auto* p = t.data_as<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(rng() & 0xff);
  return t;
}

// A smooth 8-bit test picture (JPEG compresses it with small errors).
std::vector<uint8_t> smooth_rgb(int w, int h) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = px.data() + (static_cast<size_t>(y) * w + x) * 3;
      p[0] = static_cast<uint8_t>(40 + 170 * x / (w - 1));
      p[1] = static_cast<uint8_t>(30 + 190 * y / (h - 1));
      p[2] = static_cast<uint8_t>(128 + 80 * std::sin(0.2 * (x + y)));
    }
  return px;
}

// The value of channel c at (y, x) of a float image [3, H, W].
float at(const Tensor& img, int c, int64_t y, int64_t x) {
  return img.f32()[(c * img.dim(1) + y) * img.dim(2) + x];
}

float level(uint8_t v) { return static_cast<float>(v) / 255.0f * 2.0f - 1.0f; }

// The pattern the Pillow / PyTorch reference values below were computed from.
Tensor reference_pattern(int w, int h) {
  Tensor t = Tensor::zeros({h, w, 3}, DType::U8);
  auto* p = t.data_as<uint8_t>();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        p[(y * w + x) * 3 + c] =
            static_cast<uint8_t>((x * 67 + y * 29 + c * 101 + x * y * 13) % 256);
  return rgb8_to_image(t);
}

// ---------------------------------------------------------------------------------------------
// 8-bit conversion

TEST(ImageTest, FloatToRgb8RoundsAndClamps) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor img = Tensor::from_vector(
      {-1.0f, 1.0f, 0.0f, -2.0f, 7.0f, nan, -1.0f + 2.0f / 255.0f, 1.0f - 0.9f / 255.0f, 0.5f},
      {3, 1, 3});
  const Tensor rgb = image_to_rgb8(img);
  ASSERT_EQ(rgb.shape(), (Shape{1, 3, 3}));
  const uint8_t* p = rgb.data_as<uint8_t>();
  // Pixel x holds channels (c0[x], c1[x], c2[x]).
  EXPECT_EQ(p[0], 0);    // -1
  EXPECT_EQ(p[3], 255);  // 1
  EXPECT_EQ(p[6], 128);  // 0 -> 127.5 rounds up
  EXPECT_EQ(p[1], 0);    // -2 clamps
  EXPECT_EQ(p[4], 255);  // 7 clamps
  EXPECT_EQ(p[7], 0);    // NaN -> -1
  EXPECT_EQ(p[2], 1);    // one level above black
  EXPECT_EQ(p[5], 255);  // within half a level of white
  EXPECT_EQ(p[8], 191);  // 0.5 -> 191.25
}

TEST(ImageTest, Rgb8ToFloatAndBackIsExactForEveryLevel) {
  Tensor rgb = Tensor::zeros({1, 256, 3}, DType::U8);
  for (int i = 0; i < 256 * 3; ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i / 3);
  const Tensor img = rgb8_to_image(rgb);
  EXPECT_EQ(at(img, 0, 0, 0), -1.0f);
  EXPECT_EQ(at(img, 2, 0, 255), 1.0f);
  const Tensor back = image_to_rgb8(img);
  EXPECT_EQ(std::memcmp(back.raw(), rgb.raw(), rgb.nbytes()), 0);
}

// ---------------------------------------------------------------------------------------------
// PNG

TEST(ImageTest, PngRoundTripIsExact) {
  TempDir dir;
  const Tensor rgb = random_rgb8(23, 37, 1);
  write_png(dir.file("a.png"), rgb);
  const Tensor img = read_image(dir.file("a.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 23, 37}));
  const Tensor back = image_to_rgb8(img);
  EXPECT_EQ(std::memcmp(back.raw(), rgb.raw(), rgb.nbytes()), 0);
  EXPECT_EQ(img.to_vector(), rgb8_to_image(rgb).to_vector());
}

TEST(ImageTest, WritePngFramesNamesEachFrameAndCreatesTheDirectory) {
  TempDir dir;
  Tensor video = Tensor::zeros({3, 3, 4, 6});
  float* v = video.f32();
  for (int64_t i = 0; i < video.numel(); ++i) v[i] = std::sin(0.37f * static_cast<float>(i));
  const std::string frames_dir = dir.file("out/run1/frames");
  const std::vector<std::string> paths = write_png_frames(frames_dir, video);
  ASSERT_EQ(paths.size(), 3u);
  for (int f = 0; f < 3; ++f) {
    const std::string expected = frames_dir + "/frame_000" + std::to_string(f) + ".png";
    EXPECT_EQ(paths[f], expected);
    const Tensor got = image_to_rgb8(read_image(expected));
    const Tensor want = video_frame_to_rgb8(video, f);
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.nbytes()), 0) << "frame " << f;
  }
  EXPECT_FALSE(fs::exists(frames_dir + "/frame_0003.png"));
}

TEST(ImageTest, GrayPngIsRepeatedIntoRgb) {
  TempDir dir;
  PngSpec spec{5, 3, PNG_COLOR_TYPE_GRAY, 8};
  std::vector<uint8_t> rows(15);
  for (int i = 0; i < 15; ++i) rows[i] = static_cast<uint8_t>(i * 17);
  ASSERT_TRUE(write_raw_png(dir.file("g.png"), spec, rows));
  const Tensor img = read_image(dir.file("g.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 3, 5}));
  for (int i = 0; i < 15; ++i)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(at(img, c, i / 5, i % 5), level(rows[i]));
}

TEST(ImageTest, AlphaIsDroppedNotComposited) {
  TempDir dir;
  // RGBA: colour stays whatever the alpha (PIL's convert("RGB") drops the channel).
  PngSpec rgba{2, 2, PNG_COLOR_TYPE_RGBA, 8};
  std::vector<uint8_t> rows = {10, 20, 30, 0, 200, 100, 50, 255, 90, 80, 70, 128, 1, 2, 3, 7};
  ASSERT_TRUE(write_raw_png(dir.file("rgba.png"), rgba, rows));
  Tensor img = read_image(dir.file("rgba.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 2, 2}));
  for (int p = 0; p < 4; ++p)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(at(img, c, p / 2, p % 2), level(rows[p * 4 + c]));
  // Gray + alpha.
  PngSpec ga{2, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 8};
  rows = {77, 0, 230, 255};
  ASSERT_TRUE(write_raw_png(dir.file("ga.png"), ga, rows));
  img = read_image(dir.file("ga.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 1, 2}));
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(at(img, c, 0, 0), level(77));
    EXPECT_EQ(at(img, c, 0, 1), level(230));
  }
}

TEST(ImageTest, SixteenBitPngKeepsItsPrecision) {
  TempDir dir;
  PngSpec spec{2, 1, PNG_COLOR_TYPE_RGB, 16};
  const uint16_t values[6] = {0, 65535, 32768, 257, 1000, 60000};
  std::vector<uint8_t> rows;
  for (uint16_t v : values) {
    rows.push_back(static_cast<uint8_t>(v >> 8));
    rows.push_back(static_cast<uint8_t>(v & 0xff));
  }
  ASSERT_TRUE(write_raw_png(dir.file("rgb16.png"), spec, rows));
  const Tensor img = read_image(dir.file("rgb16.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 1, 2}));
  for (int p = 0; p < 2; ++p)
    for (int c = 0; c < 3; ++c)
      EXPECT_NEAR(at(img, c, 0, p), values[p * 3 + c] / 65535.0 * 2.0 - 1.0, 1e-6);
  // 16-bit gray with alpha.
  PngSpec ga{1, 1, PNG_COLOR_TYPE_GRAY_ALPHA, 16};
  rows = {0x12, 0x34, 0x00, 0x01};
  ASSERT_TRUE(write_raw_png(dir.file("ga16.png"), ga, rows));
  const Tensor g = read_image(dir.file("ga16.png"));
  ASSERT_EQ(g.shape(), (Shape{3, 1, 1}));
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(at(g, c, 0, 0), 0x1234 / 65535.0 * 2.0 - 1.0, 1e-6);
}

TEST(ImageTest, PaletteOneBitAndInterlacedPngs) {
  TempDir dir;
  // Palette with transparency: colours come from the palette, transparency is dropped.
  PngSpec pal{3, 1, PNG_COLOR_TYPE_PALETTE, 8};
  pal.palette = {{255, 0, 0}, {0, 128, 255}, {9, 9, 9}};
  pal.palette_alpha = {0, 128, 255};
  std::vector<uint8_t> rows = {2, 0, 1};
  ASSERT_TRUE(write_raw_png(dir.file("pal.png"), pal, rows));
  Tensor img = read_image(dir.file("pal.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 1, 3}));
  for (int x = 0; x < 3; ++x) {
    const png_color& col = pal.palette[rows[x]];
    EXPECT_EQ(at(img, 0, 0, x), level(col.red));
    EXPECT_EQ(at(img, 1, 0, x), level(col.green));
    EXPECT_EQ(at(img, 2, 0, x), level(col.blue));
  }
  // 1-bit gray: 0 -> black, 1 -> white.
  PngSpec bits{10, 1, PNG_COLOR_TYPE_GRAY, 1};
  rows = {0b10110000, 0b01000000};  // pixels 1 0 1 1 0 0 0 0 | 0 1
  ASSERT_TRUE(write_raw_png(dir.file("bits.png"), bits, rows));
  img = read_image(dir.file("bits.png"));
  ASSERT_EQ(img.shape(), (Shape{3, 1, 10}));
  const int expected_bits[10] = {1, 0, 1, 1, 0, 0, 0, 0, 0, 1};
  for (int x = 0; x < 10; ++x) EXPECT_EQ(at(img, 1, 0, x), expected_bits[x] ? 1.0f : -1.0f);
  // Adam7 interlaced RGB reads as the same pixels.
  PngSpec inter{9, 7, PNG_COLOR_TYPE_RGB, 8};
  inter.interlaced = true;
  const Tensor rgb = random_rgb8(7, 9, 5);
  rows.assign(rgb.data_as<uint8_t>(), rgb.data_as<uint8_t>() + rgb.nbytes());
  ASSERT_TRUE(write_raw_png(dir.file("inter.png"), inter, rows));
  const Tensor back = image_to_rgb8(read_image(dir.file("inter.png")));
  EXPECT_EQ(std::memcmp(back.raw(), rgb.raw(), rgb.nbytes()), 0);
}

// ---------------------------------------------------------------------------------------------
// JPEG

TEST(ImageTest, JpegReadsCloseToWhatWasEncoded) {
  TempDir dir;
  const int w = 40, h = 24;
  const std::vector<uint8_t> px = smooth_rgb(w, h);
  write_jpeg(dir.file("a.jpg"), w, h, 3, JCS_RGB, px, 95);
  const Tensor rgb = image_to_rgb8(read_image(dir.file("a.jpg")));
  ASSERT_EQ(rgb.shape(), (Shape{h, w, 3}));
  // Quality 95 on a smooth picture: about one level on average; the blue wave loses up to ~13
  // levels to 4:2:0 chroma subsampling.
  double sum = 0;
  int worst = 0;
  for (size_t i = 0; i < px.size(); ++i) {
    const int d = std::abs(static_cast<int>(rgb.data_as<uint8_t>()[i]) - px[i]);
    sum += d;
    worst = std::max(worst, d);
  }
  EXPECT_LT(sum / static_cast<double>(px.size()), 2.0);
  EXPECT_LE(worst, 16);
}

TEST(ImageTest, GrayJpegIsRepeatedIntoRgb) {
  TempDir dir;
  std::vector<uint8_t> px(16 * 8);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(40 + i);
  write_jpeg(dir.file("g.jpg"), 16, 8, 1, JCS_GRAYSCALE, px, 95);
  const Tensor img = read_image(dir.file("g.jpg"));
  ASSERT_EQ(img.shape(), (Shape{3, 8, 16}));
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 16; ++x) {
      EXPECT_EQ(at(img, 0, y, x), at(img, 1, y, x));
      EXPECT_EQ(at(img, 0, y, x), at(img, 2, y, x));
      EXPECT_NEAR(at(img, 0, y, x), level(px[y * 16 + x]), 4.0 / 127.5);
    }
}

TEST(ImageTest, FormatComesFromTheBytesNotTheExtension) {
  TempDir dir;
  const Tensor rgb = random_rgb8(4, 5, 2);
  write_png(dir.file("actually_png.jpg"), rgb);
  EXPECT_EQ(read_image(dir.file("actually_png.jpg")).shape(), (Shape{3, 4, 5}));
  write_jpeg(dir.file("actually_jpeg.png"), 8, 8, 3, JCS_RGB, smooth_rgb(8, 8), 90);
  EXPECT_EQ(read_image(dir.file("actually_jpeg.png")).shape(), (Shape{3, 8, 8}));
}

// ---------------------------------------------------------------------------------------------
// Errors: each names the file and says what is wrong.

TEST(ImageTest, MissingEmptyTextAndOtherFormatsAreRefusedClearly) {
  TempDir dir;
  std::string msg = error_of([&] { read_image(dir.file("nope.png")); });
  EXPECT_TRUE(contains(msg, dir.file("nope.png")));
  EXPECT_TRUE(contains(msg, "No such file"));
  msg = error_of([&] { read_image(dir.path().string()); });
  EXPECT_TRUE(contains(msg, "is a directory"));
  write_bytes(dir.file("empty.png"), "");
  msg = error_of([&] { read_image(dir.file("empty.png")); });
  EXPECT_TRUE(contains(msg, dir.file("empty.png")));
  EXPECT_TRUE(contains(msg, "is empty"));
  write_bytes(dir.file("notes.png"), "a text file, not a picture\n");
  msg = error_of([&] { read_image(dir.file("notes.png")); });
  EXPECT_TRUE(contains(msg, dir.file("notes.png")));
  EXPECT_TRUE(contains(msg, "not a PNG or JPEG"));
  write_bytes(dir.file("anim.png"), "GIF89a\x01\x00\x01\x00");
  msg = error_of([&] { read_image(dir.file("anim.png")); });
  EXPECT_TRUE(contains(msg, "is a GIF image"));
}

TEST(ImageTest, TruncatedPngIsAnErrorAtEveryCut) {
  TempDir dir;
  write_png(dir.file("full.png"), random_rgb8(16, 16, 3));
  const std::string bytes = read_bytes(dir.file("full.png"));
  // Every prefix from the bare signature up to the file minus its last byte.
  for (size_t cut = 8; cut < bytes.size(); cut += (cut < 64 ? 1 : 37)) {
    const std::string path = dir.file("cut.png");
    write_bytes(path, bytes.substr(0, cut));
    const std::string msg = error_of([&] { read_image(path); });
    EXPECT_TRUE(contains(msg, path)) << "cut at " << cut;
    EXPECT_TRUE(contains(msg, "truncated")) << "cut at " << cut << ": " << msg;
  }
  write_bytes(dir.file("minus1.png"), bytes.substr(0, bytes.size() - 1));
  EXPECT_TRUE(contains(error_of([&] { read_image(dir.file("minus1.png")); }), "truncated"));
}

TEST(ImageTest, CorruptPngNamesTheDamage) {
  TempDir dir;
  write_png(dir.file("full.png"), random_rgb8(16, 16, 4));
  std::string bytes = read_bytes(dir.file("full.png"));
  // Flip a byte inside the IHDR chunk: its CRC no longer matches.
  bytes[20] ^= 0x40;
  write_bytes(dir.file("bad.png"), bytes);
  const std::string msg = error_of([&] { read_image(dir.file("bad.png")); });
  EXPECT_TRUE(contains(msg, dir.file("bad.png")));
  EXPECT_TRUE(contains(msg, "damaged PNG")) << msg;
}

TEST(ImageTest, TruncatedAndCorruptJpegAreErrors) {
  TempDir dir;
  write_jpeg(dir.file("full.jpg"), 32, 32, 3, JCS_RGB, smooth_rgb(32, 32), 90);
  const std::string bytes = read_bytes(dir.file("full.jpg"));
  for (size_t cut : {size_t{3}, size_t{20}, bytes.size() / 3, bytes.size() / 2, bytes.size() - 2}) {
    const std::string path = dir.file("cut.jpg");
    write_bytes(path, bytes.substr(0, cut));
    const std::string msg = error_of([&] { read_image(path); });
    EXPECT_TRUE(contains(msg, path)) << "cut at " << cut;
    EXPECT_TRUE(contains(msg, "truncated")) << "cut at " << cut << ": " << msg;
  }
  // A Huffman table segment whose length field is too short to hold it.
  std::string bad = bytes;
  const size_t dht = bad.find("\xff\xc4");
  ASSERT_NE(dht, std::string::npos);
  bad[dht + 2] = 0;
  bad[dht + 3] = 1;
  write_bytes(dir.file("bad.jpg"), bad);
  const std::string msg = error_of([&] { read_image(dir.file("bad.jpg")); });
  EXPECT_TRUE(contains(msg, dir.file("bad.jpg")));
  EXPECT_TRUE(contains(msg, "damaged JPEG")) << msg;
}

TEST(ImageTest, CmykJpegIsRefusedWithAHint) {
  TempDir dir;
  std::vector<uint8_t> px(8 * 8 * 4, 100);
  write_jpeg(dir.file("cmyk.jpg"), 8, 8, 4, JCS_CMYK, px, 90);
  const std::string msg = error_of([&] { read_image(dir.file("cmyk.jpg")); });
  EXPECT_TRUE(contains(msg, dir.file("cmyk.jpg")));
  EXPECT_TRUE(contains(msg, "CMYK"));
}

// Frames are written in parallel: a frame that cannot be written is still one clear error
// naming it (here a directory sits where frame 2 goes), and the other frames are written.
TEST(ImageTest, WritePngFramesReportsTheFrameThatFailed) {
  TempDir dir;
  const std::string frames_dir = dir.file("frames");
  fs::create_directories(frames_dir + "/frame_0002.png");
  const std::string msg = error_of([&] {
    write_png_frames(frames_dir, Tensor::zeros({3, 6, 4, 4}));
  });
  EXPECT_TRUE(contains(msg, frames_dir + "/frame_0002.png")) << msg;
  EXPECT_TRUE(contains(msg, "cannot create file")) << msg;
  for (int f : {0, 1, 3, 4, 5})
    EXPECT_TRUE(fs::is_regular_file(frames_dir + "/frame_000" + std::to_string(f) + ".png")) << f;
}

TEST(ImageTest, UnwritableOutputsAreErrors) {
  TempDir dir;
  const Tensor rgb = random_rgb8(2, 2, 6);
  std::string msg = error_of([&] { write_png(dir.file("no/such/dir/a.png"), rgb); });
  EXPECT_TRUE(contains(msg, dir.file("no/such/dir/a.png")));
  EXPECT_TRUE(contains(msg, "No such file or directory"));
  msg = error_of([&] { write_png(dir.path().string(), rgb); });
  EXPECT_TRUE(contains(msg, "cannot create file"));
  msg = error_of([&] { write_png(dir.file("f.png"), rgb8_to_image(rgb)); });
  EXPECT_TRUE(contains(msg, "U8 tensor [H, W, 3]"));
  EXPECT_FALSE(fs::exists(dir.file("f.png")));
  // The frames directory cannot be made where a file is.
  write_bytes(dir.file("plain"), "x");
  msg = error_of([&] { write_png_frames(dir.file("plain"), Tensor::zeros({3, 1, 2, 2})); });
  EXPECT_TRUE(contains(msg, dir.file("plain")));
  EXPECT_TRUE(contains(msg, "cannot create the frames directory"));
  if (fs::exists("/dev/full")) {
    msg = error_of([&] { write_png("/dev/full", rgb); });
    EXPECT_TRUE(contains(msg, "/dev/full: cannot write file"));
    EXPECT_TRUE(fs::exists("/dev/full"));
  }
}

// ---------------------------------------------------------------------------------------------
// Resizing

TEST(ImageTest, ConstantImageStaysConstant) {
  Tensor img = Tensor::zeros({3, 13, 17});
  for (int64_t i = 0; i < img.numel(); ++i) img.f32()[i] = i < 13 * 17 ? 0.25f : -0.5f;
  for (ResizeFilter filter :
       {ResizeFilter::Lanczos, ResizeFilter::Bicubic, ResizeFilter::PilBicubic})
    for (auto [w, h] : {std::pair{5, 4}, std::pair{40, 31}, std::pair{17, 13}, std::pair{1, 1}}) {
      const Tensor out = resize_image(img, w, h, filter);
      ASSERT_EQ(out.shape(), (Shape{3, h, w}));
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
          EXPECT_NEAR(at(out, 0, y, x), 0.25f, 1e-6);
          EXPECT_NEAR(at(out, 2, y, x), -0.5f, 1e-6);
        }
    }
  const Tensor crop = resize_and_center_crop(img, 8, 8);
  for (int64_t i = 0; i < 64; ++i) EXPECT_NEAR(crop.f32()[i], 0.25f, 1e-6);
}

// Reference values printed by tools/fixtures/media_reference.py: Pillow 13.0
// Image.fromarray(pattern).resize((w, h), Image.LANCZOS) and the crop of wan/textimage2video.py
// on it; PyTorch F.interpolate(mode='bicubic') on the pattern as to_tensor(...).sub(0.5).div(0.5).
// Pattern: (x * 67 + y * 29 + c * 101 + x * y * 13) % 256, a worst case of detail at every pixel.
TEST(ImageTest, LanczosMatchesPillowWithinOneLevel) {
  const std::vector<int> down = {93,  155, 111, 111, 116, 127, 134, 131, 118, 133, 116, 131,
                                 136, 157, 115, 146, 137, 137, 135, 107, 99,  105, 96,  150,
                                 120, 148, 116, 134, 132, 133, 109, 97,  146, 113, 79,  148};
  const std::vector<int> up = {0,   92,  220, 9,   106, 127, 60,  161, 6,   110, 241, 30,
                               129, 255, 83,  5,   101, 232, 22,  130, 140, 77,  178, 23,
                               131, 192, 51,  152, 187, 106, 18,  111, 246, 40,  160, 158,
                               99,  200, 45,  159, 128, 79,  182, 65,  136, 27,  120, 255,
                               53,  184, 171, 116, 217, 62,  180, 79,  100, 205, 0,   159};
  const std::vector<int> crop = {152, 141, 92,  65,  98,  152, 144, 150, 93,  149, 117, 138,
                                 157, 134, 158, 132, 129, 106, 130, 119, 136, 134, 103, 93,
                                 126, 154, 153, 153, 130, 127, 134, 106, 92,  119, 91,  121,
                                 116, 157, 117, 143, 106, 139, 100, 124, 169, 99,  71,  146};
  const auto check = [](const Tensor& got, const std::vector<int>& want, const char* what) {
    const Tensor rgb = image_to_rgb8(got);
    ASSERT_EQ(static_cast<size_t>(rgb.numel()), want.size()) << what;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_LE(std::abs(rgb.data_as<uint8_t>()[i] - want[i]), 1) << what << " value " << i;
  };
  check(resize_image(reference_pattern(10, 7), 4, 3, ResizeFilter::Lanczos), down, "down");
  check(resize_image(reference_pattern(3, 2), 5, 4, ResizeFilter::Lanczos), up, "up");
  check(resize_and_center_crop(reference_pattern(10, 7), 4, 4), crop, "crop");
}

// SiglipImageProcessor (transformers 4.57.1, Pillow 13: bicubic to the model's square, rescale,
// normalise) on the 8-bit image of tests/data/hunyuan15/vision_tiny.safetensors: fisdit's fp32
// resampling of the same values lands within about one 8-bit level (2/255 in [-1, 1]) of PIL's,
// which rounds to 8 bits after each pass (the kernel's negative lobes can carry the first
// pass's rounding a little past one level): bound 1.5 levels.
TEST(ImageTest, PilBicubicMatchesSiglipImageProcessorWithinAboutALevel) {
  const auto f =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/hunyuan15/vision_tiny.safetensors");
  Tensor img = f->tensor_f32("input.image").clone();  // 0..255
  for (int64_t i = 0; i < img.numel(); ++i) img.f32()[i] = img.f32()[i] / 127.5f - 1.0f;
  const Tensor want = f->tensor_f32("input.pixel_values");
  const Tensor got = resize_image(img, static_cast<int>(want.dim(2)), static_cast<int>(want.dim(1)),
                                  ResizeFilter::PilBicubic);
  ASSERT_EQ(got.shape(), want.shape());
  double worst = 0.0;
  for (int64_t i = 0; i < got.numel(); ++i)
    worst = std::max(worst, static_cast<double>(std::abs(got.f32()[i] - want.f32()[i])));
  std::printf("PIL bicubic vs SiglipImageProcessor: max |diff| %.4f (one level 0.0078)\n", worst);
  EXPECT_LE(worst, 1.5 * 2.0 / 255.0);
  // The Lanczos filter, or torch's bicubic, would not do.
  const Tensor torch_cubic = resize_image(img, static_cast<int>(want.dim(2)),
                                          static_cast<int>(want.dim(1)), ResizeFilter::Bicubic);
  double torch_worst = 0.0;
  for (int64_t i = 0; i < got.numel(); ++i)
    torch_worst =
        std::max(torch_worst, static_cast<double>(std::abs(torch_cubic.f32()[i] - want.f32()[i])));
  EXPECT_GT(torch_worst, 4.0 / 255.0);
}

// The sizes HunyuanVideo 1.5's pipeline picks (get_closest_resolution_given_original_size with
// data_utils.py's buckets, run in Python for these images): 480p = base 640, 720p = base 960.
TEST(ImageTest, HunyuanVideoSizeMatchesThePipelinesBuckets) {
  struct Case {
    int w, h, base, want_w, want_h;
  };
  for (const Case& c : {Case{300, 200, 640, 768, 512}, Case{1920, 1080, 640, 848, 480},
                        Case{1080, 1920, 640, 480, 848}, Case{512, 512, 640, 640, 640},
                        Case{1000, 333, 640, 1104, 368}, Case{4000, 900, 640, 1280, 320},
                        Case{300, 200, 960, 1168, 784}, Case{1920, 1080, 960, 1280, 720},
                        Case{848, 480, 960, 1280, 720}, Case{1000, 333, 960, 1632, 544},
                        Case{4000, 900, 960, 1920, 480}}) {
    const ImageSize s = hunyuan15_video_size(c.w, c.h, c.base);
    EXPECT_EQ(s.width, c.want_w) << c.w << "x" << c.h << " base " << c.base;
    EXPECT_EQ(s.height, c.want_h) << c.w << "x" << c.h << " base " << c.base;
  }
  EXPECT_THROW(hunyuan15_video_size(0, 10, 640), Error);
}

// The crop offset: Python's round((10 - 7) / 2) = 2 (half to even) where the floor is 1.
TEST(ImageTest, HunyuanCropRoundsItsOffsetHalfToEven) {
  Tensor img = Tensor::zeros({3, 4, 10});
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t x = 0; x < 10; ++x) img.f32()[(c * 4 + y) * 10 + x] = 0.05f * x;
  EXPECT_FLOAT_EQ(resize_and_center_crop_rounded(img, 7, 4).f32()[0], 0.10f);
  EXPECT_FLOAT_EQ(resize_and_center_crop(img, 7, 4).f32()[0], 0.05f);
  // 10 - 5: round(2.5) = 2, as the floor; 10 - 9: round(0.5) = 0.
  EXPECT_FLOAT_EQ(resize_and_center_crop_rounded(img, 5, 4).f32()[0], 0.10f);
  EXPECT_FLOAT_EQ(resize_and_center_crop_rounded(img, 9, 4).f32()[0], 0.0f);
}

TEST(ImageTest, BicubicMatchesPyTorch) {
  const std::vector<float> down = {
      -0.479317f, -0.615870f, 0.853052f,  0.160944f,  0.449449f,  0.486029f,
      0.549265f,  0.130944f,  -0.794335f, -0.554555f, -0.086549f, 0.153231f,
      0.457938f,  -0.119574f, -0.143171f, -0.771228f, -0.523101f, 0.752696f,
      -0.352696f, -0.841605f, 0.117357f,  -0.091374f, -0.519665f, -0.509369f,
      -0.397400f, 0.539104f,  0.348913f,  0.096891f,  -0.185846f, -0.149265f,
      0.125735f,  0.162316f,  0.187365f,  0.370936f,  0.295295f,  -0.272767f};
  const std::vector<float> up = {
      -1.073404f, -0.861332f, -0.509252f, -0.157173f, 0.054899f,  -1.001133f, -0.775113f,
      -0.399877f, -0.024641f, 0.201378f,  -0.882099f, -0.633106f, -0.219730f, 0.193645f,
      0.442638f,  -0.809828f, -0.546887f, -0.110355f, 0.326177f,  0.589117f,  -0.281247f,
      -0.084422f, 0.282904f,  0.764584f,  1.079150f,  -0.208976f, 0.049797f,  0.392279f,
      0.489115f,  0.494962f,  -0.089942f, 0.270862f,  0.572426f,  0.035402f,  -0.467229f,
      -0.017671f, 0.405081f,  0.681801f,  -0.240067f, -1.051417f, 0.703663f,  -0.056062f,
      -0.932782f, -0.725267f, -0.368631f, 0.775934f,  0.030157f,  -0.823407f, -0.592735f,
      -0.222152f, 0.894968f,  0.172164f,  -0.643260f, -0.374449f, 0.019108f,  0.967239f,
      0.258383f,  -0.533885f, -0.241917f, 0.165588f};
  // fp32 arithmetic in a different order than PyTorch's: a few ulps, printed to 6 decimals.
  const auto check = [](const Tensor& got, const std::vector<float>& want, const char* what) {
    ASSERT_EQ(static_cast<size_t>(got.numel()), want.size()) << what;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got.f32()[i], want[i], 2e-6) << what << " value " << i;
  };
  check(resize_image(reference_pattern(10, 7), 4, 3, ResizeFilter::Bicubic), down, "down");
  // Upscaling overshoots [-1, 1] (-1.07, 1.08): kept, as the official code keeps it.
  check(resize_image(reference_pattern(3, 2), 5, 4, ResizeFilter::Bicubic), up, "up");
}

TEST(ImageTest, CenterCropKeepsTheMiddleAtTheImageAspect) {
  // A wide image: left third red, middle third green, right third blue.
  Tensor wide = Tensor::zeros({3, 10, 30});
  for (int y = 0; y < 10; ++y)
    for (int x = 0; x < 30; ++x)
      for (int c = 0; c < 3; ++c) wide.f32()[(c * 10 + y) * 30 + x] = (x / 10 == c) ? 1.0f : -1.0f;
  // Square output of the image's height: no scaling, the green middle third.
  Tensor out = resize_and_center_crop(wide, 10, 10);
  ASSERT_EQ(out.shape(), (Shape{3, 10, 10}));
  for (int y = 0; y < 10; ++y)
    for (int x = 0; x < 10; ++x) {
      EXPECT_EQ(at(out, 0, y, x), -1.0f);
      EXPECT_EQ(at(out, 1, y, x), 1.0f);
      EXPECT_EQ(at(out, 2, y, x), -1.0f);
    }
  // Half size (15x5 after scaling), 5x5 out of its middle: green, but for the Lanczos kernel's
  // reach across the edges of the thirds (1.5% at the centre, more at the sides).
  out = resize_and_center_crop(wide, 5, 5);
  ASSERT_EQ(out.shape(), (Shape{3, 5, 5}));
  for (int y = 0; y < 5; ++y) {
    EXPECT_NEAR(at(out, 1, y, 2), 1.0f, 0.05);
    EXPECT_NEAR(at(out, 0, y, 2), -1.0f, 0.05);
    EXPECT_LT(at(out, 0, y, 0), -0.5f);
    EXPECT_LT(at(out, 2, y, 4), -0.5f);
  }
  // A tall image: the crop takes the middle rows; a horizontal ramp keeps its direction.
  Tensor tall = Tensor::zeros({3, 40, 8});
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 40; ++y)
      for (int x = 0; x < 8; ++x) tall.f32()[(c * 40 + y) * 8 + x] = y / 39.0f * 2.0f - 1.0f;
  out = resize_and_center_crop(tall, 16, 16);  // scale 2: 16x80, rows 32..47
  ASSERT_EQ(out.shape(), (Shape{3, 16, 16}));
  for (int y = 1; y < 16; ++y) EXPECT_GT(at(out, 0, y, 7), at(out, 0, y - 1, 7));
  EXPECT_NEAR(at(out, 0, 0, 0), (16 / 39.0f) * 2.0f - 1.0f, 0.05);
  EXPECT_NEAR(at(out, 0, 15, 0), (23.5f / 39.0f) * 2.0f - 1.0f, 0.05);
}

TEST(ImageTest, ResizeRefusesBadArguments) {
  EXPECT_TRUE(contains(error_of([] {
                         resize_image(Tensor::zeros({4, 2, 2}), 1, 1, ResizeFilter::Lanczos);
                       }),
                       "expected an image [3, H, W]"));
  EXPECT_TRUE(contains(error_of([] {
                         resize_image(Tensor::zeros({3, 2, 2}), 0, 1, ResizeFilter::Bicubic);
                       }),
                       "cannot resize to 0x1"));
  EXPECT_TRUE(contains(error_of([] {
                         resize_and_center_crop(Tensor::zeros({3, 2, 2}), -4, 4);
                       }),
                       "cannot crop"));
}

// Sizes from the official functions (wan/utils/utils.py best_output_size with dw = dh = 32;
// the lat_h / lat_w lines of wan/image2video.py) run on these inputs by
// tools/fixtures/media_reference.py. Note 832x480 -> 832x464 for I2V: the official rounding.
TEST(ImageTest, WanVideoSizesMatchTheOfficialFormulas) {
  struct Case {
    int w, h;
    int64_t area;
    int ow, oh;
  };
  for (const Case& c :
       {Case{1280, 704, 704 * 1280, 1280, 704}, Case{1920, 1080, 704 * 1280, 1248, 704},
        Case{1080, 1920, 704 * 1280, 704, 1248}, Case{1024, 768, 704 * 1280, 1088, 800},
        Case{640, 480, 704 * 1280, 1088, 800}, Case{3000, 1000, 704 * 1280, 1632, 544},
        Case{333, 777, 704 * 1280, 608, 1440}, Case{1000, 1000, 480 * 832, 640, 608}}) {
    const ImageSize s = wan_ti2v_video_size(c.w, c.h, c.area);
    EXPECT_EQ(s.width, c.ow) << "ti2v " << c.w << "x" << c.h;
    EXPECT_EQ(s.height, c.oh) << "ti2v " << c.w << "x" << c.h;
  }
  for (const Case& c :
       {Case{1920, 1080, 720 * 1280, 1280, 720}, Case{1080, 1920, 720 * 1280, 720, 1280},
        Case{1024, 768, 480 * 832, 720, 544}, Case{832, 480, 480 * 832, 832, 464},
        Case{333, 777, 720 * 1280, 624, 1456}, Case{1000, 1000, 480 * 832, 624, 624},
        Case{4000, 3000, 720 * 1280, 1104, 816}}) {
    const ImageSize s = wan_i2v_video_size(c.w, c.h, c.area);
    EXPECT_EQ(s.width, c.ow) << "i2v " << c.w << "x" << c.h;
    EXPECT_EQ(s.height, c.oh) << "i2v " << c.w << "x" << c.h;
  }
  EXPECT_TRUE(contains(error_of([] { wan_ti2v_video_size(100000, 10, 1280 * 704); }),
                       "too narrow or too wide"));
  EXPECT_TRUE(contains(error_of([] { wan_i2v_video_size(10, 100000, 1280 * 720); }),
                       "too narrow or too wide"));
  EXPECT_TRUE(contains(error_of([] { wan_i2v_video_size(0, 10, 1280 * 720); }), "positive"));
}

}  // namespace
}  // namespace fisdit
