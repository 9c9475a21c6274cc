// fisdit flops: the analytic DiT FLOPs of a denoising run, dense and with an FIS plan.
#include <cstdio>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "models/flops.h"

namespace fisdit::cli {

namespace {

struct FlopsArgs {
  std::string model_config, size = kDefaultSize;
  int frames = kDefaultFrames;
  SamplingFlags sampling;  // --steps, --guidance
  FisFlags fis;
};

void run_flops(const FlopsArgs& a) {
  const models::ModelInfo info =
      models::family_for_config(a.model_config).config_info(a.model_config);
  int width = 0, height = 0;
  parse_size(a.size, width, height);
  const sched::DenoiseOptions sampling = a.sampling.resolve();
  const int steps = sampling.steps;
  const accel::FisConfig fis = a.fis.resolve();
  const int forwards = sampling.guidance != 1.0f ? 2 : 1;
  const models::RunFlops r = models::run_flops(info, width, height, a.frames, steps, fis, forwards);
  const models::LatentGrid g = info.latent_grid(width, height, a.frames);
  std::printf("model        %s (%d blocks, dim %d)\n", a.model_config.c_str(), info.num_blocks,
              info.dim);
  std::printf("video        %dx%d, %d frames -> latent %lldx%lldx%lld, %lld tokens\n", width,
              height, a.frames, static_cast<long long>(g.frames), static_cast<long long>(g.height),
              static_cast<long long>(g.width),
              static_cast<long long>(info.plan_frames(g) * (g.height / info.patch[1]) *
                                     (g.width / info.patch[2])));
  std::printf("steps        %d, %d DiT forward(s) per step\n", steps, forwards);
  std::printf("fis          %s\n", fis.describe().c_str());
  std::printf("dense        %.3f PFLOP\n", r.dense / 1e15);
  std::printf("%-12s %.3f PFLOP (%.1f%% of dense, %.2fx fewer)\n", fis.name.c_str(),
              r.planned / 1e15, 100.0 * r.planned / r.dense, r.dense / r.planned);
  for (size_t k = 0; k < r.per_step_planned.size(); ++k)
    std::printf("  step %zu     %.3f PFLOP\n", k, r.per_step_planned[k] / 1e15);
}

}  // namespace

void register_flops(CLI::App& app) {
  auto args = std::make_shared<FlopsArgs>();
  args->fis.preset = "balanced";
  CLI::App* cmd = app.add_subcommand("flops", "analytic DiT FLOPs, dense and with FIS");
  cmd->add_option("--model-config", args->model_config,
                  "config name (" + join(models::all_config_names(), ", ") + ") or a config.json")
      ->required();
  cmd->add_option("--size", args->size, "video WIDTHxHEIGHT")->capture_default_str();
  cmd->add_option("--frames", args->frames, "video frames (4k+1)")->capture_default_str();
  add_sampling_flags(
      cmd, args->sampling,
      {.shift = false, .solver = false, .guidance_per_expert = false, .boundary = false});
  add_fis_flags(cmd, args->fis);
  cmd->callback([args] { run_flops(*args); });
}

}  // namespace fisdit::cli
