// fisdit calibrate --magcache: one dense sampling run that records MagCache's per-step magnitude
// ratios (accel/magcache.h) per CFG branch and writes the JSON that --magcache-ratios reads.
#include "cmd_magcache.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"
#include "models/family.h"
#include "models/lora.h"
#include "sched/denoise.h"
#include "sched/flow_euler.h"

namespace fisdit::cli {

void add_magcache_calibration_options(CLI::App* cmd, MagCacheCalibrationArgs& a) {
  cmd->add_option("--model", a.model, "(high-noise) model file or directory");
  cmd->add_option("--model-low", a.model_low, "low-noise expert (Wan 2.2 A14B)");
  cmd->add_option("--lora", a.lora, "LoRA merged into the (high-noise) DiT; repeatable");
  cmd->add_option("--lora-low", a.lora_low, "LoRA merged into the low-noise DiT; repeatable");
  cmd->add_option("--lora-strength", a.lora_strength, "strength of every LoRA")
      ->capture_default_str();
  cmd->add_option("--inputs", a.inputs,
                  "safetensors with x (noise), context, optional context_neg, y, z_image (as "
                  "fisdit denoise reads them)");
  cmd->add_option("--solver", a.solver, "euler, unipc or dpm++")->capture_default_str();
  cmd->add_option("--steps", a.steps, "denoising steps")->capture_default_str();
  cmd->add_option("--shift", a.shift, "flow shift")->capture_default_str();
  cmd->add_option("--guidance", a.guidance, "CFG scale; 1 = no unconditional pass")
      ->capture_default_str();
  cmd->add_option("--guidance-high", a.guidance_high, "CFG scale of the high-noise steps");
  cmd->add_option("--guidance-low", a.guidance_low, "CFG scale of the low-noise steps");
  cmd->add_option("--boundary", a.boundary,
                  "expert switch (t >= boundary*1000 is high-noise); default: the model's");
  cmd->add_option("--device", a.device, "cpu or cuda")->capture_default_str();
}

void run_magcache_calibration(const MagCacheCalibrationArgs& a) {
  for (const auto& [flag, value] :
       {std::pair{"--model", &a.model}, {"--inputs", &a.inputs}, {"--output", &a.output}})
    if (value->empty()) throw Error(std::string("calibrate --magcache needs ") + flag);
  if (!a.lora_low.empty() && a.model_low.empty())
    throw Error("--lora-low needs --model-low (the low-noise expert it changes)");
  if (!std::isfinite(a.lora_strength)) throw Error("--lora-strength must be a finite number");
  sched::DenoiseOptions opt;
  opt.solver = sched::parse_solver(a.solver);
  opt.steps = a.steps;
  opt.shift = a.shift;
  opt.guidance = a.guidance;
  opt.guidance_high = a.guidance_high;
  opt.guidance_low = a.guidance_low;
  opt.boundary = a.boundary;
  if (opt.boundary && !(*opt.boundary >= 0.0f && *opt.boundary <= 1.0f))
    throw Error("--boundary must be in [0, 1]");
  const sched::FlowSchedule schedule = sched::flow_schedule(opt.solver, opt.steps, opt.shift);
  auto backend = make_backend(a.device);
  const auto in = SafetensorsFile::open(a.inputs);
  sched::DenoiseInputs di{read_input(*in, "x", true), read_input(*in, "context", true),
                          read_input(*in, "context_neg", false), read_input(*in, "y", false),
                          read_input(*in, "z_image", false)};
  auto specs = [&](const std::vector<std::string>& paths) {
    std::vector<LoraSpec> out;
    for (const auto& p : paths) out.push_back({p, a.lora_strength});
    return out;
  };
  auto high = models::load_model(a.model, *backend, specs(a.lora));
  std::unique_ptr<models::VelocityModel> low;
  if (!a.model_low.empty()) low = models::load_model(a.model_low, *backend, specs(a.lora_low));
  status("calibrate --magcache: dense run, " + std::to_string(opt.steps) + " steps, solver " +
         sched::solver_name(opt.solver));

  // gamma_k per branch = mean over tokens of ||r_k|| / ||r_{k-1}||; gamma_0 = 1 (reference pad).
  std::vector<double> ratios[2] = {std::vector<double>(static_cast<size_t>(opt.steps), 1.0),
                                   std::vector<double>(static_cast<size_t>(opt.steps), 1.0)};
  std::vector<double> prev[2];
  bool guided = false;
  std::vector<std::string> experts;
  opt.on_residual = [&](int step, int branch, bool, const Tensor& residual) {
    const std::vector<double> norms = accel::token_norms(backend->download(residual));
    if (!prev[branch].empty())
      ratios[branch][static_cast<size_t>(step)] = accel::magnitude_ratio(norms, prev[branch]);
    prev[branch] = norms;
    guided = guided || branch == 1;
  };
  sched::denoise(*high, low.get(), di, opt, [&](const sched::StepInfo& s) {
    experts.push_back(low ? (s.high_noise_expert ? "high" : "low") : "single");
    char line[160];
    std::snprintf(line, sizeof line, "step %d/%d  t=%7.2f  expert %s  cfg %.2f  %.3f s", s.step + 1,
                  s.steps, s.timestep, experts.back().c_str(), s.guidance, s.seconds);
    status(line);
  });

  accel::MagRatios r;
  r.cond = ratios[0];
  if (guided) r.uncond = ratios[1];
  nlohmann::json info = {{"model", a.model},
                         {"model_low", a.model_low},
                         {"model_type", models::task_name(high->info().task)},
                         {"inputs", a.inputs},
                         {"steps", opt.steps},
                         {"solver", sched::solver_name(opt.solver)},
                         {"shift", opt.shift},
                         {"guidance_high", opt.guidance_for(true)},
                         {"guidance_low", opt.guidance_for(false)},
                         {"boundary", sched::expert_boundary(opt, high->info())},
                         {"timesteps", schedule.timesteps},
                         {"experts", experts},
                         {"definition",
                          "gamma_k = mean over tokens of ||r_k|| / ||r_{k-1}||, r = block-stack "
                          "output minus input; gamma_0 = 1"}};
  r.info = info.dump();
  accel::save_mag_ratios(a.output, r);
  std::printf("step  expert  %10s%s\n", "cond", guided ? "      uncond" : "");
  for (int k = 0; k < opt.steps; ++k)
    std::printf("%4d  %-6s  %10.5f%s\n", k + 1, experts[static_cast<size_t>(k)].c_str(),
                r.cond[static_cast<size_t>(k)],
                guided ? ("  " + std::to_string(r.uncond[static_cast<size_t>(k)])).c_str() : "");
  status("wrote " + a.output);
}

}  // namespace fisdit::cli
