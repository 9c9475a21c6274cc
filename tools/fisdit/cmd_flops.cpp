// fisdit flops: the analytic DiT FLOPs of a denoising run, dense and with an FIS plan.
#include <cstdio>

#include "cli.h"
#include "fisdit/error.h"
#include "models/wan/flops.h"

namespace fisdit::cli {

void register_flops(CLI::App& app) {
  struct Args {
    std::string model_config, size = "1280x720";
    int frames = 81, steps = 4;
    float guidance = 1.0f;
    FisFlags fis;
  };
  auto args = std::make_shared<Args>();
  args->fis.preset = "balanced";
  CLI::App* cmd = app.add_subcommand("flops", "analytic DiT FLOPs, dense and with FIS");
  cmd->add_option("--model-config", args->model_config,
                  "preset name (wan2.2-t2v-a14b, wan2.2-i2v-a14b, wan2.2-ti2v-5b, wan2.1-t2v-1.3b, "
                  "wan2.1-t2v-14b) or a config.json")
      ->required();
  cmd->add_option("--size", args->size, "video WIDTHxHEIGHT")->capture_default_str();
  cmd->add_option("--frames", args->frames, "video frames (4k+1)")->capture_default_str();
  cmd->add_option("--steps", args->steps, "denoising steps")->capture_default_str();
  cmd->add_option("--guidance", args->guidance, "CFG scale (!= 1 runs two forwards per step)")
      ->capture_default_str();
  add_fis_flags(cmd, args->fis);
  cmd->callback([args] {
    const wan::WanConfig cfg = wan::load_config(args->model_config);
    int width = 0, height = 0;
    parse_size(args->size, width, height);
    if (args->steps < 1) throw fisdit::Error("--steps must be >= 1");
    const accel::FisConfig fis = args->fis.resolve();
    const int forwards = args->guidance != 1.0f ? 2 : 1;
    const wan::RunFlops r =
        wan::run_flops(cfg, width, height, args->frames, args->steps, fis, forwards);
    const wan::LatentGeometry g = wan::latent_geometry(cfg, width, height, args->frames);
    std::printf("model        %s (%d blocks, dim %d)\n", args->model_config.c_str(), cfg.num_layers,
                cfg.dim);
    std::printf("video        %dx%d, %d frames -> latent %dx%dx%d, %lld tokens\n", width, height,
                args->frames, g.frames, g.height, g.width,
                static_cast<long long>(g.frames / cfg.patch_size[0]) *
                    (g.height / cfg.patch_size[1]) * (g.width / cfg.patch_size[2]));
    std::printf("steps        %d, %d DiT forward(s) per step\n", args->steps, forwards);
    std::printf("fis          %s\n", fis.describe().c_str());
    std::printf("dense        %.3f PFLOP\n", r.dense / 1e15);
    std::printf("%-12s %.3f PFLOP (%.1f%% of dense, %.2fx fewer)\n", fis.name.c_str(),
                r.planned / 1e15, 100.0 * r.planned / r.dense, r.dense / r.planned);
    for (size_t k = 0; k < r.per_step_planned.size(); ++k)
      std::printf("  step %zu     %.3f PFLOP\n", k, r.per_step_planned[k] / 1e15);
  });
}

}  // namespace fisdit::cli
