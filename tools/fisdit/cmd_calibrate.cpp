// fisdit calibrate: an FIS preset for an error budget, from fisdit analyze's JSON.
#include <fstream>
#include <iostream>

#include "analysis/calibrate.h"
#include "cli.h"
#include "fisdit/error.h"

namespace fisdit::cli {

void register_calibrate(CLI::App& app) {
  struct Args {
    std::string analysis, output;
    double budget = 0;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "choose an FIS preset (stride, head, tail) for an error budget from an analysis");
  cmd->add_option("--analysis", args->analysis, "analysis.json written by fisdit analyze")
      ->required();
  cmd->add_option("--budget", args->budget,
                  "largest tolerated per-frame relative error of the final block output vs "
                  "dense (Eq. 6), e.g. 0.05")
      ->required();
  cmd->add_option("--output", args->output,
                  "preset JSON to write (for --fis FILE); default: print it on stdout");
  cmd->callback([args] {
    // Further calibration modes (another helper's step caching) dispatch here on their flag.
    std::ifstream in(args->analysis);
    if (!in) throw Error("--analysis " + args->analysis + ": cannot open the file");
    nlohmann::json a;
    try {
      a = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw Error(args->analysis + ": not valid JSON: " + e.what());
    }
    const analysis::Calibration c = analysis::calibrate_fis(a, args->budget, args->analysis);
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
