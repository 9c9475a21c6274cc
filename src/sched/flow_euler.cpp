#include "sched/flow_euler.h"

#include <chrono>

#include "fisdit/error.h"

namespace fisdit::sched {

EulerSchedule flow_euler_schedule(int steps, float shift) {
  if (steps < 1) throw Error("--steps must be >= 1, got " + std::to_string(steps));
  if (!(shift > 0)) throw Error("--shift must be > 0");
  EulerSchedule s;
  for (int k = 0; k <= steps; ++k) {
    // linspace(1000, 0, N+1) in float32: the step is (end - start) / N.
    const float t =
        k == steps ? 0.0f : static_cast<float>(1000.0 - 1000.0 * k / static_cast<double>(steps));
    const float u = t / 1000.0f;
    const float sigma = shift * u / (1.0f + (shift - 1.0f) * u);
    s.sigmas.push_back(sigma);
    if (k < steps) s.timesteps.push_back(sigma * 1000.0f);
  }
  s.sigmas.back() = 0.0f;
  return s;
}

bool use_high_noise_expert(float timestep, float boundary) {
  return timestep >= boundary * 1000.0f;
}

Tensor denoise(wan::WanDiT& high, wan::WanDiT* low, const DenoiseInputs& in,
               const DenoiseOptions& opt, const StepCallback& on_step) {
  const EulerSchedule sched = flow_euler_schedule(opt.steps, opt.shift);
  const wan::WanConfig& cfg = high.config();
  Backend& be = high.backend();
  if (low && &low->backend() != &be) throw Error("both experts must run on one backend");
  if (low && (low->config().in_dim != cfg.in_dim || low->config().out_dim != cfg.out_dim ||
              low->config().num_layers != cfg.num_layers))
    throw Error("the low-noise expert's config does not match the high-noise expert's");
  if (in.x.ndim() != 4) throw Error("x must be [C, F, H, W], got " + shape_str(in.x.shape()));
  const bool cfg_guided = opt.guidance != 1.0f;
  if (cfg_guided && !in.context_neg.defined())
    throw Error("guidance != 1 needs 'context_neg' in the inputs (or guidance 1)");
  const bool i2v = in.y.defined();
  if (i2v && (cfg.model_type != "i2v" || in.y.ndim() != 4 || in.y.dim(1) != in.x.dim(1) ||
              in.y.dim(2) != in.x.dim(2) || in.y.dim(3) != in.x.dim(3)))
    throw Error("'y' " + shape_str(in.y.shape()) + " does not fit latent " +
                shape_str(in.x.shape()) + " for a " + cfg.model_type + " model");
  if (cfg.model_type == "i2v" && !i2v) throw Error("an i2v model needs 'y' in the inputs");
  const int64_t x_channels = in.x.dim(0) + (i2v ? in.y.dim(0) : 0);
  if (x_channels != cfg.in_dim)
    throw Error("latent has " + std::to_string(x_channels) +
                " channels (with y), the model expects " + std::to_string(cfg.in_dim));

  const int frames = static_cast<int>(in.x.dim(1) / cfg.patch_size[0]);
  const accel::FisPlan plan(opt.fis, cfg.num_layers, opt.steps, frames);
  Tensor x = be.upload(in.x, DType::F32);
  Tensor y = i2v ? be.upload(in.y, DType::F32) : Tensor{};
  // Text embeddings per expert (each has its own text_embedding weights).
  struct Texts {
    Tensor cond, uncond;
  };
  auto embed = [&](wan::WanDiT& m) {
    Texts t{m.embed_text(in.context), {}};
    if (cfg_guided) t.uncond = m.embed_text(in.context_neg);
    return t;
  };
  Texts high_text = embed(high), low_text;
  if (low) low_text = embed(*low);

  for (int k = 0; k < opt.steps; ++k) {
    const auto start = std::chrono::steady_clock::now();
    const float timestep = sched.timesteps[static_cast<size_t>(k)];
    const bool use_high = !low || use_high_noise_expert(timestep, opt.boundary);
    wan::WanDiT& model = use_high ? high : *low;
    const Texts& text = use_high ? high_text : low_text;
    const Tensor t = Tensor::from_vector({timestep}, {1});
    const bool open = plan.step_open(k);
    const Tensor input = i2v ? wan::concat_channels(be, x, y) : x;
    Tensor v = model.forward(input, t, text.cond, &plan, open);
    if (cfg_guided) {
      Tensor v_uncond = model.forward(input, t, text.uncond, &plan, open);
      be.sub(v, v_uncond, v);  // cond - uncond
      be.add_scaled(v_uncond, v, opt.guidance);
      v = v_uncond;
    }
    const float sigma = sched.sigmas[static_cast<size_t>(k)];
    const float sigma_next = sched.sigmas[static_cast<size_t>(k) + 1];
    be.add_scaled(x, v, sigma_next - sigma);
    be.synchronize();
    if (on_step) {
      StepInfo info{
          k,
          opt.steps,
          timestep,
          sigma,
          sigma_next,
          use_high,
          open && opt.fis.enabled(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()};
      on_step(info);
    }
  }
  return be.download(x);
}

}  // namespace fisdit::sched
