#pragma once
// `fisdit analyze`: dense sampling with the paper's redundancy quantities recorded per (step,
// block) (Eq. 1-5) and, for each given FIS plan, the per-frame relative error of every block's
// output against dense on the same step inputs (Eq. 6). JSON schema: docs/ANALYSIS.md.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "sched/denoise.h"

namespace fisdit::analysis {

struct AnalysisSample {
  std::string name;  // the inputs file or the prompt
  sched::DenoiseInputs inputs;
};

struct AnalysisOptions {
  sched::DenoiseOptions denoise;        // its fis is ignored: the trajectory is dense
  std::vector<accel::FisConfig> plans;  // Eq. 6 is measured for each
  nlohmann::json meta;                  // copied to the JSON (model path, ...)
  bool progress = true;                 // a bar on stderr
};

// Runs the dense trajectory of every sample. At every step the conditional forward runs dense
// with the block outputs observed, then once per plan on the same input (the dense trajectory's
// latent), and each block's output is compared per frame with the dense one. The dense block
// outputs of one step are held on the host meanwhile (L * tokens * dim floats) when plans are
// given. CV, R_f and the errors are averaged over samples (Eq. 5).
nlohmann::json analyze_redundancy(const wan::WanConfig& cfg, const sched::ExpertFn& expert,
                                  bool two_experts, const std::vector<AnalysisSample>& samples,
                                  const AnalysisOptions& options);

}  // namespace fisdit::analysis
