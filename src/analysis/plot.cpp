#include "analysis/plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include "fisdit/error.h"

namespace fisdit::analysis {

namespace {

struct Rgb {
  double r, g, b;
};

// A perceptually ordered dark-blue -> teal -> yellow ramp (control points, linear in between).
Rgb colormap(double v) {
  static const Rgb stops[] = {{0.267, 0.005, 0.329},
                              {0.229, 0.322, 0.546},
                              {0.128, 0.567, 0.551},
                              {0.369, 0.789, 0.383},
                              {0.993, 0.906, 0.144}};
  constexpr int n = sizeof stops / sizeof stops[0];
  if (!std::isfinite(v)) return {0.85, 0.85, 0.85};
  v = std::clamp(v, 0.0, 1.0) * (n - 1);
  const int i = std::min(static_cast<int>(v), n - 2);
  const double t = v - i;
  return {stops[i].r + t * (stops[i + 1].r - stops[i].r),
          stops[i].g + t * (stops[i + 1].g - stops[i].g),
          stops[i].b + t * (stops[i + 1].b - stops[i].b)};
}

const Rgb kPalette[] = {{0.12, 0.47, 0.71}, {0.84, 0.15, 0.16}, {0.17, 0.63, 0.17},
                        {1.00, 0.50, 0.05}, {0.58, 0.40, 0.74}, {0.55, 0.34, 0.29},
                        {0.89, 0.47, 0.76}, {0.50, 0.50, 0.50}};

using Surface = std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)>;
using Context = std::unique_ptr<cairo_t, decltype(&cairo_destroy)>;

struct Canvas {
  Surface surface;
  Context cr;
  Canvas(int w, int h)
      : surface(cairo_image_surface_create(CAIRO_FORMAT_RGB24, w, h), cairo_surface_destroy),
        cr(cairo_create(surface.get()), cairo_destroy) {
    cairo_set_source_rgb(cr.get(), 1, 1, 1);
    cairo_paint(cr.get());
    cairo_select_font_face(cr.get(), "sans", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  }
  cairo_t* c() const { return cr.get(); }
  void write(const std::string& path) const {
    cairo_surface_flush(surface.get());
    const cairo_status_t st = cairo_surface_write_to_png(surface.get(), path.c_str());
    if (st != CAIRO_STATUS_SUCCESS)
      throw Error("cannot write figure " + path + ": " + cairo_status_to_string(st));
  }
};

// Text anchored at (x, y): ax/ay 0 = left/top, 0.5 = centre, 1 = right/bottom of the text.
void text(cairo_t* cr, const std::string& s, double x, double y, double size, double ax = 0.5,
          double ay = 0.5, double angle = 0, bool bold = false) {
  cairo_save(cr);
  cairo_select_font_face(cr, "sans", CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  cairo_translate(cr, x, y);
  cairo_rotate(cr, angle);
  cairo_move_to(cr, -e.x_bearing - ax * e.width, -e.y_bearing - ay * e.height);
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_show_text(cr, s.c_str());
  cairo_restore(cr);
}

// "Nice" tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten.
std::vector<double> ticks(double lo, double hi, int target, bool integer) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  double step = std::pow(10.0, std::floor(std::log10(span / target)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span / (step * m) <= target) {
      step *= m;
      break;
    }
  if (integer) step = std::max(1.0, std::round(step));
  std::vector<double> out;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step)
    out.push_back(std::abs(v) < step * 1e-9 ? 0.0 : v);
  return out;
}

std::string format_value(double v) {
  char buf[32];
  const double a = std::abs(v);
  if (a != 0 && (a < 1e-3 || a >= 1e5))
    std::snprintf(buf, sizeof buf, "%.1e", v);
  else
    std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

void frame_box(cairo_t* cr, double x0, double y0, double w, double h) {
  cairo_set_source_rgb(cr, 0, 0, 0);
  cairo_set_line_width(cr, 1.2);
  cairo_rectangle(cr, x0, y0, w, h);
  cairo_stroke(cr);
}

}  // namespace

bool figures_available() { return true; }

void write_heatmap_png(const std::string& path, const Heatmap& map, int width, int height) {
  const size_t rows = map.values.size(), cols = rows ? map.values[0].size() : 0;
  if (rows == 0 || cols == 0) throw Error("figure " + path + ": the heat map has no values");
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& r : map.values) {
    if (r.size() != cols) throw Error("figure " + path + ": heat map rows differ in length");
    for (double v : r)
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi <= lo) hi = lo + 1;

  Canvas cv(width, height);
  cairo_t* cr = cv.c();
  const double left = 80, right = 150, top = 50, bottom = 70;
  const double pw = width - left - right, ph = height - top - bottom;
  const double cw = pw / static_cast<double>(cols), ch = ph / static_cast<double>(rows);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      const Rgb col = colormap((map.values[r][c] - lo) / (hi - lo));
      cairo_set_source_rgb(cr, col.r, col.g, col.b);
      cairo_rectangle(cr, left + c * cw, top + ph - (r + 1) * ch, cw + 0.5, ch + 0.5);
      cairo_fill(cr);
    }
  frame_box(cr, left, top, pw, ph);
  // Axis ticks at cell centres, thinned to at most ~12 labels per axis.
  const auto axis = [&](size_t n, int first, bool horizontal) {
    const size_t every = std::max<size_t>(1, (n + 11) / 12);
    for (size_t i = 0; i < n; i += every) {
      const std::string label = std::to_string(first + static_cast<int>(i));
      cairo_set_source_rgb(cr, 0, 0, 0);
      if (horizontal) {
        const double x = left + (i + 0.5) * cw;
        cairo_move_to(cr, x, top + ph);
        cairo_line_to(cr, x, top + ph + 5);
        cairo_stroke(cr);
        text(cr, label, x, top + ph + 8, 13, 0.5, 0);
      } else {
        const double y = top + ph - (i + 0.5) * ch;
        cairo_move_to(cr, left - 5, y);
        cairo_line_to(cr, left, y);
        cairo_stroke(cr);
        text(cr, label, left - 8, y, 13, 1, 0.5);
      }
    }
  };
  axis(cols, map.x_first, true);
  axis(rows, map.y_first, false);
  text(cr, map.x_label, left + pw / 2, height - 18, 15, 0.5, 1);
  text(cr, map.y_label, 22, top + ph / 2, 15, 0.5, 0.5, -M_PI / 2);
  text(cr, map.title, width / 2.0, 16, 17, 0.5, 0, 0, true);

  // Colour bar with its own ticks and label.
  const double bx = left + pw + 25, bw = 22;
  const int steps = 200;
  for (int i = 0; i < steps; ++i) {
    const Rgb col = colormap((i + 0.5) / steps);
    cairo_set_source_rgb(cr, col.r, col.g, col.b);
    cairo_rectangle(cr, bx, top + ph - (i + 1) * ph / steps, bw, ph / steps + 0.5);
    cairo_fill(cr);
  }
  frame_box(cr, bx, top, bw, ph);
  for (double v : ticks(lo, hi, 6, false)) {
    const double y = top + ph - (v - lo) / (hi - lo) * ph;
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_move_to(cr, bx + bw, y);
    cairo_line_to(cr, bx + bw + 5, y);
    cairo_stroke(cr);
    text(cr, format_value(v), bx + bw + 8, y, 12, 0, 0.5);
  }
  text(cr, map.colorbar_label, width - 16, top + ph / 2, 15, 0.5, 0.5, -M_PI / 2);
  cv.write(path);
}

void write_line_plot_png(const std::string& path, const LinePlot& plot, int width, int height) {
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const Series& s : plot.series) {
    if (s.x.size() != s.y.size())
      throw Error("figure " + path + ": series '" + s.label + "' has x and y of different length");
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i]) && std::isfinite(s.x[i])) {
        xlo = std::min(xlo, s.x[i]), xhi = std::max(xhi, s.x[i]);
        ylo = std::min(ylo, s.y[i]), yhi = std::max(yhi, s.y[i]);
      }
  }
  if (!std::isfinite(xlo)) throw Error("figure " + path + ": the plot has no finite points");
  ylo = std::min(ylo, 0.0);  // relative quantities: start the axis at 0
  if (yhi <= ylo) yhi = ylo + 1;
  if (xhi <= xlo) xhi = xlo + 1;
  yhi += 0.05 * (yhi - ylo);

  Canvas cv(width, height);
  cairo_t* cr = cv.c();
  const double left = 90, right = 30, top = 50, bottom = 70;
  const double pw = width - left - right, ph = height - top - bottom;
  const auto px = [&](double x) { return left + (x - xlo) / (xhi - xlo) * pw; };
  const auto py = [&](double y) { return top + ph - (y - ylo) / (yhi - ylo) * ph; };

  // Grid and ticks.
  cairo_set_line_width(cr, 1);
  for (double v : ticks(xlo, xhi, 10, plot.integer_x)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, px(v), top);
    cairo_line_to(cr, px(v), top + ph);
    cairo_stroke(cr);
    text(cr, format_value(v), px(v), top + ph + 8, 13, 0.5, 0);
  }
  for (double v : ticks(ylo, yhi, 8, false)) {
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, left, py(v));
    cairo_line_to(cr, left + pw, py(v));
    cairo_stroke(cr);
    text(cr, format_value(v), left - 8, py(v), 13, 1, 0.5);
  }
  frame_box(cr, left, top, pw, ph);

  const auto marker = [&](Marker m, double x, double y) {
    if (m == Marker::None) return;
    cairo_new_sub_path(cr);
    cairo_arc(cr, x, y, 4.5, 0, 2 * M_PI);
    if (m == Marker::Filled) {
      cairo_fill(cr);
    } else {
      cairo_save(cr);
      cairo_set_source_rgb(cr, 1, 1, 1);
      cairo_fill_preserve(cr);
      cairo_restore(cr);
      cairo_set_line_width(cr, 1.8);
      cairo_stroke(cr);
    }
  };
  for (size_t k = 0; k < plot.series.size(); ++k) {
    const Series& s = plot.series[k];
    const Rgb col = kPalette[k % (sizeof kPalette / sizeof kPalette[0])];
    cairo_set_source_rgb(cr, col.r, col.g, col.b);
    if (s.line) {
      cairo_set_line_width(cr, 2);
      bool open = false;
      for (size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.y[i])) {
          open = false;
          continue;
        }
        if (open)
          cairo_line_to(cr, px(s.x[i]), py(s.y[i]));
        else
          cairo_move_to(cr, px(s.x[i]), py(s.y[i]));
        open = true;
      }
      cairo_stroke(cr);
    }
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i])) marker(s.marker, px(s.x[i]), py(s.y[i]));
  }

  // Legend, top right inside the plot.
  if (!plot.series.empty()) {
    cairo_set_font_size(cr, 13);
    double tw = 0;
    for (const Series& s : plot.series) {
      cairo_text_extents_t e;
      cairo_text_extents(cr, s.label.c_str(), &e);
      tw = std::max(tw, e.width);
    }
    const double lh = 20, lw = tw + 56, lx = left + pw - lw - 10, ly = top + 10;
    cairo_set_source_rgba(cr, 1, 1, 1, 0.9);
    cairo_rectangle(cr, lx, ly, lw, lh * plot.series.size() + 8);
    cairo_fill(cr);
    frame_box(cr, lx, ly, lw, lh * plot.series.size() + 8);
    for (size_t k = 0; k < plot.series.size(); ++k) {
      const Series& s = plot.series[k];
      const Rgb col = kPalette[k % (sizeof kPalette / sizeof kPalette[0])];
      const double y = ly + 4 + lh * (k + 0.5);
      cairo_set_source_rgb(cr, col.r, col.g, col.b);
      if (s.line) {
        cairo_set_line_width(cr, 2);
        cairo_move_to(cr, lx + 8, y);
        cairo_line_to(cr, lx + 38, y);
        cairo_stroke(cr);
      }
      marker(s.marker, lx + 23, y);
      text(cr, s.label, lx + 46, y, 13, 0, 0.5);
    }
  }
  text(cr, plot.x_label, left + pw / 2, height - 18, 15, 0.5, 1);
  text(cr, plot.y_label, 22, top + ph / 2, 15, 0.5, 0.5, -M_PI / 2);
  text(cr, plot.title, width / 2.0, 16, 17, 0.5, 0, 0, true);
  cv.write(path);
}

}  // namespace fisdit::analysis
