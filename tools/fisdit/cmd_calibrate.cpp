// fisdit calibrate: tune an acceleration for a model. --magcache records MagCache's magnitude
// ratios (cmd_magcache.cpp).
#include <memory>

#include "cli.h"
#include "cmd_magcache.h"
#include "fisdit/error.h"

namespace fisdit::cli {

void register_calibrate(CLI::App& app) {
  struct Args {
    bool magcache = false;
    MagCacheCalibrationArgs mc;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("calibrate", "calibrate an acceleration for a model");
  cmd->add_flag("--magcache", args->magcache,
                "record MagCache's per-step magnitude ratios (a dense run) for --magcache-ratios");
  cmd->add_option("--output", args->mc.output, "JSON file to write");
  add_magcache_calibration_options(cmd, args->mc);
  cmd->callback([args] {
    if (!args->magcache) throw Error("calibrate: give --magcache (the only calibration here)");
    run_magcache_calibration(args->mc);
  });
}

}  // namespace fisdit::cli
