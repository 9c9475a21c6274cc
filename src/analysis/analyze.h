#pragma once
// `fisdit analyze`: dense sampling with the paper's redundancy quantities recorded per (step,
// block) (Eq. 1-5) and, for each given FIS plan, the per-frame relative error of every block's
// output against dense on the same step inputs (Eq. 6). JSON schema: docs/ANALYSIS.md.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "models/model.h"
#include "sched/denoise.h"

namespace fisdit::analysis {

// Eq. 1-5 accumulated over dense forwards: R_f and CV of every block's output of the
// conditional forward at each step, each sample weighted (1 / samples for the mean of Eq. 5).
class RedundancyRecorder {
 public:
  RedundancyRecorder(int steps, int blocks);

  // T, the latent frames after patchify; hook() sets it from its first forward when unset.
  void set_frames(int64_t frames);
  int64_t frames() const { return frames_; }
  // One block output (host [T * H'W', C], tokens ordered (f, h, w)) of step k, for a sample of
  // the given weight. Throws when the frames are not set.
  void observe_block(int step, int block, const Tensor& host, double weight);
  void set_timestep(int step, double t);
  // A DenoiseOptions::on_forward hook that runs the conditional forward itself, with its plan and
  // gate, observing every block's output; the forward's result is that of the forward without it.
  sched::ForwardHook hook(double weight);

  // analysis.json's "timesteps" [N], "cv" [N][L] and "rel_change" [N][L][T-1] (docs/ANALYSIS.md).
  void write(nlohmann::json& j) const;
  // The fields every analysis.json has ("format" ... "samples", as analyze writes them) plus
  // write()'s, with no "fis" entry; `meta` is copied in first.
  nlohmann::json to_json(const models::ModelInfo& info, const Shape& latent,
                         const sched::DenoiseOptions& denoise,
                         const std::vector<std::string>& samples,
                         const nlohmann::json& meta = nlohmann::json::object()) const;

 private:
  size_t steps_, blocks_;
  int64_t frames_ = 0;
  std::vector<std::vector<double>> cv_;                   // [N][L]
  std::vector<std::vector<std::vector<double>>> change_;  // [N][L][T-1]
  std::vector<double> timesteps_;
};

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
nlohmann::json analyze_redundancy(const models::ModelInfo& info, const sched::ExpertFn& expert,
                                  bool two_experts, const std::vector<AnalysisSample>& samples,
                                  const AnalysisOptions& options);

}  // namespace fisdit::analysis
