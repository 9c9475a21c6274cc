// fisdit dit / denoise: one DiT forward, or the sampling loop, on inputs from a safetensors file.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "models/lora.h"
#include "sched/denoise.h"
#include "sched/flow_euler.h"

namespace fisdit::cli {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// --lora PATH (repeatable) with --lora-strength F (once for all, or once per --lora); the same
// for the low-noise expert's --lora-low / --lora-low-strength.
struct LoraFlags {
  std::vector<std::string> paths;
  std::vector<float> strengths;

  void add(CLI::App* cmd, const std::string& flag, const std::string& which) {
    flag_ = flag;
    cmd->add_option(flag, paths,
                    "LoRA (.safetensors or .pth) merged into the " + which +
                        " weights at load time; repeatable")
        ->allow_extra_args(false);
    cmd->add_option(flag + "-strength", strengths,
                    "LoRA strength (default 1): once for every " + flag + ", or once per " + flag)
        ->allow_extra_args(false);
  }
  std::vector<LoraSpec> resolve() const {
    if (paths.empty() && !strengths.empty())
      throw fisdit::Error(flag_ + "-strength is given without " + flag_);
    if (strengths.size() > 1 && strengths.size() != paths.size())
      throw fisdit::Error(flag_ + "-strength is given " + std::to_string(strengths.size()) +
                          " times for " + std::to_string(paths.size()) + " " + flag_ +
                          " files (give it once, or once per " + flag_ + ")");
    std::vector<LoraSpec> out;
    for (size_t i = 0; i < paths.size(); ++i)
      out.push_back({paths[i], strengths.empty() ? 1.0f : strengths[strengths.size() > 1 ? i : 0]});
    return out;
  }

 private:
  std::string flag_;
};

std::unique_ptr<models::VelocityModel> load_model(const std::string& path, Backend& backend,
                                                  const char* role,
                                                  const std::vector<LoraSpec>& loras) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> report;
  auto dit = models::load_model(path, backend, loras, &report);
  char line[512];
  std::snprintf(line, sizeof line, "loaded %s %s: %s in %.2f s", role, path.c_str(),
                report.empty() ? "" : report.front().c_str(), seconds_since(start));
  status(line);
  for (size_t i = 1; i < report.size(); ++i) status("  " + report[i]);
  return dit;
}

void write_output(const std::string& path, const std::string& name, const Tensor& t) {
  write_safetensors(path, {{name, t}}, {{"producer", "fisdit"}});
  status("wrote " + path + " ('" + name + "' " + shape_str(t.shape()) + ")");
}
}  // namespace

void register_dit(CLI::App& app) {
  struct Args {
    std::string model, inputs, output, device = "cpu";
    FisFlags fis;
    LoraFlags lora;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("dit", "one DiT forward (the step gate open for FIS)");
  cmd->add_option("--model", args->model, ".safetensors file or model directory")->required();
  cmd->add_option("--inputs", args->inputs, "safetensors with x, t, context (and y for i2v)")
      ->required();
  cmd->add_option("--output", args->output, "safetensors to write 'out' [C_out, F, H, W] to")
      ->required();
  cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  add_fis_flags(cmd, args->fis);
  args->lora.add(cmd, "--lora", "DiT");
  cmd->callback([args] {
    const accel::FisConfig fis = args->fis.resolve();
    const std::vector<LoraSpec> loras = args->lora.resolve();
    auto backend = make_backend(args->device);
    const auto in = SafetensorsFile::open(args->inputs);
    const Tensor x = read_input(*in, "x", true), t = read_input(*in, "t", true),
                 context = read_input(*in, "context", true), y = read_input(*in, "y", false);
    auto dit = load_model(args->model, *backend, "model", loras);
    const models::ModelInfo& info = dit->info();
    if (x.ndim() != 4)
      throw fisdit::Error(args->inputs + ": 'x' must be [C, F, H, W], got " + shape_str(x.shape()));
    if (y.defined() != (info.task == models::Task::I2V))
      throw fisdit::Error(args->inputs + (y.defined() ? ": 'y' given but the model is " +
                                                            std::string(task_name(info.task))
                                                      : std::string(": an i2v model needs 'y'")));
    Tensor xd = backend->upload(x, DType::F32);
    if (y.defined()) {
      if (y.ndim() != 4 || y.dim(1) != x.dim(1) || y.dim(2) != x.dim(2) || y.dim(3) != x.dim(3))
        throw fisdit::Error(args->inputs + ": 'y' " + shape_str(y.shape()) +
                            " does not match 'x' " + shape_str(x.shape()));
      xd = models::concat_channels(*backend, xd, backend->upload(y, DType::F32));
    }
    if (xd.dim(0) != info.in_channels)
      throw fisdit::Error(args->inputs + ": latent has " + std::to_string(xd.dim(0)) +
                          " channels, the model expects " + std::to_string(info.in_channels) +
                          (y.defined() ? " (x and y together)" : ""));
    const int frames = static_cast<int>(x.dim(1) / info.patch[0]);
    const accel::FisPlan plan(fis, info.num_blocks, 1, frames);
    status("fis " + fis.describe());
    const auto start = std::chrono::steady_clock::now();
    const Tensor text = dit->embed_text(context);
    backend->flops().reset();
    Tensor out = dit->forward(xd, {t, std::nullopt}, text, {&plan, /*step_open=*/true, {}, {}});
    backend->synchronize();
    char line[256];
    std::snprintf(line, sizeof line, "forward done in %.3f s, %.3f GFLOP executed",
                  seconds_since(start), backend->flops().total() / 1e9);
    status(line);
    write_output(args->output, "out", backend->download(out));
  });
}

void register_denoise(CLI::App& app) {
  struct Args {
    std::string model, model_low, inputs, output, device = "cpu", solver = "euler";
    int steps = 4;
    double shift = 5.0;
    float guidance = 1.0f;
    std::optional<float> guidance_high, guidance_low, boundary;
    FisFlags fis;
    CacheFlags cache;
    LoraFlags lora, lora_low;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("denoise", "the flow-matching sampling loop");
  cmd->add_option("--model", args->model, "(high-noise) model file or directory")->required();
  cmd->add_option("--model-low", args->model_low, "low-noise expert (Wan 2.2 A14B)");
  cmd->add_option("--boundary", args->boundary,
                  "expert switch: high-noise while timestep >= boundary*1000 (default: the "
                  "model's, Wan t2v 0.875, i2v 0.9)");
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with x (noise), context, optional context_neg, y (i2v) and "
                  "z_image (TI2V first-frame latent [C, 1, H, W])")
      ->required();
  cmd->add_option("--solver", args->solver,
                  "euler (Lightning recipe), unipc or dpm++ (the official Wan solvers)")
      ->capture_default_str();
  cmd->add_option("--steps", args->steps, "denoising steps")->capture_default_str();
  cmd->add_option("--shift", args->shift, "flow shift")->capture_default_str();
  cmd->add_option("--guidance", args->guidance, "CFG scale; 1 = no guidance")
      ->capture_default_str();
  cmd->add_option("--guidance-high", args->guidance_high,
                  "CFG scale of the high-noise steps (timestep >= boundary*1000); default "
                  "--guidance");
  cmd->add_option("--guidance-low", args->guidance_low,
                  "CFG scale of the low-noise steps; default --guidance");
  cmd->add_option("--output", args->output, "safetensors to write the final latent 'x' to")
      ->required();
  cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  add_fis_flags(cmd, args->fis);
  add_cache_flags(cmd, args->cache);
  args->lora.add(cmd, "--lora", "(high-noise) DiT");
  args->lora_low.add(cmd, "--lora-low", "low-noise DiT (--model-low)");
  cmd->callback([args] {
    const std::vector<LoraSpec> loras = args->lora.resolve();
    const std::vector<LoraSpec> loras_low = args->lora_low.resolve();
    if (!loras_low.empty() && args->model_low.empty())
      throw fisdit::Error("--lora-low needs --model-low (the low-noise expert it changes)");
    sched::DenoiseOptions opt;
    opt.solver = sched::parse_solver(args->solver);
    opt.steps = args->steps;
    opt.shift = args->shift;
    opt.guidance = args->guidance;
    opt.guidance_high = args->guidance_high;
    opt.guidance_low = args->guidance_low;
    opt.boundary = args->boundary;
    opt.fis = args->fis.resolve();
    opt.cache = args->cache.resolve();
    note_ratio_resampling(opt.cache, opt.steps);
    if (opt.boundary && !(*opt.boundary >= 0.0f && *opt.boundary <= 1.0f))
      throw fisdit::Error("--boundary must be in [0, 1]");
    for (const auto& [flag, g] : {std::pair{"--guidance", std::optional<float>(opt.guidance)},
                                  std::pair{"--guidance-high", opt.guidance_high},
                                  std::pair{"--guidance-low", opt.guidance_low}})
      if (g && !std::isfinite(*g))
        throw fisdit::Error(std::string(flag) + " must be a finite number, got " +
                            CLI::detail::to_string(*g));
    // Validates --steps and --shift before anything is loaded.
    const sched::FlowSchedule schedule = sched::flow_schedule(opt.solver, opt.steps, opt.shift);
    auto backend = make_backend(args->device);
    const auto in = SafetensorsFile::open(args->inputs);
    sched::DenoiseInputs di{read_input(*in, "x", true), read_input(*in, "context", true),
                            read_input(*in, "context_neg", false), read_input(*in, "y", false),
                            read_input(*in, "z_image", false)};
    const float boundary = sched::expert_boundary(opt, models::probe_model(args->model));
    for (float t : schedule.timesteps) {
      const bool high_step = sched::use_high_noise_expert(t, boundary);
      const float g = opt.guidance_for(high_step);
      if (g == 1.0f || di.context_neg.defined()) continue;
      const char* flag = high_step && opt.guidance_high   ? "--guidance-high"
                         : !high_step && opt.guidance_low ? "--guidance-low"
                                                          : "--guidance";
      throw fisdit::Error(std::string(flag) + " " + CLI::detail::to_string(g) + ": " +
                          args->inputs +
                          " has no 'context_neg' for the unconditional pass (or use guidance 1)");
    }
    auto high =
        load_model(args->model, *backend, args->model_low.empty() ? "model" : "high-noise", loras);
    std::unique_ptr<models::VelocityModel> low;
    if (!args->model_low.empty())
      low = load_model(args->model_low, *backend, "low-noise", loras_low);
    status(std::string("solver ") + sched::solver_name(opt.solver) + ", fis " + opt.fis.describe() +
           ", cache " + opt.cache.describe() +
           (di.z_image.defined() ? ", first frame from 'z_image'" : ""));
    int skipped_passes = 0, passes = 0;
    const auto start = std::chrono::steady_clock::now();
    const Tensor x = sched::denoise(*high, low.get(), di, opt, [&](const sched::StepInfo& s) {
      char line[320];
      std::snprintf(
          line, sizeof line,
          "step %d/%d  t=%7.2f  sigma %.4f -> %.4f  expert %s  cfg %.2f  fis %s  %.3f s%s",
          s.step + 1, s.steps, s.timestep, s.sigma, s.sigma_next,
          low ? (s.high_noise_expert ? "high" : "low") : "single", s.guidance,
          s.fis_step_open ? "sparse" : "dense", s.seconds, sched::cache_note(s).c_str());
      status(line);
      passes += s.passes;
      skipped_passes += s.skipped_passes;
    });
    char line[160];
    std::snprintf(line, sizeof line, "denoised in %.3f s", seconds_since(start));
    if (opt.cache.enabled)
      std::snprintf(line + std::strlen(line), sizeof line - std::strlen(line),
                    ", MagCache skipped %d of %d DiT passes", skipped_passes, passes);
    status(line);
    write_output(args->output, "x", x);
  });
}

}  // namespace fisdit::cli
