#pragma once
// fisdit calibrate --magcache (cmd_magcache.cpp): its options and the run, kept apart from the
// calibrate command that hosts them.
#include <optional>
#include <string>
#include <vector>

#include "cli.h"

namespace fisdit::cli {

struct MagCacheCalibrationArgs {
  std::string model, model_low, inputs, output, device = "cpu", solver = "euler";
  std::vector<std::string> lora, lora_low;
  float lora_strength = 1.0f;
  int steps = 4;
  double shift = 5.0;
  float guidance = 1.0f;
  std::optional<float> boundary;
  std::optional<float> guidance_high, guidance_low;
};

// Adds every option but --output (the host command owns it).
void add_magcache_calibration_options(CLI::App* cmd, MagCacheCalibrationArgs& args);
// Runs the model dense and writes the ratios JSON to args.output.
void run_magcache_calibration(const MagCacheCalibrationArgs& args);

}  // namespace fisdit::cli
