// fisdit calibrate --magcache: one dense sampling run that records MagCache's per-step magnitude
// ratios (accel/magcache.h) per CFG branch and writes the JSON that --magcache-ratios reads.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "calibrate.h"
#include "fisdit/error.h"
#include "models/family.h"

namespace fisdit::cli {

namespace {

// What the dense run recorded: gamma_k per branch (0: conditional, 1: unconditional) and the
// expert of every step.
struct Recorded {
  std::vector<double> ratios[2];
  bool guided = false;
  std::vector<std::string> experts;
};

// Writes the ratios with what they were recorded from, and prints them.
void write_ratios(const CalibrateArgs& a, const sched::DenoiseOptions& opt,
                  const models::ModelInfo& info, const Recorded& rec) {
  accel::MagRatios r;
  r.cond = rec.ratios[0];
  if (rec.guided) r.uncond = rec.ratios[1];
  const sched::FlowSchedule schedule = sched::flow_schedule(opt.solver, opt.steps, opt.shift);
  const nlohmann::json about = {
      {"model", a.experts.model},
      {"model_low", a.experts.model_low},
      {"model_type", models::task_name(info.task)},
      {"inputs", a.inputs},
      {"steps", opt.steps},
      {"solver", sched::solver_name(opt.solver)},
      {"shift", opt.shift},
      {"guidance_high", opt.guidance_for(true)},
      {"guidance_low", opt.guidance_for(false)},
      {"boundary", sched::expert_boundary(opt, info)},
      {"timesteps", schedule.timesteps},
      {"experts", rec.experts},
      {"definition",
       "gamma_k = mean over tokens of ||r_k|| / ||r_{k-1}||, r = block-stack output minus input; "
       "gamma_0 = 1"}};
  r.info = about.dump();
  accel::save_mag_ratios(a.output, r);
  std::printf("step  expert  %10s%s\n", "cond", rec.guided ? "      uncond" : "");
  for (size_t k = 0; k < r.cond.size(); ++k)
    std::printf("%4zu  %-6s  %10.5f%s\n", k + 1, rec.experts[k].c_str(), r.cond[k],
                rec.guided ? ("  " + std::to_string(r.uncond[k])).c_str() : "");
  status("wrote " + a.output);
}

}  // namespace

void run_calibrate_magcache(const CalibrateArgs& a) {
  for (const auto& [flag, value] :
       {std::pair{"--model", &a.experts.model}, {"--inputs", &a.inputs}, {"--output", &a.output}})
    if (value->empty()) throw Error(std::string("calibrate --magcache needs ") + flag);
  const std::vector<LoraSpec> loras_low = a.experts.loras_low(), loras = a.experts.loras();
  sched::DenoiseOptions opt = a.sampling.resolve();
  auto backend = a.device.backend();
  const auto in = SafetensorsFile::open(a.inputs);
  const sched::DenoiseInputs di = read_denoise_inputs(*in);
  auto high = models::load_model(a.experts.model, *backend, loras);
  std::unique_ptr<models::VelocityModel> low;
  if (!a.experts.model_low.empty())
    low = models::load_model(a.experts.model_low, *backend, loras_low);
  status("calibrate --magcache: dense run, " + std::to_string(opt.steps) + " steps, solver " +
         sched::solver_name(opt.solver));

  // gamma_k per branch = mean over tokens of ||r_k|| / ||r_{k-1}||; gamma_0 = 1 (reference pad).
  Recorded rec;
  for (std::vector<double>& r : rec.ratios) r.assign(static_cast<size_t>(opt.steps), 1.0);
  std::vector<double> prev[2];
  opt.on_residual = [&](int step, int branch, bool, const Tensor& residual) {
    const std::vector<double> norms = accel::token_norms(backend->download(residual));
    if (!prev[branch].empty())
      rec.ratios[branch][static_cast<size_t>(step)] = accel::magnitude_ratio(norms, prev[branch]);
    prev[branch] = norms;
    rec.guided = rec.guided || branch == 1;
  };
  sched::denoise(*high, low.get(), di, opt, [&](const sched::StepInfo& s) {
    rec.experts.push_back(low ? (s.high_noise_expert ? "high" : "low") : "single");
    char line[160];
    std::snprintf(line, sizeof line, "step %d/%d  t=%7.2f  expert %s  cfg %.2f  %.3f s", s.step + 1,
                  s.steps, s.timestep, rec.experts.back().c_str(), s.guidance, s.seconds);
    status(line);
  });
  write_ratios(a, opt, high->info(), rec);
}

}  // namespace fisdit::cli
