// quality.md and the figures of a `fisdit quality` report (pipeline/quality.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

#include "analysis/figures.h"
#include "analysis/plot.h"
#include "fisdit/error.h"
#include "pipeline/quality.h"

namespace fisdit::pipeline {
namespace {

// A number of the JSON as text: "inf" stays "inf", null (not measured) is "-".
std::string cell(const nlohmann::json& v, const char* format) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_number()) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v.get<double>());
  return buf;
}

double value(const nlohmann::json& v) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string() && v.get<std::string>() == "inf")
    return std::numeric_limits<double>::infinity();
  return std::numeric_limits<double>::quiet_NaN();
}

// Markdown table cells must not hold a bare '|'.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

std::string fis_short(const nlohmann::json& f) {
  if (f.at("stride").get<int>() <= 1) return "off";
  const int last = f.at("dense_last_steps").get<int>();
  return "s=" + std::to_string(f.at("stride").get<int>()) + ", head " +
         std::to_string(f.at("head").get<int>()) + ", tail " +
         std::to_string(f.at("tail").get<int>()) + ", " +
         (last == 0
              ? std::string("no dense step")
              : "last " + std::to_string(last) + (last == 1 ? " step" : " steps") + " dense") +
         ", " + (f.at("interleave").get<bool>() ? "interleaved" : "fixed offset");
}

bool has_figure(const std::vector<std::string>& figures, const std::string& name) {
  return std::any_of(figures.begin(), figures.end(), [&](const std::string& p) {
    return std::filesystem::path(p).filename() == name;
  });
}

}  // namespace

std::string quality_markdown(const QualityReport& report, const std::vector<std::string>& figures) {
  const nlohmann::json& q = report.quality;
  const nlohmann::json &model = q.at("model"), &s = q.at("settings");
  const nlohmann::json& variants = q.at("variants");
  const std::vector<std::string> prompts = s.at("prompts").get<std::vector<std::string>>();
  const std::vector<uint64_t> seeds = s.at("seeds").get<std::vector<uint64_t>>();
  std::ostringstream md;
  const std::string name = model.value("name", "");
  md << "# FIS quality: " << (name.empty() ? model.at("path").get<std::string>() : name) << "\n\n";
  md << "Fidelity of FIS settings and of the paper's ablations (Table 2: interleaving; Table 3: "
        "block and step protection) against the dense run from the same noise. Written by "
        "`fisdit quality` on "
     << q.at("date").get<std::string>() << "; reproduce with:\n\n```sh\n"
     << q.at("command").get<std::string>() << "\n```\n\n";

  md << "## Settings\n\n| setting | value |\n| --- | --- |\n";
  const nlohmann::json& latent = s.at("latent");
  md << "| model | `" << model.at("path").get<std::string>() << "` ("
     << model.at("task").get<std::string>() << ", " << model.at("num_blocks") << " blocks, dim "
     << model.at("dim") << (model.at("two_experts").get<bool>() ? ", two experts" : "") << ") |\n";
  md << "| video | " << s.at("width") << "x" << s.at("height") << ", " << s.at("frames")
     << " frames; latent " << latent.at(0) << "x" << latent.at(1) << "x" << latent.at(2) << "x"
     << latent.at(3) << " (" << s.at("latent_frames") << " latent frames, " << s.at("dit_tokens")
     << " DiT tokens) |\n";
  md << "| sampling | " << s.at("steps") << " steps, " << s.at("solver").get<std::string>()
     << ", shift " << cell(s.at("shift"), "%g") << ", guidance " << cell(s.at("guidance"), "%g")
     << " |\n";
  md << "| prompts x seeds | " << prompts.size() << " x " << seeds.size() << " (seeds";
  for (size_t i = 0; i < seeds.size(); ++i) md << (i ? ", " : " ") << seeds[i];
  md << ") |\n";
  md << "| device | " << s.at("device").get<std::string>() << ", " << s.at("threads")
     << " CPU threads |\n\n";

  md << "## Variants\n\n"
        "| variant | FIS | latent rel. L2 | PSNR (dB) | worst PSNR (dB) | SSIM | DiT FLOPs vs "
        "dense | denoise (s) | speedup |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const nlohmann::json& v : variants) {
    const nlohmann::json& ps = v.at("psnr_db");
    const std::string worst = ps.at("min").is_number()
                                  ? cell(ps.at("min"), "%.2f") + " (#" +
                                        std::to_string(ps.at("min_prompt_index").get<int>() + 1) +
                                        ")"
                                  : cell(ps.at("min"), "%.2f");
    md << "| " << v.at("name").get<std::string>() << " | " << fis_short(v.at("fis")) << " | "
       << cell(v.at("latent_rel_l2").at("mean"), "%.4g") << " | " << cell(ps.at("mean"), "%.2f")
       << " | " << worst << " | " << cell(v.at("ssim").at("mean"), "%.4f") << " | "
       << cell(v.at("flops").at("ratio"), "%.3f") << " | "
       << cell(v.at("denoise_seconds").at("median"), "%.3f") << " | "
       << (v.at("speedup_vs_dense").is_number() ? cell(v.at("speedup_vs_dense"), "%.2f") + "x"
                                                : std::string("-"))
       << " |\n";
  }
  md << "\nMeans over the " << prompts.size() * seeds.size()
     << " prompt x seed runs. Latent rel. L2: ||x - x_dense|| / ||x_dense|| of the final "
        "latents. PSNR and SSIM (Gaussian 11x11, sigma 1.5) of the decoded frames on the [0, 1] "
        "scale; worst PSNR: the lowest run (#prompt). FLOPs: analytic DiT FLOPs of the plan / "
        "dense. Denoise: measured seconds of the sampling loop (no text encoder, no VAE), "
        "median over the runs; speedup: the dense row's median / the variant's. `inf`: identical "
        "to the reference.\n";
  bool any_ablation = false;
  for (const nlohmann::json& v : variants)
    if (!v.at("ablation").get<std::string>().empty()) {
      if (!any_ablation) md << "\nAblations (what each takes away from its preset):\n\n";
      any_ablation = true;
      md << "- " << v.at("name").get<std::string>() << ": " << v.at("ablation").get<std::string>()
         << "\n";
    }

  // PSNR per prompt (mean over seeds) and variant.
  std::map<std::pair<int, std::string>, std::vector<double>> per;
  for (const nlohmann::json& r : q.at("runs"))
    per[{r.at("prompt_index").get<int>(), r.at("variant").get<std::string>()}].push_back(
        value(r.at("psnr_db")));
  md << "\n## PSNR (dB) per prompt\n\n| # | prompt |";
  for (const nlohmann::json& v : variants) md << " " << v.at("name").get<std::string>() << " |";
  md << "\n| --- | --- |";
  for (size_t i = 0; i < variants.size(); ++i) md << " --- |";
  md << "\n";
  for (size_t p = 0; p < prompts.size(); ++p) {
    md << "| " << p + 1 << " | " << escape(prompts[p]) << " |";
    for (const nlohmann::json& v : variants) {
      const std::vector<double>& xs = per[{static_cast<int>(p), v.at("name").get<std::string>()}];
      double sum = 0;
      for (double x : xs) sum += x;
      const double m = xs.empty() ? std::numeric_limits<double>::quiet_NaN()
                                  : sum / static_cast<double>(xs.size());
      md << " " << (std::isinf(m) ? std::string("inf") : cell(m, "%.2f")) << " |";
    }
    md << "\n";
  }

  md << "\n## Redundancy of the dense runs\n\nCV of R_f (Eq. 4-5: std_f / mean_f of the relative "
        "change between adjacent latent frames of each block's output), averaged over the "
        "reference runs; data in `analysis.json` (`fisdit analyze`'s schema).\n\n";
  if (has_figure(figures, "cv_heatmap.png")) md << "![CV heat map](cv_heatmap.png)\n\n";
  const nlohmann::json& cv = q.at("cv");
  md << "| block |";
  for (size_t k = 0; k < cv.size(); ++k) md << " step " << k + 1 << " |";
  md << "\n| --- |";
  for (size_t k = 0; k < cv.size(); ++k) md << " --- |";
  md << "\n";
  const size_t blocks = cv.empty() ? 0 : cv.at(0).size();
  for (size_t l = 0; l < blocks; ++l) {
    md << "| " << l << " |";
    for (size_t k = 0; k < cv.size(); ++k) md << " " << cell(cv.at(k).at(l), "%.3f") << " |";
    md << "\n";
  }
  if (has_figure(figures, "rel_change.png")) md << "\n![R_f per frame pair](rel_change.png)\n";
  if (has_figure(figures, "frame_psnr.png"))
    md << "\n## Per-frame PSNR\n\nPSNR of each video frame against the dense run, from the mean "
          "squared error over the prompt x seed runs.\n\n![per-frame PSNR](frame_psnr.png)\n";
  return md.str();
}

std::vector<std::string> write_quality_figures(const QualityReport& report,
                                               const std::string& dir) {
  std::vector<std::string> written = analysis::write_analysis_figures(report.analysis, dir);
  analysis::LinePlot plot;
  plot.title = "Per-frame PSNR vs dense (mean squared error over prompts and seeds)";
  plot.x_label = "video frame";
  plot.y_label = "PSNR (dB)";
  plot.integer_x = true;
  bool any = false;
  for (const nlohmann::json& v : report.quality.at("variants")) {
    analysis::Series series{v.at("name").get<std::string>(), {}, {}, true, analysis::Marker::None};
    const nlohmann::json& frames = v.at("frame_psnr_db");
    for (size_t f = 0; f < frames.size(); ++f) {
      const double y = value(frames[f]);
      series.x.push_back(static_cast<double>(f));
      series.y.push_back(y);
      any = any || std::isfinite(y);
    }
    if (std::any_of(series.y.begin(), series.y.end(), [](double y) { return std::isfinite(y); }))
      plot.series.push_back(series);
  }
  if (any) {
    written.push_back((std::filesystem::path(dir) / "frame_psnr.png").string());
    analysis::write_line_plot_png(written.back(), plot);
  }
  return written;
}

}  // namespace fisdit::pipeline
