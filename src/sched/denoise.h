#pragma once
// The sampling loop: a flow solver (Euler, UniPC, DPM++), the two-expert switch (Wan 2.2 A14B),
// classifier-free guidance with a scale per expert, and first-frame conditioning (channels
// concatenated to the latent, or a replaced latent frame 0). Works on any family's
// models::VelocityModel.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "accel/magcache.h"
#include "models/model.h"
#include "sched/flow_solvers.h"

namespace fisdit::sched {

struct DenoiseInputs {
  Tensor x;                         // host noise [C, F, H, W]
  models::TextContext context;      // the prompt's text side (host)
  models::TextContext context_neg;  // optional (needed when a guidance scale != 1)
  // Host [C_y, F, H, W], optional: conditioning channels concatenated to the latent at every
  // step (I2V: Wan's mask + image latent); the model's in_channels count them.
  Tensor y;
  // Host [C, 1, H, W], optional: TI2V (Wan 2.2 5B) first-frame image latent. It replaces latent
  // frame 0 before the loop and after every solver step, and the DiT gets t = 0 on frame 0's
  // tokens (wan/textimage2video.py).
  Tensor z_image;
};

// What the conditional DiT forward of a step gets. An analysis hook (DenoiseOptions::on_forward)
// sees it before the forward runs and may run the forward itself (with an observer, or other
// plans beside it): a defined returned tensor (device, the model's output) is used as that
// forward's result; an undefined one lets the loop run it as usual.
struct ForwardCall {
  int step = 0;
  models::VelocityModel* model = nullptr;
  const Tensor* input = nullptr;                // device latent (i2v: with y)
  const models::Timestep* time = nullptr;       // host timestep(s)
  const models::TextEmbedding* text = nullptr;  // embed_text of the context
  const accel::FisPlan* plan = nullptr;
  bool step_open = false;
};
using ForwardHook = std::function<Tensor(const ForwardCall&)>;
// Called with the block stack's residual (device [tokens, dim] F32) of every computed DiT pass:
// branch 0 is the conditional (or only) pass, 1 the unconditional one (calibrate --magcache).
using ResidualObserver =
    std::function<void(int step, int branch, bool high_noise_expert, const Tensor& residual)>;

struct DenoiseOptions {
  int steps = 4;
  double shift = 5.0;
  SolverKind solver = SolverKind::Euler;
  // CFG scale; 1 skips the unconditional pass. The official A14B pipelines use one scale for the
  // high-noise steps (timestep >= boundary * 1000) and another for the rest, e.g. t2v 4.0 / 3.0:
  // guidance_high / guidance_low override `guidance` for those steps.
  float guidance = 1.0f;
  std::optional<float> guidance_high, guidance_low;
  // Two experts: the high-noise one runs while t >= boundary * 1000. Default: the model's
  // (ModelInfo::expert_boundary).
  std::optional<float> boundary;
  accel::FisConfig fis;
  ForwardHook on_forward;  // optional, see ForwardCall
  // MagCache (accel/magcache.h): skipped passes reuse the cached block-stack residual; computed
  // passes follow the FIS plan. Off by default.
  accel::MagCacheConfig cache;
  ResidualObserver on_residual;

  float guidance_for(bool high_noise_step) const {
    return high_noise_step ? guidance_high.value_or(guidance) : guidance_low.value_or(guidance);
  }
};

struct StepInfo {
  int step = 0, steps = 0;
  float timestep = 0, sigma = 0, sigma_next = 0;
  bool high_noise_expert = true;
  bool fis_step_open = false;
  double seconds = 0;
  float guidance = 1;      // the CFG scale this step used
  int passes = 1;          // DiT passes of this step (2 with CFG)
  int skipped_passes = 0;  // of them, skipped by MagCache (cached residual applied)
  bool cache_skipped_cond = false, cache_skipped_uncond = false;
  Tensor model_timestep;  // host t the DiT received: [1], or [1, tokens] per token (TI2V)
};
using StepCallback = std::function<void(const StepInfo&)>;

// "  cache skip" (every pass skipped), "  cache skip cond|uncond", or "" for progress lines.
std::string cache_note(const StepInfo& s);

// The sampling loop. `low` may be null (one model for every step). Returns the final latent on
// the host. The solver runs on the host (sched/flow_solvers.h); the DiT gets the solver's
// timesteps. With guidance g != 1: v = uncond + g * (cond - uncond), both sharing one FIS plan.
// With opt.cache enabled, MagCache decides per pass whether to run the blocks (accel/magcache.h).
Tensor denoise(models::VelocityModel& high, models::VelocityModel* low, const DenoiseInputs& in,
               const DenoiseOptions& opt, const StepCallback& on_step = {});

// The same with experts supplied on demand: `expert(true)` is the high-noise expert (or the only
// model), `expert(false)` the low-noise one, asked for at each step; the function may load an
// expert the first time and free the other (the A14B steps use the high-noise expert first,
// then the low-noise one, so one expert at a time fits). `info` describes the experts (their
// shapes must agree); all experts run on one backend.
using ExpertFn = std::function<models::VelocityModel&(bool high_noise)>;
Tensor denoise(const models::ModelInfo& info, const ExpertFn& expert, bool two_experts,
               const DenoiseInputs& in, const DenoiseOptions& opt,
               const StepCallback& on_step = {});

// The settings of a run checked before any model runs: the solver's steps and shift, finite
// guidance scales, a given boundary in [0, 1]. Throws ParamError naming the field (steps, shift,
// guidance, guidance_high, guidance_low, boundary).
void check_options(const DenoiseOptions& opt);

// The expert boundary of a run: opt.boundary, else the model's.
float expert_boundary(const DenoiseOptions& opt, const models::ModelInfo& info);

}  // namespace fisdit::sched
