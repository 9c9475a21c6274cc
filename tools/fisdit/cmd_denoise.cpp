// fisdit denoise: the flow-matching sampling loop on inputs from a safetensors file.
#include <chrono>
#include <cstdio>
#include <cstring>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "models/offload.h"
#include "sched/flow_euler.h"

namespace fisdit::cli {

namespace {

struct DenoiseArgs {
  std::string inputs, output;
  ExpertFlags experts;
  SamplingFlags sampling;
  DeviceFlags device;
  FisFlags fis;
  CacheFlags cache;
  std::string precision = "bf16";
};

// A guidance scale != 1 needs the unconditional context: refused naming the flag that set it.
void check_uncond_context(const sched::DenoiseOptions& opt, const sched::FlowSchedule& schedule,
                          float boundary, const sched::DenoiseInputs& di,
                          const std::string& inputs) {
  for (float t : schedule.timesteps) {
    const bool high_step = sched::use_high_noise_expert(t, boundary);
    const float g = opt.guidance_for(high_step);
    if (g == 1.0f || di.context_neg.defined()) continue;
    const char* flag = high_step && opt.guidance_high   ? "--guidance-high"
                       : !high_step && opt.guidance_low ? "--guidance-low"
                                                        : "--guidance";
    throw Error(std::string(flag) + " " + CLI::detail::to_string(g) + ": " + inputs +
                " has no 'context_neg' for the unconditional pass (or use guidance 1)");
  }
}

void report_step(const sched::StepInfo& s, bool two_experts) {
  char line[320];
  std::snprintf(line, sizeof line,
                "step %d/%d  t=%7.2f  sigma %.4f -> %.4f  expert %s  cfg %.2f  fis %s  %.3f s%s",
                s.step + 1, s.steps, s.timestep, s.sigma, s.sigma_next,
                two_experts ? (s.high_noise_expert ? "high" : "low") : "single", s.guidance,
                s.fis_step_open ? "sparse" : "dense", s.seconds, sched::cache_note(s).c_str());
  status(line);
}

void run_denoise(const DenoiseArgs& a) {
  const std::vector<LoraSpec> loras = a.experts.loras(), loras_low = a.experts.loras_low();
  sched::DenoiseOptions opt = a.sampling.resolve();
  opt.fis = a.fis.resolve();
  opt.cache = a.cache.resolve();
  note_ratio_resampling(opt.cache, opt.steps);
  const sched::FlowSchedule schedule = sched::flow_schedule(opt.solver, opt.steps, opt.shift);
  const models::Precision precision = parse_precision(a.precision);
  auto backend = a.device.backend();
  const auto in = SafetensorsFile::open(a.inputs);
  const sched::DenoiseInputs di = read_denoise_inputs(*in);
  const std::string& model = a.experts.model;
  const std::string& model_low = a.experts.model_low;
  check_uncond_context(opt, schedule, sched::expert_boundary(opt, models::probe_model(model)), di,
                       a.inputs);
  const models::ModelInfo info = models::probe_model(model);
  const bool two = !model_low.empty();
  // Under --gpu-memory-limit each expert is placed beside this latent's activations, and the two
  // experts take turns on the device (the high-noise one is freed at the switch).
  const bool limited = backend->memory_budget().limit >= 0;
  if (limited && di.x.ndim() == 4)
    models::reserve_activations(*backend, info, {di.x.dim(1), di.x.dim(2), di.x.dim(3)},
                                opt.fis.enabled(), opt.cache.enabled);
  int skipped_passes = 0, passes = 0;
  std::unique_ptr<models::VelocityModel> high, low;
  const auto load = [&](bool use_high) -> models::VelocityModel& {
    std::unique_ptr<models::VelocityModel>& slot = use_high ? high : low;
    if (!slot) {
      if (limited) (use_high ? low : high).reset();
      slot = load_model_reporting(use_high ? model : model_low, *backend,
                                  !two       ? "model"
                                  : use_high ? "high-noise"
                                             : "low-noise",
                                  use_high ? loras : loras_low, precision);
      if (const std::string placed = slot->placement(); !placed.empty()) status("  " + placed);
    }
    return *slot;
  };
  if (!limited) {  // both loaded before the first step, as the step times assume
    load(true);
    if (two) load(false);
  }
  const auto on_step = [&](const sched::StepInfo& s) {
    report_step(s, two);
    passes += s.passes;
    skipped_passes += s.skipped_passes;
  };
  status(std::string("solver ") + sched::solver_name(opt.solver) + ", fis " + opt.fis.describe() +
         ", cache " + opt.cache.describe() +
         (di.z_image.defined() ? ", first frame from 'z_image'" : ""));
  const auto start = std::chrono::steady_clock::now();
  const sched::ExpertFn expert = [&](bool high_noise) -> models::VelocityModel& {
    return load(high_noise || !two);
  };
  const Tensor x = limited ? sched::denoise(info, expert, two, di, opt, on_step)
                           : sched::denoise(*high, low.get(), di, opt, on_step);
  char line[160];
  std::snprintf(line, sizeof line, "denoised in %.3f s", seconds_since(start));
  if (opt.cache.enabled)
    std::snprintf(line + std::strlen(line), sizeof line - std::strlen(line),
                  ", MagCache skipped %d of %d DiT passes", skipped_passes, passes);
  status(line);
  write_tensor(a.output, "x", x);
}

}  // namespace

void register_denoise(CLI::App& app) {
  auto args = std::make_shared<DenoiseArgs>();
  CLI::App* cmd = app.add_subcommand("denoise", "the flow-matching sampling loop");
  add_expert_flags(cmd, args->experts,
                   {.model_help = "(high-noise) model file or directory",
                    .model_required = true,
                    .model_low_help = "low-noise expert (Wan 2.2 A14B)",
                    .lora = LoraStyle::PerFile});
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with x (noise), context, optional context_neg, y (i2v) and "
                  "z_image (TI2V first-frame latent [C, 1, H, W])")
      ->required();
  cmd->add_option("--output", args->output, "safetensors to write the final latent 'x' to")
      ->required();
  add_sampling_flags(cmd, args->sampling);
  add_device_flags(cmd, args->device, "cpu");
  add_memory_limit_flag(cmd, args->device);
  add_fis_flags(cmd, args->fis);
  add_cache_flags(cmd, args->cache);
  add_precision_flag(cmd, args->precision);
  cmd->callback([args] { run_denoise(*args); });
}

}  // namespace fisdit::cli
