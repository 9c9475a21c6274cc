#include "analysis/analyze.h"

#include <algorithm>
#include <cstdio>

#include "analysis/redundancy.h"
#include "core/progress.h"
#include "fisdit/error.h"
#include "sched/flow_solvers.h"

namespace fisdit::analysis {

namespace {

using Grid2 = std::vector<std::vector<double>>;
using Grid3 = std::vector<Grid2>;

Grid3 zeros3(size_t a, size_t b, size_t c) { return Grid3(a, Grid2(b, std::vector<double>(c))); }

// JSON has no infinity: non-finite values are written as null.
nlohmann::json numbers(const std::vector<double>& v) {
  nlohmann::json j = nlohmann::json::array();
  for (double x : v) j.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json());
  return j;
}

}  // namespace

nlohmann::json analyze_redundancy(const wan::WanConfig& cfg, const sched::ExpertFn& expert,
                                  bool two_experts, const std::vector<AnalysisSample>& samples,
                                  const AnalysisOptions& options) {
  if (samples.empty()) throw Error("analyze: no samples (give --inputs or --prompts)");
  const Tensor& x0 = samples[0].inputs.x;
  if (x0.ndim() != 4) throw Error("analyze: x must be [C, F, H, W], got " + shape_str(x0.shape()));
  for (const AnalysisSample& s : samples)
    if (s.inputs.x.shape() != x0.shape())
      throw Error("analyze: " + s.name + ": latent " + shape_str(s.inputs.x.shape()) +
                  " differs from " + samples[0].name + "'s " + shape_str(x0.shape()) +
                  " (all samples need one size)");
  const auto& p = cfg.patch_size;
  const int64_t frames = x0.dim(1) / p[0];
  const int64_t tokens_per_frame = (x0.dim(2) / p[1]) * (x0.dim(3) / p[2]);
  const size_t steps = static_cast<size_t>(options.denoise.steps);
  const size_t blocks = static_cast<size_t>(cfg.num_layers);
  const size_t nf = static_cast<size_t>(frames), nchange = nf > 0 ? nf - 1 : 0;
  std::vector<accel::FisPlan> plans;
  for (const accel::FisConfig& c : options.plans)
    plans.emplace_back(c, cfg.num_layers, options.denoise.steps, static_cast<int>(frames));

  Grid2 cv(steps, std::vector<double>(blocks));
  Grid3 change = zeros3(steps, blocks, nchange);
  std::vector<Grid3> error(plans.size(), zeros3(steps, blocks, nf));
  std::vector<double> timesteps(steps);
  const double n = static_cast<double>(samples.size());

  Progress bar("analyze", static_cast<int>(samples.size() * steps), options.progress);
  int done = 0;
  for (size_t si = 0; si < samples.size(); ++si) {
    sched::DenoiseOptions opt = options.denoise;
    opt.fis = accel::FisConfig{};
    opt.on_forward = [&](const sched::ForwardCall& call) -> Tensor {
      const size_t k = static_cast<size_t>(call.step);
      timesteps[k] = call.t->to_vector().back();  // TI2V: frame 0 has t = 0
      std::vector<Tensor> dense(plans.empty() ? 0 : blocks);
      const auto observe_dense = [&](const std::string& name, const Tensor& host) {
        if (name.rfind("block_", 0) != 0) return;
        const size_t l = std::stoul(name.substr(6));
        const std::vector<double> r = adjacent_change(host, frames);
        cv[k][l] += coefficient_of_variation(r) / n;
        for (size_t f = 0; f < r.size(); ++f) change[k][l][f] += r[f] / n;
        if (!plans.empty()) dense[l] = host;
      };
      Tensor out =
          call.model->forward(*call.input, *call.t, *call.text, nullptr, true, observe_dense);
      for (size_t pi = 0; pi < plans.size(); ++pi) {
        const auto observe_sparse = [&](const std::string& name, const Tensor& host) {
          if (name.rfind("block_", 0) != 0) return;
          const size_t l = std::stoul(name.substr(6));
          const std::vector<double> e = frame_relative_error(host, dense[l], frames);
          for (size_t f = 0; f < e.size(); ++f) error[pi][k][l][f] += e[f] / n;
        };
        call.model->forward(*call.input, *call.t, *call.text, &plans[pi],
                            plans[pi].step_open(call.step), observe_sparse);
      }
      return out;
    };
    sched::denoise(cfg, expert, two_experts, samples[si].inputs, opt,
                   [&](const sched::StepInfo& s) {
                     char detail[96];
                     std::snprintf(detail, sizeof detail, "sample %zu/%zu step %d/%d", si + 1,
                                   samples.size(), s.step + 1, s.steps);
                     bar.update(++done, detail);
                   });
  }
  bar.finish();

  nlohmann::json j = options.meta.is_object() ? options.meta : nlohmann::json::object();
  j["format"] = "fisdit-analysis";
  j["version"] = 1;
  j["model_type"] = cfg.model_type;
  j["num_blocks"] = cfg.num_layers;
  j["latent"] = x0.shape();
  j["frames"] = frames;
  j["tokens_per_frame"] = tokens_per_frame;
  j["steps"] = steps;
  j["solver"] = sched::solver_name(options.denoise.solver);
  j["shift"] = options.denoise.shift;
  j["samples"] = nlohmann::json::array();
  for (const AnalysisSample& s : samples) j["samples"].push_back(s.name);
  j["timesteps"] = timesteps;
  j["cv"] = nlohmann::json::array();
  j["rel_change"] = nlohmann::json::array();
  for (size_t k = 0; k < steps; ++k) {
    j["cv"].push_back(numbers(cv[k]));
    nlohmann::json per_block = nlohmann::json::array();
    for (size_t l = 0; l < blocks; ++l) per_block.push_back(numbers(change[k][l]));
    j["rel_change"].push_back(per_block);
  }
  j["fis"] = nlohmann::json::array();
  for (size_t pi = 0; pi < plans.size(); ++pi) {
    nlohmann::json e = nlohmann::json::array(), anchor = nlohmann::json::array(),
                   sparse = nlohmann::json::array();
    for (size_t k = 0; k < steps; ++k) {
      nlohmann::json ek = nlohmann::json::array(), ak = nlohmann::json::array(),
                     sk = nlohmann::json::array();
      for (size_t l = 0; l < blocks; ++l) {
        const accel::BlockPlan bp = plans[pi].at(static_cast<int>(k), static_cast<int>(l));
        std::vector<bool> is_anchor(nf, !bp.sparse);
        for (int32_t a : bp.anchors) is_anchor[static_cast<size_t>(a)] = true;
        ek.push_back(numbers(error[pi][k][l]));
        ak.push_back(is_anchor);
        sk.push_back(bp.sparse);
      }
      e.push_back(ek);
      anchor.push_back(ak);
      sparse.push_back(sk);
    }
    j["fis"].push_back({{"config", plans[pi].config().to_json()},
                        {"sparse", sparse},
                        {"error", e},
                        {"anchor", anchor}});
  }
  return j;
}

}  // namespace fisdit::analysis
