#pragma once
// PNG figures of the analysis through cairo: a heat map with axis ticks and a colour bar, and
// line / marker plots with a legend. Text uses cairo's toy font API ("sans").
#include <string>
#include <vector>

namespace fisdit::analysis {

struct Heatmap {
  std::vector<std::vector<double>> values;  // [rows][cols]; row 0 is drawn at the bottom
  std::string title, x_label, y_label, colorbar_label;
  int x_first = 0, y_first = 0;  // the index the first column / row is labelled with
};

enum class Marker { None, Filled, Hollow };

struct Series {
  std::string label;
  std::vector<double> x, y;  // points with a non-finite y are left out
  bool line = true;
  Marker marker = Marker::None;
};

struct LinePlot {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool integer_x = false;  // ticks at whole numbers only
};

// False when this build has no cairo (-DFISDIT_FIGURES=OFF): the writers below then throw.
bool figures_available();

// Throw fisdit::Error naming the path when it cannot be written or there is nothing to draw.
void write_heatmap_png(const std::string& path, const Heatmap& map, int width = 900,
                       int height = 700);
void write_line_plot_png(const std::string& path, const LinePlot& plot, int width = 900,
                         int height = 560);

}  // namespace fisdit::analysis
