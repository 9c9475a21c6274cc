// fisdit calibrate: tune an acceleration for a model. By default an FIS preset for an error budget,
// from fisdit analyze's JSON; --magcache records MagCache's magnitude ratios (cmd_magcache.cpp).
#include <fstream>
#include <iostream>
#include <memory>

#include "analysis/calibrate.h"
#include "cli.h"
#include "cmd_magcache.h"
#include "fisdit/error.h"

namespace fisdit::cli {

void register_calibrate(CLI::App& app) {
  struct Args {
    std::string analysis, output;
    std::optional<double> budget;
    bool magcache = false;
    MagCacheCalibrationArgs mc;
  };
  auto args = std::make_shared<Args>();
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
  add_magcache_calibration_options(cmd, args->mc);
  cmd->callback([args] {
    if (args->magcache) {
      if (!args->analysis.empty() || args->budget)
        throw Error("--analysis/--budget calibrate FIS; --magcache takes --model and --inputs");
      args->mc.output = args->output;
      run_magcache_calibration(args->mc);
      return;
    }
    if (args->analysis.empty() || !args->budget)
      throw Error(
          "calibrate needs --analysis A.json and --budget E (an FIS preset), or --magcache "
          "(MagCache ratios)");
    if (!args->mc.model.empty() || !args->mc.inputs.empty())
      throw Error(
          "--model/--inputs belong to calibrate --magcache; FIS calibration reads --analysis");
    std::ifstream in(args->analysis);
    if (!in) throw Error("--analysis " + args->analysis + ": cannot open the file");
    nlohmann::json a;
    try {
      a = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(args->analysis + ": not valid JSON: " + e.what());
    }
    const analysis::Calibration c = analysis::calibrate_fis(a, *args->budget, args->analysis);
    for (const std::string& line : c.reasoning) status(line);
    status("preset: " + c.config.describe());
    const std::string text = c.config.to_json().dump(2) + "\n";
    if (args->output.empty()) {
      std::cout << text;
      return;
    }
    std::ofstream out(args->output);
    out << text;
    if (!out) throw Error("--output " + args->output + ": cannot write the file");
    status("wrote " + args->output);
  });
}

}  // namespace fisdit::cli
