#pragma once
// `fisdit calibrate`: an FIS preset chosen from an analysis JSON (analysis/analyze.h) for an
// error budget. The rule is documented in docs/ANALYSIS.md ("Calibration").
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "accel/fis.h"

namespace fisdit::analysis {

struct Calibration {
  accel::FisConfig config;             // name "calibrated"
  std::vector<std::string> reasoning;  // one line per choice, for the user
};

// `budget`: the largest tolerated relative error of the final block's output against dense, per
// frame (Eq. 6), on any sparse step. Throws fisdit::Error naming `source` when the analysis
// lacks what the rule needs (no FIS setting with stride > 1 measured, wrong format).
Calibration calibrate_fis(const nlohmann::json& analysis, double budget, const std::string& source);

}  // namespace fisdit::analysis
