#pragma once
// fisdit calibrate: its flags (cmd_calibrate.cpp, which also chooses FIS presets) and the
// --magcache mode (calibrate_magcache.cpp).
#include <optional>
#include <string>

#include "cli.h"

namespace fisdit::cli {

struct CalibrateArgs {
  std::string analysis, output;
  std::optional<double> budget;
  bool magcache = false;
  // --magcache: a dense run on inputs as denoise reads them.
  std::string inputs;
  ExpertFlags experts;
  SamplingFlags sampling;
  DeviceFlags device;
};

// calibrate --magcache: runs the model dense and writes MagCache's ratios JSON to args.output.
void run_calibrate_magcache(const CalibrateArgs& args);

}  // namespace fisdit::cli
