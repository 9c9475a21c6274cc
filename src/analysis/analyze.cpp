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

RedundancyRecorder::RedundancyRecorder(int steps, int blocks)
    : steps_(static_cast<size_t>(steps)),
      blocks_(static_cast<size_t>(blocks)),
      cv_(steps_, std::vector<double>(blocks_)),
      timesteps_(steps_) {
  if (steps < 1 || blocks < 1) throw Error("redundancy: steps and blocks must be positive");
}

void RedundancyRecorder::set_frames(int64_t frames) {
  if (frames_ != 0 && frames != frames_)
    throw Error("redundancy: a sample has " + std::to_string(frames) + " latent frames, " +
                "the earlier ones " + std::to_string(frames_) + " (all samples need one size)");
  if (frames_ == 0) {
    frames_ = frames;
    change_ = zeros3(steps_, blocks_, frames > 0 ? static_cast<size_t>(frames - 1) : 0);
  }
}

void RedundancyRecorder::observe_block(int step, int block, const Tensor& host, double weight) {
  if (frames_ == 0) throw Error("redundancy: observe_block before the frames are set");
  const size_t k = static_cast<size_t>(step), l = static_cast<size_t>(block);
  if (k >= steps_ || l >= blocks_)
    throw Error("redundancy: step " + std::to_string(step) + " block " + std::to_string(block) +
                " is outside the recorder's " + std::to_string(steps_) + " x " +
                std::to_string(blocks_));
  const std::vector<double> r = adjacent_change(host, frames_);
  cv_[k][l] += coefficient_of_variation(r) * weight;
  for (size_t f = 0; f < r.size(); ++f) change_[k][l][f] += r[f] * weight;
}

void RedundancyRecorder::set_timestep(int step, double t) {
  timesteps_.at(static_cast<size_t>(step)) = t;
}

sched::ForwardHook RedundancyRecorder::hook(double weight) {
  return [this, weight](const sched::ForwardCall& call) -> Tensor {
    set_frames(call.input->dim(1) / call.model->info().patch[0]);
    set_timestep(call.step, call.time->t.to_vector().back());  // TI2V: frame 0 has t = 0
    const auto observe = [&](const std::string& name, const Tensor& host) {
      if (name.rfind("block_", 0) == 0)
        observe_block(call.step, std::stoi(name.substr(6)), host, weight);
    };
    return call.model->forward(*call.input, *call.time, *call.text,
                               {call.plan, call.step_open, observe, {}});
  };
}

void RedundancyRecorder::write(nlohmann::json& j) const {
  j["timesteps"] = timesteps_;
  j["cv"] = nlohmann::json::array();
  j["rel_change"] = nlohmann::json::array();
  for (size_t k = 0; k < steps_; ++k) {
    j["cv"].push_back(numbers(cv_[k]));
    nlohmann::json per_block = nlohmann::json::array();
    for (size_t l = 0; l < blocks_; ++l)
      per_block.push_back(change_.empty() ? nlohmann::json::array() : numbers(change_[k][l]));
    j["rel_change"].push_back(per_block);
  }
}

nlohmann::json RedundancyRecorder::to_json(const models::ModelInfo& info, const Shape& latent,
                                           const sched::DenoiseOptions& denoise,
                                           const std::vector<std::string>& samples,
                                           const nlohmann::json& meta) const {
  const auto& p = info.patch;
  nlohmann::json j = meta.is_object() ? meta : nlohmann::json::object();
  j["format"] = "fisdit-analysis";
  j["version"] = 1;
  j["model_type"] = models::task_name(info.task);
  j["num_blocks"] = info.num_blocks;
  j["latent"] = latent;
  j["frames"] = latent.size() == 4 ? latent[1] / p[0] : 0;
  j["tokens_per_frame"] = latent.size() == 4 ? (latent[2] / p[1]) * (latent[3] / p[2]) : 0;
  j["steps"] = steps_;
  j["solver"] = sched::solver_name(denoise.solver);
  j["shift"] = denoise.shift;
  j["samples"] = samples;
  write(j);
  return j;
}

nlohmann::json analyze_redundancy(const models::ModelInfo& info, const sched::ExpertFn& expert,
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
  const int64_t frames = x0.dim(1) / info.patch[0];
  const size_t steps = static_cast<size_t>(options.denoise.steps);
  const size_t blocks = static_cast<size_t>(info.num_blocks);
  const size_t nf = static_cast<size_t>(frames);
  std::vector<accel::FisPlan> plans;
  for (const accel::FisConfig& c : options.plans)
    plans.emplace_back(c, info.num_blocks, options.denoise.steps, static_cast<int>(frames));

  RedundancyRecorder recorder(options.denoise.steps, info.num_blocks);
  recorder.set_frames(frames);
  std::vector<Grid3> error(plans.size(), zeros3(steps, blocks, nf));
  const double n = static_cast<double>(samples.size());

  Progress bar("analyze", static_cast<int>(samples.size() * steps), options.progress);
  int done = 0;
  for (size_t si = 0; si < samples.size(); ++si) {
    sched::DenoiseOptions opt = options.denoise;
    opt.fis = accel::FisConfig{};
    opt.on_forward = [&](const sched::ForwardCall& call) -> Tensor {
      const size_t k = static_cast<size_t>(call.step);
      recorder.set_timestep(call.step, call.time->t.to_vector().back());  // TI2V: frame 0 t = 0
      std::vector<Tensor> dense(plans.empty() ? 0 : blocks);
      const auto observe_dense = [&](const std::string& name, const Tensor& host) {
        if (name.rfind("block_", 0) != 0) return;
        const size_t l = std::stoul(name.substr(6));
        recorder.observe_block(call.step, static_cast<int>(l), host, 1.0 / n);
        if (!plans.empty()) dense[l] = host;
      };
      Tensor out = call.model->forward(*call.input, *call.time, *call.text,
                                       {nullptr, true, observe_dense, {}});
      for (size_t pi = 0; pi < plans.size(); ++pi) {
        const auto observe_sparse = [&](const std::string& name, const Tensor& host) {
          if (name.rfind("block_", 0) != 0) return;
          const size_t l = std::stoul(name.substr(6));
          const std::vector<double> e = frame_relative_error(host, dense[l], frames);
          for (size_t f = 0; f < e.size(); ++f) error[pi][k][l][f] += e[f] / n;
        };
        call.model->forward(*call.input, *call.time, *call.text,
                            {&plans[pi], plans[pi].step_open(call.step), observe_sparse, {}});
      }
      return out;
    };
    sched::denoise(info, expert, two_experts, samples[si].inputs, opt,
                   [&](const sched::StepInfo& s) {
                     char detail[96];
                     std::snprintf(detail, sizeof detail, "sample %zu/%zu step %d/%d", si + 1,
                                   samples.size(), s.step + 1, s.steps);
                     bar.update(++done, detail);
                   });
  }
  bar.finish();

  std::vector<std::string> names;
  for (const AnalysisSample& s : samples) names.push_back(s.name);
  nlohmann::json j = recorder.to_json(info, x0.shape(), options.denoise, names, options.meta);
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
