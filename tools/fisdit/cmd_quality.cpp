// fisdit quality: FIS settings and their ablations against dense on held-out prompts, as a
// report (quality.json, quality.md, analysis.json and figures).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
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

struct QualityArgs {
  std::string prompts, seeds = "0", output_dir, negative, variants, precision = "bf16";
  std::optional<std::string> size;
  std::optional<int> frames;
  ExpertFlags experts;     // --model
  SamplingFlags sampling;  // --steps, --shift, --solver, --guidance
  DeviceFlags device;
  bool no_figures = false, quiet = false;
};

// The output directory, created and checked for writing before any weight is read.
void prepare_output_dir(const std::string& dir_text) {
  const std::filesystem::path dir(dir_text);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!std::filesystem::is_directory(dir, ec))
    throw Error("--output-dir " + dir_text + ": cannot create the directory");
  const std::filesystem::path probe = dir / ".fisdit-quality-write-test";
  std::ofstream test(probe);
  test << "x";
  const bool ok = test.good();
  test.close();
  std::filesystem::remove(probe, ec);
  if (!ok) throw Error("--output-dir " + dir_text + ": cannot write in the directory");
}

// The command line that reruns this report, every setting spelled out (quality.md shows it).
std::string rerun_command(const QualityArgs& a, const pipeline::QualityOptions& q,
                          const std::string& size, const std::string& solver) {
  const pipeline::GenerateOptions& o = q.base;
  std::string command = "fisdit quality --model " + shell_word(o.model);
  if (!a.prompts.empty()) command += " --prompts " + shell_word(a.prompts);
  std::string seeds;
  for (uint64_t s : q.seeds) seeds += (seeds.empty() ? "" : ",") + std::to_string(s);
  command += " --seeds " + seeds + " --variants " + shell_word(join(q.variants, ",")) + " --size " +
             size + " --frames " + std::to_string(o.frames) + " --steps " +
             std::to_string(o.steps) + " --shift " + number_text(o.shift) + " --solver " + solver +
             " --guidance " + number_text(o.guidance);
  if (!o.negative.empty()) command += " --negative " + shell_word(o.negative);
  command += " --device " + shell_word(o.device) + " --output-dir " + shell_word(a.output_dir);
  if (o.gpu_memory_limit > 0) command += " --gpu-memory-limit " + number_text(o.gpu_memory_limit);
  if (a.no_figures) command += " --no-figures";
  return command;
}

// The report's settings from the flags, fisdit.json filling in the ones not given; every check
// that needs no weight.
pipeline::QualityOptions quality_options(const QualityArgs& a) {
  pipeline::QualityOptions q;
  q.variants = split_commas(a.variants);
  const models::Precision precision = parse_precision(a.precision);
  if (precision != models::Precision::Default) {  // every variant in that precision
    const std::string p = models::precision_name(precision);
    for (std::string& name : q.variants)
      if (name == "dense")
        name = p;
      else if (name.rfind("fp8", 0) != 0)
        name = p + "-" + name;
  }
  for (const std::string& name : q.variants) pipeline::quality_variant(name);
  q.seeds = parse_seeds(a.seeds);
  const std::string model = model_or_bundled(a.experts.model);
  const pipeline::ModelDefaults d = pipeline::read_model_defaults(model);
  q.model_name = d.name;
  if (!a.prompts.empty()) {
    q.prompts = read_prompts(a.prompts);
  } else {
    q.prompts = d.held_out_prompts;
    if (q.prompts.empty())
      throw Error(
          "no prompts: give --prompts FILE (one prompt per line); " + model +
          (d.path.empty() ? " has no fisdit.json" : "'s fisdit.json has no held_out_prompts"));
  }
  std::optional<std::string> size = a.size;
  std::optional<int> frames = a.frames;
  SamplingFlags sampling = a.sampling;
  apply_model_defaults(d, size, frames, sampling);
  pipeline::GenerateOptions& o = q.base;
  o.model = model;
  o.device = a.device.device;
  o.gpu_memory_limit = a.device.gpu_memory_limit;
  o.vae_precision = a.device.vae_precision;
  o.negative = a.negative;
  try {
    parse_size(size.value_or(kDefaultSize), o.width, o.height);
  } catch (const Error& e) {
    if (a.size) throw;
    throw Error(d.path + ": \"size\": " + e.what());
  }
  o.frames = frames.value_or(kDefaultFrames);
  set_sampling(o, sampling.resolve());  // no per-expert guidance or boundary flags: unset
  prepare_output_dir(a.output_dir);
  q.command = rerun_command(a, q, size.value_or(kDefaultSize), sched::solver_name(o.solver));
  q.progress = !a.quiet;
  if (!a.quiet)
    status("quality: " + std::to_string(q.prompts.size()) + " prompts x " +
           std::to_string(q.seeds.size()) + " seeds, variants " + join(q.variants, ",") + "; " +
           size.value_or(kDefaultSize) + ", " + std::to_string(o.frames) + " frames, " +
           std::to_string(o.steps) + " steps" +
           (d.path.empty() ? "" : " (defaults from " + d.path + ")"));
  return q;
}

// A line per variant: its fidelity and FLOPs, means over prompts and seeds.
void report_variants(const pipeline::QualityReport& report) {
  for (const nlohmann::json& v : report.quality.at("variants")) {
    const nlohmann::json& ps = v.at("psnr_db").at("mean");
    char psnr[32];
    if (ps.is_number())
      std::snprintf(psnr, sizeof psnr, "%.2f", ps.get<double>());
    else
      std::snprintf(psnr, sizeof psnr, "%s", ps.is_string() ? ps.get<std::string>().c_str() : "-");
    char line[256];
    std::snprintf(
        line, sizeof line, "%-30s latent rel. L2 %.4g, PSNR %s dB, SSIM %.4f, FLOPs %.3f of dense",
        v.at("name").get<std::string>().c_str(), v.at("latent_rel_l2").at("mean").get<double>(),
        psnr, v.at("ssim").at("mean").get<double>(), v.at("flops").at("ratio").get<double>());
    status(line);
  }
}

void run_quality(const QualityArgs& a) {
  const pipeline::QualityOptions q = quality_options(a);
  const pipeline::QualityReport report = pipeline::run_quality(q);
  const std::filesystem::path dir(a.output_dir);
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
  if (!a.no_figures && !analysis::figures_available())
    status(
        "no figures: this build has no cairo (-DFISDIT_FIGURES=OFF); analysis.json and "
        "quality.json have the data");
  else if (!a.no_figures)
    for (const std::string& p : pipeline::write_quality_figures(report, dir.string())) {
      figures.push_back(p);
      status("wrote " + p);
    }
  write("quality.md", pipeline::quality_markdown(report, figures));
  if (!a.quiet) report_variants(report);
}

}  // namespace

void register_quality(CLI::App& app) {
  auto args = std::make_shared<QualityArgs>();
  args->variants = join(pipeline::default_quality_variants(), ",");
  CLI::App* cmd = app.add_subcommand(
      "quality",
      "FIS settings and ablations vs dense on held-out prompts: rel. L2, PSNR, SSIM, FLOPs, "
      "time, CV heat map (quality.md + quality.json)");
  add_expert_flags(cmd, args->experts,
                   {.model_help = "release directory (fisdit.json there gives the defaults and "
                                  "the prompts); default: the bundled model"});
  cmd->add_option("--prompts", args->prompts,
                  "text file, one prompt per non-empty line (default: held_out_prompts of the "
                  "model's fisdit.json)");
  cmd->add_option("--seeds", args->seeds, "comma-separated noise seeds")->capture_default_str();
  cmd->add_option("--variants", args->variants,
                  "comma-separated: dense, balanced, fast, balanced/fast with -no-interleave, "
                  "-no-block-protection, -no-step-protection or -no-protection, and FIS preset "
                  "JSON files (fisdit calibrate --output); each also as fp8-<variant> or "
                  "fp8-gemm-<variant> (--precision fp8 / fp8-gemm; fp8 or fp8-gemm alone: "
                  "dense in that precision). The reference is bf16 dense")
      ->capture_default_str();
  cmd->add_option("--precision", args->precision,
                  "bf16, or fp8 / fp8-gemm: every variant in that precision (as if named "
                  "fp8-<variant>), against the bf16 dense reference")
      ->capture_default_str();
  cmd->add_option("--output-dir", args->output_dir,
                  "directory for quality.md, quality.json, analysis.json and the figures (created)")
      ->required();
  add_device_flags(cmd, args->device, default_device(), "cuda or cpu");
  add_memory_limit_flag(cmd, args->device);
  add_vae_precision_flag(cmd, args->device);
  cmd->add_option("--size", args->size,
                  std::string("WxH (default: fisdit.json's, else ") + kDefaultSize + ")");
  cmd->add_option(
      "--frames", args->frames,
      "video frames, 4k+1 (default: fisdit.json's, else " + std::to_string(kDefaultFrames) + ")");
  add_sampling_flags(
      cmd, args->sampling,
      {.guidance_per_expert = false, .boundary = false, .defaults_from_model = true});
  cmd->add_option("--negative", args->negative, "negative prompt (used when guidance != 1)");
  cmd->add_flag("--no-figures", args->no_figures, "no PNG figures (the JSON and Markdown only)");
  cmd->add_flag("--quiet", args->quiet, "no progress lines");
  cmd->callback([args] { run_quality(*args); });
}

}  // namespace fisdit::cli
