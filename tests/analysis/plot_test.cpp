// The analysis figures are real PNG files of the requested size, read back with libpng.
#include "analysis/plot.h"

#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "fisdit/error.h"

namespace fisdit::analysis {
namespace {

namespace fs = std::filesystem;

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

Image read_png(const std::string& path) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str()))
    throw Error(path + ": not a readable PNG: " + img.message);
  img.format = PNG_FORMAT_RGB;
  Image out{static_cast<int>(img.width), static_cast<int>(img.height),
            std::vector<uint8_t>(PNG_IMAGE_SIZE(img))};
  if (!png_image_finish_read(&img, nullptr, out.rgb.data(), 0, nullptr))
    throw Error(path + ": PNG decode failed: " + img.message);
  return out;
}

std::string temp(const std::string& name) {
  return (fs::temp_directory_path() / ("fisdit_plot_" + std::to_string(::getpid()) + name))
      .string();
}

TEST(Plot, HeatmapIsAValidPngWithColoursAndText) {
  Heatmap map;
  map.values = {{0.1, 0.2, 0.3}, {0.4, 0.5, 0.6}, {0.7, 0.8, NAN}};
  map.title = "t";
  map.x_label = "step";
  map.y_label = "block";
  map.colorbar_label = "CV";
  const std::string p = temp("heat.png");
  write_heatmap_png(p, map, 640, 480);
  const Image img = read_png(p);
  fs::remove(p);
  EXPECT_EQ(img.width, 640);
  EXPECT_EQ(img.height, 480);
  // Distinct colours: the cells, the bar, the black frame and anti-aliased text.
  std::set<uint32_t> colours;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3)
    colours.insert(img.rgb[i] << 16 | img.rgb[i + 1] << 8 | img.rgb[i + 2]);
  EXPECT_GT(colours.size(), 50u);
  EXPECT_TRUE(colours.count(0xffffff));  // white background
  // The lowest and highest cells differ: cell (row 0, col 0) is bottom left, (2, 1) top.
  const auto at = [&](int x, int y) {
    const size_t i = (static_cast<size_t>(y) * img.width + x) * 3;
    return img.rgb[i] << 16 | img.rgb[i + 1] << 8 | img.rgb[i + 2];
  };
  EXPECT_NE(at(80 + 20, 480 - 70 - 20), at(80 + 200, 50 + 20));
}

TEST(Plot, LinePlotIsAValidPng) {
  LinePlot plot;
  plot.title = "error";
  plot.x_label = "frame";
  plot.y_label = "e";
  plot.series = {{"a", {0, 1, 2, 3}, {0.1, 0.3, 0.2, 0.4}, true, Marker::None},
                 {"b", {0, 2}, {0.2, NAN}, false, Marker::Filled},
                 {"c", {1, 3}, {0.5, 0.1}, false, Marker::Hollow}};
  const std::string p = temp("line.png");
  write_line_plot_png(p, plot, 500, 300);
  const Image img = read_png(p);
  fs::remove(p);
  EXPECT_EQ(img.width, 500);
  EXPECT_EQ(img.height, 300);
  size_t dark = 0;
  for (size_t i = 0; i + 2 < img.rgb.size(); i += 3) dark += img.rgb[i] + img.rgb[i + 1] < 200;
  EXPECT_GT(dark, 500u);  // frame, ticks, text, lines
}

TEST(Plot, NothingToDrawOrUnwritablePathIsAnError) {
  EXPECT_THROW(write_heatmap_png(temp("e.png"), Heatmap{}), Error);
  LinePlot empty;
  EXPECT_THROW(write_line_plot_png(temp("e.png"), empty), Error);
  Heatmap map;
  map.values = {{1.0}};
  EXPECT_THROW(write_heatmap_png("/nonexistent-dir/x.png", map), Error);
}

}  // namespace
}  // namespace fisdit::analysis
