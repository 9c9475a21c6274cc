#include "analysis/figures.h"

#include <cmath>
#include <filesystem>
#include <limits>

#include "analysis/plot.h"
#include "fisdit/error.h"

namespace fisdit::analysis {

namespace {

double num(const nlohmann::json& v) {
  return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

std::vector<std::string> write_analysis_figures(const nlohmann::json& a, const std::string& dir) {
  std::vector<std::string> written;
  const int blocks = a.at("num_blocks").get<int>(), steps = a.at("steps").get<int>(),
            frames = a.at("frames").get<int>();
  const std::filesystem::path base(dir);

  Heatmap map;
  map.title = "Inter-frame redundancy: CV of R_f (Eq. 4-5)";
  map.x_label = "denoising step";
  map.y_label = "block";
  map.colorbar_label = "CV = std_f(R_f) / mean_f(R_f)";
  map.values.assign(static_cast<size_t>(blocks), std::vector<double>(static_cast<size_t>(steps)));
  for (int k = 0; k < steps; ++k)
    for (int l = 0; l < blocks; ++l)
      map.values[static_cast<size_t>(l)][static_cast<size_t>(k)] = num(a.at("cv").at(k).at(l));
  written.push_back((base / "cv_heatmap.png").string());
  write_heatmap_png(written.back(), map);

  if (frames >= 2) {
    LinePlot plot;
    plot.title = "Adjacent-frame relative change R_f (Eq. 3), mean over steps";
    plot.x_label = "frame f (change from f to f+1)";
    plot.y_label = "R_f";
    plot.integer_x = true;
    const int shown = std::min(blocks, 6);
    for (int i = 0; i < shown; ++i) {
      const int l = shown == 1 ? 0 : i * (blocks - 1) / (shown - 1);
      Series s{"block " + std::to_string(l), {}, {}, true, Marker::Filled};
      for (int f = 0; f + 1 < frames; ++f) {
        double sum = 0;
        for (int k = 0; k < steps; ++k) sum += num(a.at("rel_change").at(k).at(l).at(f));
        s.x.push_back(f);
        s.y.push_back(sum / steps);
      }
      plot.series.push_back(s);
    }
    written.push_back((base / "rel_change.png").string());
    write_line_plot_png(written.back(), plot);
  }

  const nlohmann::json& fis = a.value("fis", nlohmann::json::array());
  for (size_t i = 0; i < fis.size(); ++i) {
    const nlohmann::json& f = fis[i];
    const nlohmann::json& cfg = f.at("config");
    const int last = steps - cfg.at("dense_last_steps").get<int>();
    const int lb = blocks - 1 - cfg.at("tail").get<int>();  // the last sparse block
    if (last < 1 || lb < cfg.at("head").get<int>() || frames < 1) continue;
    LinePlot plot;
    plot.title = "Per-frame error vs dense (Eq. 6): stride " +
                 std::to_string(cfg.at("stride").get<int>()) + ", head " +
                 std::to_string(cfg.at("head").get<int>()) + ", tail " +
                 std::to_string(cfg.at("tail").get<int>()) + ", mean over sparse steps";
    plot.x_label = "latent frame";
    plot.y_label = "||F_sparse - F_dense|| / ||F_dense||";
    plot.integer_x = true;
    Series out{"final block " + std::to_string(blocks - 1) + " output", {}, {}, true, Marker::None};
    Series anchor{"block " + std::to_string(lb) + ": anchor frames", {}, {}, false, Marker::Filled};
    Series interp{
        "block " + std::to_string(lb) + ": interpolated frames", {}, {}, false, Marker::Hollow};
    for (int fr = 0; fr < frames; ++fr) {
      double e_out = 0, e_lb = 0;
      for (int k = 0; k < last; ++k) {
        e_out += num(f.at("error").at(k).at(blocks - 1).at(fr)) / last;
        e_lb += num(f.at("error").at(k).at(lb).at(fr)) / last;
      }
      out.x.push_back(fr);
      out.y.push_back(e_out);
      Series& s = f.at("anchor").at(0).at(lb).at(fr).get<bool>() ? anchor : interp;
      s.x.push_back(fr);
      s.y.push_back(e_lb);
    }
    plot.series = {out, anchor, interp};
    written.push_back((base / ("frame_error_" + std::to_string(i) + ".png")).string());
    write_line_plot_png(written.back(), plot);
  }
  return written;
}

}  // namespace fisdit::analysis
