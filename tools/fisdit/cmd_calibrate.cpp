// fisdit calibrate: tune an acceleration for a model. By default an FIS preset for an error budget,
// from fisdit analyze's JSON; --magcache records MagCache's magnitude ratios
// (calibrate_magcache.cpp).
#include <fstream>
#include <iostream>
#include <memory>

#include "analysis/calibrate.h"
#include "calibrate.h"
#include "fisdit/error.h"

namespace fisdit::cli {

namespace {

// The FIS preset for --budget from --analysis: printed, or written to --output.
void run_calibrate_fis(const CalibrateArgs& a) {
  if (a.analysis.empty() || !a.budget)
    throw Error(
        "calibrate needs --analysis A.json and --budget E (an FIS preset), or --magcache "
        "(MagCache ratios)");
  if (!a.experts.model.empty() || !a.inputs.empty())
    throw Error(
        "--model/--inputs belong to calibrate --magcache; FIS calibration reads --analysis");
  std::ifstream in(a.analysis);
  if (!in) throw Error("--analysis " + a.analysis + ": cannot open the file");
  nlohmann::json analysis;
  try {
    analysis = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(a.analysis + ": not valid JSON: " + e.what());
  }
  const analysis::Calibration c = analysis::calibrate_fis(analysis, *a.budget, a.analysis);
  for (const std::string& line : c.reasoning) status(line);
  status("preset: " + c.config.describe());
  const std::string text = c.config.to_json().dump(2) + "\n";
  if (a.output.empty()) {
    std::cout << text;
    return;
  }
  std::ofstream out(a.output);
  out << text;
  if (!out) throw Error("--output " + a.output + ": cannot write the file");
  status("wrote " + a.output);
}

void run_calibrate(const CalibrateArgs& a) {
  if (!a.magcache) return run_calibrate_fis(a);
  if (!a.analysis.empty() || a.budget)
    throw Error("--analysis/--budget calibrate FIS; --magcache takes --model and --inputs");
  run_calibrate_magcache(a);
}

}  // namespace

void register_calibrate(CLI::App& app) {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "choose an FIS preset (stride, head, tail) for an error budget from an analysis, or with "
      "--magcache record MagCache's magnitude ratios");
  cmd->add_option("--analysis", args->analysis, "analysis.json written by fisdit analyze");
  cmd->add_option("--budget", args->budget,
                  "largest tolerated per-frame relative error of the final block output vs "
                  "dense (Eq. 6), e.g. 0.05");
  cmd->add_option("--output", args->output,
                  "JSON to write: the FIS preset (for --fis FILE; default: printed on stdout) or "
                  "with --magcache the ratios (for --magcache-ratios; required)");
  cmd->add_flag("--magcache", args->magcache,
                "record MagCache's per-step magnitude ratios (a dense run) for --magcache-ratios");
  // --magcache's run:
  add_expert_flags(cmd, args->experts,
                   {.model_help = "(high-noise) model file or directory",
                    .model_low_help = "low-noise expert (Wan 2.2 A14B)",
                    .lora = LoraStyle::OneStrength});
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with x (noise), context, optional context_neg, y, z_image (as "
                  "fisdit denoise reads them)");
  add_sampling_flags(cmd, args->sampling);
  add_device_flags(cmd, args->device, "cpu");
  cmd->callback([args] { run_calibrate(*args); });
}

}  // namespace fisdit::cli
