#include "sched/denoise.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "fisdit/error.h"
#include "sched/flow_euler.h"

namespace fisdit::sched {

namespace {

// x[:, 0] = z[:, 0] on host [C, F, H, W] latents: the official (1 - mask) * z + mask * x with a
// mask of 0 on frame 0 and 1 elsewhere, which is exactly this copy.
void put_first_frame(Tensor& x, const Tensor& z) {
  const int64_t channels = x.dim(0), frame = x.dim(2) * x.dim(3), per_channel = x.dim(1) * frame;
  float* px = x.f32();
  const float* pz = z.f32();
  for (int64_t c = 0; c < channels; ++c)
    std::copy(pz + c * frame, pz + (c + 1) * frame, px + c * per_channel);
}

void check_inputs(const models::ModelInfo& info, const DenoiseInputs& in) {
  if (in.x.ndim() != 4) throw Error("x must be [C, F, H, W], got " + shape_str(in.x.shape()));
  const bool i2v = in.y.defined();
  const std::string task = models::task_name(info.task);
  // Conditioning channels go with I2V, or with any model whose input counts them (HunyuanVideo
  // 1.5 T2V takes its condition and mask channels, all zero).
  const bool takes_y = info.task == models::Task::I2V || info.in_channels > info.latent_channels;
  if (i2v && (!takes_y || in.y.ndim() != 4 || in.y.dim(1) != in.x.dim(1) ||
              in.y.dim(2) != in.x.dim(2) || in.y.dim(3) != in.x.dim(3)))
    throw Error("'y' " + shape_str(in.y.shape()) + " does not fit latent " +
                shape_str(in.x.shape()) + " for a " + task + " model");
  if (info.task == models::Task::I2V && !i2v) throw Error("an i2v model needs 'y' in the inputs");
  const int64_t x_channels = in.x.dim(0) + (i2v ? in.y.dim(0) : 0);
  if (x_channels != info.in_channels)
    throw Error("latent has " + std::to_string(x_channels) +
                " channels (with y), the model expects " + std::to_string(info.in_channels));
  if (in.z_image.defined()) {
    if (info.task != models::Task::TI2V)
      throw Error("'z_image' (the TI2V first-frame latent) needs a ti2v model, this one is " +
                  task);
    if (info.patch[0] != 1)
      throw Error("'z_image' needs a temporal patch size of 1, the model has " +
                  std::to_string(info.patch[0]));
    const Tensor& z = in.z_image;
    if (z.ndim() != 4 || z.dim(0) != in.x.dim(0) || z.dim(1) != 1 || z.dim(2) != in.x.dim(2) ||
        z.dim(3) != in.x.dim(3))
      throw Error("'z_image' must be [" + std::to_string(in.x.dim(0)) + ", 1, " +
                  std::to_string(in.x.dim(2)) + ", " + std::to_string(in.x.dim(3)) +
                  "] (one latent frame of x " + shape_str(in.x.shape()) + "), got " +
                  shape_str(z.shape()));
  }
}

// Experts of one run must agree on what the loop relies on.
bool same_shape(const models::ModelInfo& a, const models::ModelInfo& b) {
  return a.family == b.family && a.task == b.task && a.in_channels == b.in_channels &&
         a.latent_channels == b.latent_channels && a.num_blocks == b.num_blocks &&
         a.patch == b.patch && a.meanflow == b.meanflow;
}

}  // namespace

std::string cache_note(const StepInfo& s) {
  if (s.skipped_passes == 0) return "";
  if (s.skipped_passes == s.passes) return "  cache skip";
  return s.cache_skipped_cond ? "  cache skip cond" : "  cache skip uncond";
}

void check_options(const DenoiseOptions& opt) {
  flow_schedule(opt.solver, opt.steps, opt.shift);  // throws for a bad step count or shift
  for (const auto& [param, g] :
       {std::pair{"guidance", std::optional<float>(opt.guidance)},
        std::pair{"guidance_high", opt.guidance_high}, std::pair{"guidance_low", opt.guidance_low}})
    if (g && !std::isfinite(*g)) throw ParamError(param, ": must be a finite number");
  if (opt.boundary && !(*opt.boundary >= 0.0f && *opt.boundary <= 1.0f))
    throw ParamError("boundary", " " + std::to_string(*opt.boundary) + ": must be in [0, 1]");
}

float expert_boundary(const DenoiseOptions& opt, const models::ModelInfo& info) {
  return opt.boundary.value_or(info.expert_boundary);
}

Tensor denoise(models::VelocityModel& high, models::VelocityModel* low, const DenoiseInputs& in,
               const DenoiseOptions& opt, const StepCallback& on_step) {
  if (low && &low->backend() != &high.backend())
    throw Error("both experts must run on one backend");
  if (low && !same_shape(low->info(), high.info()))
    throw Error("the low-noise expert's config does not match the high-noise expert's");
  const ExpertFn expert = [&](bool use_high) -> models::VelocityModel& {
    return use_high ? high : *low;
  };
  return denoise(high.info(), expert, low != nullptr, in, opt, on_step);
}

Tensor denoise(const models::ModelInfo& info, const ExpertFn& expert, bool two_experts,
               const DenoiseInputs& in, const DenoiseOptions& opt, const StepCallback& on_step) {
  check_options(opt);
  const std::unique_ptr<FlowSolver> solver = make_flow_solver(opt.solver, opt.steps, opt.shift);
  const FlowSchedule& sched = solver->schedule();
  check_inputs(info, in);
  const float boundary = expert_boundary(opt, info);

  // The CFG scale of every step follows the timestep like the expert switch does.
  std::vector<float> guidance;
  bool any_guided = false;
  for (float t : sched.timesteps) {
    guidance.push_back(opt.guidance_for(use_high_noise_expert(t, boundary)));
    any_guided = any_guided || guidance.back() != 1.0f;
  }
  if (any_guided && !in.context_neg.defined())
    throw Error("guidance != 1 needs 'context_neg' in the inputs (or guidance 1)");

  const bool i2v = in.y.defined(), ti2v = in.z_image.defined();
  const auto& p = info.patch;
  const int64_t grid_f = in.x.dim(1) / p[0],
                frame_tokens = (in.x.dim(2) / p[1]) * (in.x.dim(3) / p[2]);
  const accel::FisPlan plan(opt.fis, info.num_blocks, opt.steps, static_cast<int>(grid_f));
  const Tensor z_image = ti2v ? in.z_image.to_f32() : Tensor{};
  // Text embeddings per expert (each has its own text_embedding weights), made when the expert
  // first runs: an expert may be loaded only then. One slot per expert, not one for whichever
  // runs: a low-noise expert loaded where the freed high-noise one was has its address.
  struct Texts {
    models::TextEmbedding cond, uncond;
    const models::VelocityModel* model = nullptr;
  };
  Texts texts[2];
  Tensor y;

  // MagCache: expert phases (0 high-noise / only, 1 low-noise); MagCache4Wan2.2 never caches
  // the high-noise phase of i2v-A14B.
  std::unique_ptr<accel::MagCache> cache;
  if (opt.cache.enabled) {
    std::vector<int> phase;
    for (float ts : sched.timesteps)
      phase.push_back(!two_experts || use_high_noise_expert(ts, boundary) ? 0 : 1);
    std::vector<bool> cache_phase;
    if (two_experts && info.task == models::Task::I2V) cache_phase = {false, true};
    cache = std::make_unique<accel::MagCache>(opt.cache, phase, cache_phase);
    if (!opt.cache.force && any_guided && opt.cache.ratios.uncond.empty())
      throw ParamError("magcache_ratios",
                       ": the file has no 'uncond' ratios (calibrated without guidance) but this "
                       "run uses guidance; calibrate with the run's guidance");
  }

  // The latent lives on the host between steps, where the solver works on it.
  Tensor x = in.x.to_f32();
  if (ti2v) put_first_frame(x, z_image);
  for (int k = 0; k < opt.steps; ++k) {
    const auto start = std::chrono::steady_clock::now();
    const float timestep = sched.timesteps[static_cast<size_t>(k)];
    const bool use_high = !two_experts || use_high_noise_expert(timestep, boundary);
    models::VelocityModel& model = expert(use_high);
    if (!same_shape(model.info(), info))
      throw Error(std::string("the ") + (use_high ? "high" : "low") +
                  "-noise expert's config does not match the model's");
    Backend& be = model.backend();
    Texts& text = texts[use_high ? 0 : 1];
    if (text.model != &model) {
      // The experts take turns once (high, then low): the other's text side (with the blocks'
      // keys and values, 420 MB a prompt for an A14B expert) is not needed again.
      texts[use_high ? 1 : 0] = {};
      text.cond = model.embed_text(in.context);
      if (any_guided) text.uncond = model.embed_text(in.context_neg);
      text.model = &model;
    }
    if (i2v && !y.defined()) y = be.upload(in.y, DType::F32);  // experts share one backend
    models::Timestep time;
    if (ti2v) {
      // t = 0 on the tokens of latent frame 0 (the clean image), the step's t elsewhere.
      std::vector<float> per_token(static_cast<size_t>(grid_f * frame_tokens), timestep);
      std::fill_n(per_token.begin(), frame_tokens, 0.0f);
      time.t = Tensor::from_vector(per_token, {1, grid_f * frame_tokens});
    } else {
      time.t = Tensor::from_vector({timestep}, {1});
    }
    // MeanFlow: the interval ends at the next step's timestep (0 after the last step).
    if (info.meanflow)
      time.r = k + 1 < opt.steps ? sched.timesteps[static_cast<size_t>(k) + 1] : 0.0f;
    const bool open = plan.step_open(k);
    const float g = guidance[static_cast<size_t>(k)];
    Tensor input = be.upload(x, DType::F32);
    if (i2v) input = models::concat_channels(be, input, y);
    bool skipped[2] = {false, false};
    // One DiT pass of a CFG branch, skipped or computed as MagCache decides.
    auto pass = [&](int branch, const models::TextEmbedding& text_emb) {
      models::BlockStackResidual stack;
      Tensor scratch;
      skipped[branch] = cache && cache->skip(k, branch);
      if (skipped[branch])
        stack.apply = &cache->residual(branch);
      else if (cache)
        stack.keep = &cache->residual(branch);
      else if (opt.on_residual)
        stack.keep = &scratch;
      Tensor out = model.forward(input, time, text_emb, {&plan, open, {}, stack});
      if (!skipped[branch] && opt.on_residual) opt.on_residual(k, branch, use_high, *stack.keep);
      return out;
    };
    // An analysis hook may run the conditional forward itself (it does not combine with MagCache).
    Tensor v;
    if (opt.on_forward) v = opt.on_forward({k, &model, &input, &time, &text.cond, &plan, open});
    if (!v.defined()) v = pass(0, text.cond);
    if (g != 1.0f) {
      Tensor v_uncond = pass(1, text.uncond);
      be.sub(v, v_uncond, v);  // cond - uncond
      be.add_scaled(v_uncond, v, g);
      v = v_uncond;
    }
    solver->step(be.download(v), x);
    if (ti2v) put_first_frame(x, z_image);
    if (on_step) {
      StepInfo report;
      report.step = k;
      report.steps = opt.steps;
      report.timestep = timestep;
      report.sigma = sched.sigmas[static_cast<size_t>(k)];
      report.sigma_next = sched.sigmas[static_cast<size_t>(k) + 1];
      report.high_noise_expert = use_high;
      report.fis_step_open = open && opt.fis.enabled();
      report.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      report.guidance = g;
      report.passes = g != 1.0f ? 2 : 1;
      report.skipped_passes = int{skipped[0]} + int{skipped[1]};
      report.cache_skipped_cond = skipped[0];
      report.cache_skipped_uncond = skipped[1];
      report.model_timestep = time.t;
      on_step(report);
    }
  }
  return x;
}

}  // namespace fisdit::sched
