// fisdit quality: FIS settings and their ablations against dense on held-out prompts, as a
// report (quality.json, quality.md, analysis.json and figures).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include "analysis/plot.h"
#include "backend/backend.h"
#include "cli.h"
#include "fisdit/error.h"
#include "pipeline/model_defaults.h"
#include "pipeline/quality.h"
#include "sched/flow_solvers.h"

namespace fisdit::cli {
namespace {

std::vector<uint64_t> parse_seeds(const std::string& text) {
  static const std::regex digits(R"(\d{1,19})");
  std::vector<uint64_t> seeds;
  for (const std::string& item : split_commas(text)) {
    if (!std::regex_match(item, digits))
      throw Error("--seeds: '" + item + "' is not a non-negative integer (e.g. --seeds 0,1)");
    seeds.push_back(std::stoull(item));
  }
  if (seeds.empty()) throw Error("--seeds: give at least one seed (e.g. --seeds 0,1)");
  return seeds;
}

std::vector<std::string> read_prompts(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("--prompts " + path + ": cannot open the file");
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);) {
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
  }
  if (prompts.empty()) throw Error("--prompts " + path + ": no prompt in the file");
  return prompts;
}

// A shell word: as is when it is plain, else in single quotes.
std::string shell_word(const std::string& s) {
  static const std::regex plain(R"([A-Za-z0-9_./,:=+@%-]+)");
  if (std::regex_match(s, plain)) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

void register_quality(CLI::App& app) {
  struct Args {
    std::string model, prompts, seeds = "0", output_dir, device, negative;
    std::string variants;
    std::optional<std::string> size, solver;
    std::optional<int> frames, steps;
    std::optional<double> shift;
    std::optional<float> guidance;
    bool no_figures = false, quiet = false;
  };
  auto args = std::make_shared<Args>();
  args->device = default_device();
  for (const std::string& v : pipeline::default_quality_variants())
    args->variants += (args->variants.empty() ? "" : ",") + v;
  CLI::App* cmd = app.add_subcommand(
      "quality",
      "FIS settings and ablations vs dense on held-out prompts: rel. L2, PSNR, SSIM, FLOPs, "
      "time, CV heat map (quality.md + quality.json)");
  cmd->add_option(
      "--model", args->model,
      "release directory (fisdit.json there gives the defaults and the prompts); default: "
      "the bundled model");
  cmd->add_option("--prompts", args->prompts,
                  "text file, one prompt per non-empty line (default: held_out_prompts of the "
                  "model's fisdit.json)");
  cmd->add_option("--seeds", args->seeds, "comma-separated noise seeds")->capture_default_str();
  cmd->add_option("--variants", args->variants,
                  "comma-separated: dense, balanced, fast, balanced/fast with -no-interleave, "
                  "-no-block-protection, -no-step-protection or -no-protection, and FIS preset "
                  "JSON files (fisdit calibrate --output)")
      ->capture_default_str();
  cmd->add_option("--output-dir", args->output_dir,
                  "directory for quality.md, quality.json, analysis.json and the figures (created)")
      ->required();
  cmd->add_option("--device", args->device, "cuda or cpu")->capture_default_str();
  cmd->add_option("--size", args->size, "WxH (default: fisdit.json's, else 1280x720)");
  cmd->add_option("--frames", args->frames, "video frames, 4k+1 (default: fisdit.json's, else 81)");
  cmd->add_option("--steps", args->steps, "sampling steps (default: fisdit.json's, else 4)");
  cmd->add_option("--shift", args->shift, "flow shift (default: fisdit.json's, else 5)");
  cmd->add_option("--solver", args->solver,
                  "euler, unipc or dpm++ (default: fisdit.json's, else euler)");
  cmd->add_option("--guidance", args->guidance, "CFG scale (default: fisdit.json's, else 1)");
  cmd->add_option("--negative", args->negative, "negative prompt (used when guidance != 1)");
  cmd->add_flag("--no-figures", args->no_figures, "no PNG figures (the JSON and Markdown only)");
  cmd->add_flag("--quiet", args->quiet, "no progress lines");
  cmd->callback([args] {
    pipeline::QualityOptions q;
    // Cheap checks first: names, seeds, prompts and the output directory before any weight.
    q.variants = split_commas(args->variants);
    for (const std::string& name : q.variants) pipeline::quality_variant(name);
    q.seeds = parse_seeds(args->seeds);
    const std::string model = model_or_bundled(args->model);
    const pipeline::ModelDefaults d = pipeline::read_model_defaults(model);
    q.model_name = d.name;
    if (!args->prompts.empty()) {
      q.prompts = read_prompts(args->prompts);
    } else {
      q.prompts = d.held_out_prompts;
      if (q.prompts.empty())
        throw Error(
            "no prompts: give --prompts FILE (one prompt per line); " + model +
            (d.path.empty() ? " has no fisdit.json" : "'s fisdit.json has no held_out_prompts"));
    }
    pipeline::GenerateOptions& o = q.base;
    o.model = model;
    o.device = args->device;
    o.negative = args->negative;
    const std::string size = args->size.value_or(d.size.value_or("1280x720"));
    try {
      parse_size(size, o.width, o.height);
    } catch (const Error& e) {
      if (args->size) throw;
      throw Error(d.path + ": \"size\": " + e.what());
    }
    o.frames = args->frames.value_or(d.frames.value_or(81));
    o.steps = args->steps.value_or(d.steps.value_or(4));
    o.shift = args->shift.value_or(d.shift.value_or(5.0));
    const std::string solver = args->solver.value_or(d.solver.value_or("euler"));
    o.solver = sched::parse_solver(solver);
    o.guidance = args->guidance.value_or(d.guidance.value_or(1.0f));
    if (!std::isfinite(o.guidance)) throw Error("--guidance must be a finite number");
    if (!(o.shift > 0)) throw Error("--shift must be positive");

    const std::filesystem::path dir(args->output_dir);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (!std::filesystem::is_directory(dir, ec))
      throw Error("--output-dir " + args->output_dir + ": cannot create the directory");
    {
      const std::filesystem::path probe = dir / ".fisdit-quality-write-test";
      std::ofstream test(probe);
      test << "x";
      const bool ok = test.good();
      test.close();
      std::filesystem::remove(probe, ec);
      if (!ok) throw Error("--output-dir " + args->output_dir + ": cannot write in the directory");
    }

    std::string command = "fisdit quality --model " + shell_word(model);
    if (!args->prompts.empty()) command += " --prompts " + shell_word(args->prompts);
    std::string seeds;
    for (uint64_t s : q.seeds) seeds += (seeds.empty() ? "" : ",") + std::to_string(s);
    std::string variants;
    for (const std::string& v : q.variants) variants += (variants.empty() ? "" : ",") + v;
    command += " --seeds " + seeds + " --variants " + shell_word(variants) + " --size " + size +
               " --frames " + std::to_string(o.frames) + " --steps " + std::to_string(o.steps) +
               " --shift " + number_text(o.shift) + " --solver " + solver + " --guidance " +
               number_text(o.guidance);
    if (!o.negative.empty()) command += " --negative " + shell_word(o.negative);
    command +=
        " --device " + shell_word(o.device) + " --output-dir " + shell_word(args->output_dir);
    if (args->no_figures) command += " --no-figures";
    q.command = command;
    q.progress = !args->quiet;
    if (!args->quiet)
      status("quality: " + std::to_string(q.prompts.size()) + " prompts x " +
             std::to_string(q.seeds.size()) + " seeds, variants " + variants + "; " + size + ", " +
             std::to_string(o.frames) + " frames, " + std::to_string(o.steps) + " steps" +
             (d.path.empty() ? "" : " (defaults from " + d.path + ")"));

    const pipeline::QualityReport report = pipeline::run_quality(q);

    const auto write = [&](const std::string& name, const std::string& text) {
      const std::string path = (dir / name).string();
      std::ofstream out(path);
      out << text;
      if (!out) throw Error("--output-dir: cannot write " + path);
      status("wrote " + path);
    };
    write("quality.json", report.quality.dump(1) + "\n");
    write("analysis.json", report.analysis.dump(1) + "\n");
    std::vector<std::string> figures;
    if (!args->no_figures && !analysis::figures_available())
      status(
          "no figures: this build has no cairo (-DFISDIT_FIGURES=OFF); analysis.json and "
          "quality.json have the data");
    else if (!args->no_figures)
      for (const std::string& p : pipeline::write_quality_figures(report, dir.string())) {
        figures.push_back(p);
        status("wrote " + p);
      }
    write("quality.md", pipeline::quality_markdown(report, figures));
    for (const nlohmann::json& v : report.quality.at("variants")) {
      if (args->quiet) break;
      const nlohmann::json& ps = v.at("psnr_db").at("mean");
      char psnr[32];
      if (ps.is_number())
        std::snprintf(psnr, sizeof psnr, "%.2f", ps.get<double>());
      else
        std::snprintf(psnr, sizeof psnr, "%s",
                      ps.is_string() ? ps.get<std::string>().c_str() : "-");
      char line[256];
      std::snprintf(line, sizeof line,
                    "%-30s latent rel. L2 %.4g, PSNR %s dB, SSIM %.4f, FLOPs %.3f of dense",
                    v.at("name").get<std::string>().c_str(),
                    v.at("latent_rel_l2").at("mean").get<double>(), psnr,
                    v.at("ssim").at("mean").get<double>(), v.at("flops").at("ratio").get<double>());
      status(line);
    }
  });
}

}  // namespace fisdit::cli
