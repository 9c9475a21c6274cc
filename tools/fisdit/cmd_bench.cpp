// fisdit bench: the DiT denoising loop at real sizes, dense and with FIS presets and MagCache in
// one process. Random bf16 weights of the real shapes are drawn directly on the device (no host
// copy), or real weights come from --model. Per setting: ms per step, ms per DiT forward, analytic
// PFLOP, achieved TFLOP/s, speedup vs the first setting, peak device memory, MagCache's skipped
// steps, and with --compare-dense the rel. L2 of the final latent against the dense setting.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>

#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "models/flops.h"
#include "models/wan/vae.h"
#include "sched/flow_euler.h"
#ifdef FISDIT_WITH_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace fisdit::cli {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

// Device timing: CUDA events on the backend's stream, else a host clock after synchronize().
class Timer {
 public:
  explicit Timer(Backend& b) : backend_(b) {
#ifdef FISDIT_WITH_CUDA
    if (b.device() == Device::CUDA) events_ = std::make_unique<cuda::EventTimer>(b);
#endif
  }
  void start() {
#ifdef FISDIT_WITH_CUDA
    if (events_) return events_->start();
#endif
    backend_.synchronize();
    t0_ = std::chrono::steady_clock::now();
  }
  double stop_ms() {
#ifdef FISDIT_WITH_CUDA
    if (events_) return events_->stop_ms();
#endif
    backend_.synchronize();
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_)
        .count();
  }

 private:
  Backend& backend_;
  std::chrono::steady_clock::time_point t0_;
#ifdef FISDIT_WITH_CUDA
  std::unique_ptr<cuda::EventTimer> events_;
#endif
};

struct Memory {
  bool known = false;
  double in_use_gib = 0, peak_gib = 0;
};
Memory memory(const Backend& b) {
  Memory m;
  const int64_t in_use = b.memory_in_use(), peak = b.memory_peak();
  m.known = in_use >= 0 && peak >= 0;  // device backends; the CPU does not track memory
  if (m.known) {
    m.in_use_gib = static_cast<double>(in_use) / 1073741824.0;
    m.peak_gib = static_cast<double>(peak) / 1073741824.0;
  }
  return m;
}

struct Setting {
  std::string name;
  accel::FisConfig fis;
  accel::MagCacheConfig cache;
  bool dense() const { return !fis.enabled() && !cache.enabled; }
};

struct Result {
  std::string setting;
  double ms_step = 0, ms_forward = 0, ms_sparse = 0, ms_dense = 0;
  int sparse_steps = 0, dense_steps = 0, skipped_steps = 0;
  double rel_l2 = -1;  // final latent vs the dense setting's (--compare-dense); -1: not compared
  double pflop = 0, executed_pflop = 0, tflops = 0, speedup = 0;
  Memory mem;
};

// fisdit bench --vae wan2.1|wan2.2 [--vae-op encode]: VAE decode of a random latent of the real
// size (or encode of a random video) with random weights of the released VAE's shapes (made on the
// device): ms per latent frame and peak memory.
void run_vae_bench(const std::string& which, bool encode, const std::string& device, int width,
                   int height, int frames, int warmup, int repeats, const std::string& label_arg) {
  wan::VaeConfig cfg;  // Wan2.1_VAE.pth: dim 96, z 16, dim_mult 1,2,4,4, 2 res blocks
  if (which == "wan2.2") {
    cfg.version = 22;  // Wan2.2_VAE.pth: dim 160, decoder 256, z 48
    cfg.dim = 160;
    cfg.dec_dim = 256;
    cfg.z_dim = 48;
  } else if (which != "wan2.1") {
    throw fisdit::Error("--vae must be wan2.1 or wan2.2, got '" + which + "'");
  }
  const int64_t s = cfg.spatial_stride();
  if (width % s || height % s || frames < 1 || (frames - 1) % 4)
    throw fisdit::Error("--size must be a multiple of " + std::to_string(s) +
                        " and --frames 4k+1 for the " + which + " VAE");
  auto backend = make_backend(device);
  const auto weights = [&](const std::string& key, const Shape& shape) -> Tensor {
    const uint64_t seed = std::hash<std::string>{}(key);
    if (key.size() > 5 && key.compare(key.size() - 5, 5, "gamma") == 0)
      return backend->random_normal(shape, DType::F32, 1.0f, 0.1f, seed);
    if (shape.size() == 1) return backend->random_normal(shape, DType::F32, 0.0f, 0.1f, seed);
    const double fan_in = static_cast<double>(shape_numel(shape) / shape[0]);
    return backend->random_normal(shape, DType::F32, 0.0f,
                                  static_cast<float>(1.0 / std::sqrt(fan_in)), seed);
  };
  wan::WanVae vae(cfg, weights, backend.get());
  backend->synchronize();
  const Memory weights_mem = memory(*backend);
  const int64_t lat_f = 1 + (frames - 1) / 4, lat_h = height / s, lat_w = width / s;
  // The input: a latent [z, F', h, w] (decode) or a video [3, T, H, W] (encode), uniform random
  // (decode: unit variance; encode: in [-1, 1]); the values do not change the time.
  const Shape in_shape =
      encode ? Shape{3, frames, height, width} : Shape{cfg.z_dim, lat_f, lat_h, lat_w};
  Tensor input = Tensor::zeros(in_shape);
  uint64_t r = 12345;
  const float spread = encode ? 2.0f : 3.4641f;
  for (int64_t i = 0; i < input.numel(); ++i) {
    r = r * 6364136223846793005ULL + 1442695040888963407ULL;
    input.f32()[i] = (static_cast<float>(r >> 40) / 16777216.0f - 0.5f) * spread;
  }
  const auto run = [&](const Tensor& x, const wan::VaeProgressFn& progress) {
    return encode ? vae.encode(x, nullptr, progress) : vae.decode(x, nullptr, progress);
  };
  const std::string op = encode ? "encode" : "decode";
  const std::string label = label_arg.empty() ? which + "-vae-" + op : label_arg;
  char line[512];
  std::snprintf(line, sizeof line, "bench %s: %s %s %s on %s", label.c_str(), op.c_str(),
                encode ? "video" : "latent", shape_str(input.shape()).c_str(),
                backend->name().c_str());
  status(line);
  // Warm-up on the first two chunks (decode: latent frames 0-1; encode: video frames 0-4): every
  // later chunk has the shapes of the second, so this picks all conv algorithms at a fraction of
  // the full run.
  const int64_t warm_frames = std::min<int64_t>(encode ? 5 : 2, in_shape[1]);
  Tensor warm = Tensor::zeros({in_shape[0], warm_frames, in_shape[2], in_shape[3]});
  const int64_t plane = in_shape[2] * in_shape[3];
  for (int64_t c = 0; c < in_shape[0]; ++c)
    std::copy(input.f32() + c * in_shape[1] * plane,
              input.f32() + (c * in_shape[1] + warm_frames) * plane,
              warm.f32() + c * warm_frames * plane);
  for (int i = 0; i < warmup; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run(warm, {});
    std::snprintf(line, sizeof line,
                  "  warmup %s of %lld frame(s) %.1f s (the first picks the conv algorithms)",
                  op.c_str(), static_cast<long long>(warm_frames),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    status(line);
  }
  std::vector<double> totals, firsts, rests;
  backend->reset_memory_peak();
#ifdef FISDIT_WITH_CUDA
  cuda::op_profile_report(/*reset=*/true);  // FISDIT_CUDA_PROFILE: count the timed runs only
#endif
  for (int i = 0; i < repeats; ++i) {
    std::vector<double> chunk_ms;
    auto t = std::chrono::steady_clock::now();
    const auto t0 = t;
    run(input, [&](int k, int n, int64_t in_frames, int64_t out_frames) {
      const auto now = std::chrono::steady_clock::now();
      chunk_ms.push_back(std::chrono::duration<double, std::milli>(now - t).count());
      t = now;
      std::snprintf(line, sizeof line, "  chunk %d/%d: %lld -> %lld frame(s): %.1f ms", k + 1, n,
                    static_cast<long long>(in_frames), static_cast<long long>(out_frames),
                    chunk_ms.back());
      status(line);
    });
    totals.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    firsts.push_back(chunk_ms.front());
    if (chunk_ms.size() > 1) {
      double sum = 0;
      for (size_t k = 1; k < chunk_ms.size(); ++k) sum += chunk_ms[k];
      rests.push_back(sum / static_cast<double>(chunk_ms.size() - 1));
    }
  }
  const Memory mem = memory(*backend);
  const double total = median(totals);
#ifdef FISDIT_WITH_CUDA
  const std::string profile = cuda::op_profile_report(/*reset=*/true);
  if (!profile.empty()) std::fprintf(stderr, "%s", profile.c_str());
#endif
  const char* tf32 = std::getenv("FISDIT_VAE_TF32");
  const char* precision = backend->device() == Device::CPU   ? "fp32"
                          : tf32 && std::string(tf32) == "0" ? "fp32 tensors, fp32 convs"
                                                             : "fp32 tensors, TF32 convs";
  std::printf(
      "\nfisdit bench --vae: %s, %s, latent %s <-> %dx%d, %d frames, random fp32 weights, device "
      "%s (%s), warmup %d, repeats %d (median)\n",
      label.c_str(), op.c_str(), shape_str({cfg.z_dim, lat_f, lat_h, lat_w}).c_str(), width, height,
      frames, backend->name().c_str(), precision, warmup, repeats);
  std::printf("%12s %14s %16s %16s %9s %12s\n", (op + " ms").c_str(), "ms/lat.frame",
              "first chunk ms", "later chunk ms", "peak GiB", "weights GiB");
  char peak[32] = "-", wgt[32] = "-";
  if (mem.known) {
    std::snprintf(peak, sizeof peak, "%.2f", mem.peak_gib);
    std::snprintf(wgt, sizeof wgt, "%.2f", weights_mem.in_use_gib);
  }
  std::printf("%12.1f %14.1f %16.1f %16.1f %9s %12s\n", total, total / lat_f, median(firsts),
              rests.empty() ? 0.0 : median(rests), peak, wgt);
  std::printf("RESULT|%s|%dx%d|%d|vae-%s|%.1f|%.1f|%s\n", label.c_str(), width, height, frames,
              op.c_str(), total, total / lat_f, peak);
  std::fflush(stdout);
}

}  // namespace

void register_bench(CLI::App& app) {
  struct Args {
    std::string model_config, model, size = "1280x720", fis = "off,balanced,fast", device = "cuda",
                                     mode = "loop", label;
    int frames = 81, steps = 4, warmup = 1, repeats = 3;
    float shift = 5.0f;
    bool random_weights = false, compare_dense = false;
    CacheFlags cache;
    std::string vae, vae_op = "decode";
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "time the DiT denoising loop at real sizes, dense and with FIS, in one process");
  cmd->add_option("--model-config", args->model_config,
                  "preset name or config.json for --random-weights");
  cmd->add_option("--model", args->model, "real weights: .safetensors file or model directory");
  cmd->add_flag("--random-weights", args->random_weights,
                "random bf16 weights of the real shapes, made on the device");
  cmd->add_option("--size", args->size, "video WIDTHxHEIGHT")->capture_default_str();
  cmd->add_option("--frames", args->frames, "video frames (4k+1)")->capture_default_str();
  cmd->add_option("--steps", args->steps, "denoising steps")->capture_default_str();
  cmd->add_option("--shift", args->shift, "flow shift")->capture_default_str();
  cmd->add_option("--fis", args->fis, "comma-separated FIS presets (off, balanced, fast, FILE)")
      ->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "untimed forwards per step type before timing")
      ->capture_default_str();
  cmd->add_option("--repeats", args->repeats, "timed repeats; the median is reported")
      ->capture_default_str();
  cmd->add_option("--mode", args->mode,
                  "loop: time whole denoising loops; per-step-type: time one forward per step "
                  "type (sparse, dense) and compose the loop from them")
      ->capture_default_str();
  cmd->add_option("--device", args->device, "cuda or cpu")->capture_default_str();
  cmd->add_option("--label", args->label, "name printed in the RESULT lines");
  CLI::Option* vae_opt = cmd->add_option(
      "--vae", args->vae,
      "wan2.1 or wan2.2: time VAE decode of a --size/--frames latent instead of the "
      "DiT (random weights of the released VAE's shapes)");
  cmd->add_option("--vae-op", args->vae_op,
                  "with --vae: decode (a random latent) or encode (a random --size/--frames "
                  "video, as I2V and TI2V do with the first frame)")
      ->capture_default_str()
      ->needs(vae_opt);
  add_cache_flags(cmd, args->cache, /*list=*/true);
  cmd->add_flag("--compare-dense", args->compare_dense,
                "rel. L2 of every setting's final latent against the dense setting's (fis off, "
                "cache off; same noise, same process). bench has no VAE: no PSNR/SSIM here");
  cmd->callback([args] {
    if (!args->vae.empty()) {
      if (!args->model.empty() || !args->model_config.empty())
        throw fisdit::Error("--vae times the VAE alone: drop --model / --model-config");
      if (args->repeats < 1 || args->warmup < 0)
        throw fisdit::Error("--repeats must be >= 1, --warmup >= 0");
      int w = 0, h = 0;
      parse_size(args->size, w, h);
      if (args->vae_op != "decode" && args->vae_op != "encode")
        throw fisdit::Error("--vae-op must be decode or encode, got '" + args->vae_op + "'");
      run_vae_bench(args->vae, args->vae_op == "encode", args->device, w, h, args->frames,
                    args->warmup, args->repeats, args->label);
      return;
    }
    if (args->steps < 1 || args->repeats < 1 || args->warmup < 0)
      throw fisdit::Error("--steps and --repeats must be >= 1, --warmup >= 0");
    if (args->mode != "loop" && args->mode != "per-step-type")
      throw fisdit::Error("--mode must be loop or per-step-type");
    if (args->model.empty() == args->model_config.empty())
      throw fisdit::Error("give exactly one of --model PATH or --model-config NAME");
    if (!args->model_config.empty() && !args->random_weights)
      throw fisdit::Error("--model-config needs --random-weights (or use --model PATH)");
    int width = 0, height = 0;
    parse_size(args->size, width, height);
    // Settings: every --cache mode with every --fis preset, the cache-off ones first.
    std::vector<accel::FisConfig> presets;
    for (const auto& name : split(args->fis, ',')) presets.push_back(accel::fis_preset(name));
    if (presets.empty()) throw fisdit::Error("--fis names no setting");
    const std::vector<std::string> cache_modes = split(args->cache.mode, ',');
    if (cache_modes.empty()) throw fisdit::Error("--cache names no mode");
    std::vector<Setting> settings;
    for (const auto& mode : cache_modes) {
      const accel::MagCacheConfig cache = args->cache.resolve(mode, /*ratios_later=*/true);
      note_ratio_resampling(cache.ratios.cond.empty() ? accel::MagCacheConfig{} : cache,
                            args->steps);
      for (const auto& fis : presets)
        settings.push_back(
            {cache.enabled ? (fis.enabled() ? fis.name + "+mc" : "magcache") : fis.name, fis,
             cache});
    }
    std::stable_partition(settings.begin(), settings.end(),
                          [](const Setting& st) { return !st.cache.enabled; });
    const auto dense_it = std::find_if(settings.begin(), settings.end(),
                                       [](const Setting& st) { return st.dense(); });
    const bool any_cache = std::any_of(settings.begin(), settings.end(),
                                       [](const Setting& st) { return st.cache.enabled; });
    if ((any_cache || args->compare_dense) && args->mode != "loop")
      throw fisdit::Error("--cache magcache and --compare-dense need --mode loop");
    if (args->compare_dense && dense_it == settings.end())
      throw fisdit::Error("--compare-dense needs the dense setting: 'off' in --fis and in --cache");
    const bool calibrate = any_cache && !args->cache.ratios && !args->cache.force;
    if (calibrate && dense_it == settings.end())
      throw fisdit::Error(
          "--cache magcache without --magcache-ratios calibrates on the dense setting: add "
          "'off' to --fis and --cache, or give --magcache-ratios FILE or --magcache-force");

    auto backend = make_backend(args->device);
    const auto t_load = std::chrono::steady_clock::now();
    std::unique_ptr<models::VelocityModel> dit =
        !args->model.empty()
            ? models::load_model(args->model, *backend)
            : models::family_for_config(args->model_config).random(args->model_config, *backend);
    backend->synchronize();
    const models::ModelInfo& info = dit->info();
    const Memory weights_mem = memory(*backend);
    const models::LatentGrid g = info.latent_grid(width, height, args->frames);
    const auto& p = info.patch;
    const int64_t gf = info.plan_frames(g), tokens = gf * (g.height / p[1]) * (g.width / p[2]);
    const std::string label = !args->label.empty()
                                  ? args->label
                                  : (args->model.empty() ? args->model_config : args->model);
    char line[512];
    std::snprintf(line, sizeof line,
                  "bench %s: %d blocks, dim %d; %dx%d, %d frames -> latent %dx%dx%d, %lld tokens; "
                  "%d steps; weights ready in %.1f s%s",
                  label.c_str(), info.num_blocks, info.dim, width, height, args->frames,
                  static_cast<int>(g.frames), static_cast<int>(g.height), static_cast<int>(g.width),
                  static_cast<long long>(tokens), args->steps,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count(),
                  weights_mem.known ? (", " + std::to_string(weights_mem.in_use_gib).substr(0, 6) +
                                       " GiB on the device")
                                          .c_str()
                                    : "");
    status(line);

    const Tensor x0 = backend->download(backend->random_normal(
        {info.in_channels, g.frames, g.height, g.width}, DType::F32, 0, 1, 1));
    const Tensor context = backend->download(
        backend->random_normal({info.text_tokens, info.text_dim}, DType::F32, 0, 1, 2));
    const Tensor text = dit->embed_text(context);
    const sched::EulerSchedule schedule = sched::flow_euler_schedule(args->steps, args->shift);
    Timer timer(*backend);

    std::vector<Result> results;
    Tensor dense_latent;  // the dense setting's final latent (host), for --compare-dense
    accel::MagRatios calibrated;
    for (const Setting& setting : settings) {
      const accel::FisConfig& fis = setting.fis;
      const accel::FisPlan plan(fis, info.num_blocks, args->steps, static_cast<int>(gf));
      accel::MagCacheConfig cache_cfg = setting.cache;
      if (cache_cfg.enabled && calibrate) cache_cfg.ratios = calibrated;
      const std::vector<int> one_phase(static_cast<size_t>(args->steps), 0);
      Result r;
      r.setting = setting.name;
      std::vector<bool> skip_pattern(static_cast<size_t>(args->steps), false);
      std::vector<bool> opens;
      for (int k = 0; k < args->steps; ++k) {
        const bool open = fis.enabled() && plan.step_open(k);
        (open ? r.sparse_steps : r.dense_steps)++;
        opens.push_back(open);
      }
      Tensor x = backend->upload(x0, DType::F32);
      auto forward = [&](int k, bool open, const models::BlockStackResidual& stack = {}) {
        const size_t i = static_cast<size_t>(k);
        models::Timestep time{Tensor::from_vector({schedule.timesteps[i]}, {1}), std::nullopt};
        if (info.meanflow)
          time.r = i + 1 < schedule.timesteps.size() ? schedule.timesteps[i + 1] : 0.0f;
        return dit->forward(x, time, text, {&plan, open, {}, stack});
      };
      if (setting.dense() && calibrate) {
        // MagCache's ratios from this model: one untimed dense loop (calibrate --magcache).
        std::vector<double> prev;
        calibrated.cond.assign(static_cast<size_t>(args->steps), 1.0);
        Tensor residual;
        for (int k = 0; k < args->steps; ++k) {
          const Tensor v = forward(k, false, {nullptr, &residual});
          const std::vector<double> norms = accel::token_norms(backend->download(residual));
          if (!prev.empty())
            calibrated.cond[static_cast<size_t>(k)] = accel::magnitude_ratio(norms, prev);
          prev = norms;
          backend->add_scaled(x, v,
                              schedule.sigmas[static_cast<size_t>(k) + 1] -
                                  schedule.sigmas[static_cast<size_t>(k)]);
        }
        std::string list;
        for (double g : calibrated.cond) list += " " + std::to_string(g).substr(0, 7);
        status("  MagCache ratios from an untimed dense loop:" + list);
      }
      // Warm-up: every step type once per --warmup (graph builds, heuristics, pool growth).
      for (int w = 0; w < args->warmup; ++w) {
        if (r.sparse_steps) forward(0, true);
        if (r.dense_steps) forward(args->steps - 1, false);
      }
      backend->synchronize();
      backend->reset_memory_peak();
      backend->flops().reset();
#ifdef FISDIT_WITH_CUDA
      cuda::op_profile_report(/*reset=*/true);  // drop the warm-up's share
#endif
      std::vector<double> loops, sparse_ms, dense_ms, fwd_ms;
      double flops_sparse = 0, flops_dense = 0;  // executed by one forward of each type
      for (int rep = 0; rep < args->repeats; ++rep) {
        if (args->mode == "per-step-type") {
          if (r.sparse_steps) {
            const double before = backend->flops().total();
            timer.start();
            forward(0, true);
            sparse_ms.push_back(timer.stop_ms());
            flops_sparse = backend->flops().total() - before;
          }
          if (r.dense_steps) {
            const double before = backend->flops().total();
            timer.start();
            forward(args->steps - 1, false);
            dense_ms.push_back(timer.stop_ms());
            flops_dense = backend->flops().total() - before;
          }
          continue;
        }
        x = backend->upload(x0, DType::F32);
        double loop = 0;
        std::unique_ptr<accel::MagCache> cache;
        if (cache_cfg.enabled) cache = std::make_unique<accel::MagCache>(cache_cfg, one_phase);
        int skipped = 0;
        skip_pattern.assign(static_cast<size_t>(args->steps), false);
        for (int k = 0; k < args->steps; ++k) {
          timer.start();
          models::BlockStackResidual stack;
          const bool skip = cache && cache->skip(k, 0);
          if (skip)
            stack.apply = &cache->residual(0);
          else if (cache)
            stack.keep = &cache->residual(0);
          skipped += skip;
          skip_pattern[static_cast<size_t>(k)] = skip;
          const Tensor v = forward(k, opens[static_cast<size_t>(k)], stack);
          const double f = timer.stop_ms();
          timer.start();
          backend->add_scaled(x, v,
                              schedule.sigmas[static_cast<size_t>(k) + 1] -
                                  schedule.sigmas[static_cast<size_t>(k)]);
          loop += f + timer.stop_ms();
          if (!skip) (opens[static_cast<size_t>(k)] ? sparse_ms : dense_ms).push_back(f);
          fwd_ms.push_back(f);
        }
        loops.push_back(loop);
        r.skipped_steps = skipped;
      }
      if (args->compare_dense) {
        const Tensor final_latent = backend->download(x);
        if (setting.dense()) dense_latent = final_latent;
        if (dense_latent.defined()) r.rel_l2 = rel_l2(final_latent, dense_latent);
      }
      r.ms_sparse = median(sparse_ms);
      r.ms_dense = median(dense_ms);
      if (args->mode == "per-step-type") {
        const double total = r.sparse_steps * r.ms_sparse + r.dense_steps * r.ms_dense;
        r.ms_step = total / args->steps;
        r.ms_forward = r.ms_step;
      } else {
        r.ms_step = median(loops) / args->steps;
        double sum = 0;
        for (double f : fwd_ms) sum += f;
        r.ms_forward = sum / static_cast<double>(fwd_ms.size());
      }
      const models::RunFlops rf =
          models::run_flops(info, width, height, args->frames, args->steps, fis);
      // MagCache: skipped steps run no block (their embeddings and head are left out here).
      double planned = 0;
      for (int k = 0; k < args->steps; ++k)
        if (!skip_pattern[static_cast<size_t>(k)])
          planned += rf.per_step_planned[static_cast<size_t>(k)];
      r.pflop = planned / 1e15;
      r.executed_pflop = args->mode == "loop"
                             ? backend->flops().total() / 1e15 / args->repeats
                             : (r.sparse_steps * flops_sparse + r.dense_steps * flops_dense) / 1e15;
      r.tflops = planned / (r.ms_step * args->steps / 1e3) / 1e12;
      r.mem = memory(*backend);
      results.push_back(r);
#ifdef FISDIT_WITH_CUDA
      const std::string profile = cuda::op_profile_report(/*reset=*/true);
      if (!profile.empty()) std::fprintf(stderr, "%s: %s", r.setting.c_str(), profile.c_str());
#endif
      std::snprintf(line, sizeof line,
                    "  %-12s %.1f ms/step (sparse step %.1f ms x%d, dense step %.1f ms x%d, "
                    "skipped x%d), %.3f PFLOP, %.0f TFLOP/s",
                    r.setting.c_str(), r.ms_step, r.ms_sparse, r.sparse_steps, r.ms_dense,
                    r.dense_steps, r.skipped_steps, r.pflop, r.tflops);
      status(line);
    }

    const double base = results.front().ms_step;
    std::printf(
        "\nfisdit bench: %s, %dx%d, %d frames (%lld tokens), %d steps, %s, device %s, "
        "mode %s, warmup %d, repeats %d (median)\n",
        label.c_str(), width, height, args->frames, static_cast<long long>(tokens), args->steps,
        ((args->model.empty() ? "random " : "real ") +
         std::string(dtype_name(backend->weight_dtype())) + " weights")
            .c_str(),
        backend->name().c_str(), args->mode.c_str(), args->warmup, args->repeats);
    std::printf("%-12s %10s %10s %10s %10s %8s %8s %8s %9s %9s %7s %9s\n", "setting", "ms/step",
                "ms/DiT", "sparse ms", "dense ms", "PFLOP", "TFLOP/s", "speedup", "peak GiB",
                "act GiB", "skipped", "rel L2");
    for (const Result& r : results) {
      char peak[32] = "-", act[32] = "-";
      if (r.mem.known) {
        std::snprintf(peak, sizeof peak, "%.2f", r.mem.peak_gib);
        std::snprintf(act, sizeof act, "%.2f", r.mem.peak_gib - weights_mem.in_use_gib);
      }
      char err[32] = "-";
      if (r.rel_l2 >= 0) std::snprintf(err, sizeof err, "%.4g", r.rel_l2);
      std::printf("%-12s %10.1f %10.1f %10.1f %10.1f %8.4f %8.0f %7.2fx %9s %9s %4d/%-2d %9s\n",
                  r.setting.c_str(), r.ms_step, r.ms_forward, r.ms_sparse, r.ms_dense, r.pflop,
                  r.tflops, base / r.ms_step, peak, act, r.skipped_steps, args->steps, err);
    }
    // The first twelve fields as before; MagCache's skipped steps and the rel. L2 appended.
    for (const Result& r : results)
      std::printf("RESULT|%s|%dx%d|%d|%s|%.1f|%.1f|%.4f|%.0f|%.2f|%s|%.4f|%d|%s\n", label.c_str(),
                  width, height, args->frames, r.setting.c_str(), r.ms_step, r.ms_forward, r.pflop,
                  r.tflops, base / r.ms_step,
                  r.mem.known ? std::to_string(r.mem.peak_gib).substr(0, 6).c_str() : "-",
                  r.executed_pflop, r.skipped_steps,
                  r.rel_l2 >= 0 ? std::to_string(r.rel_l2).c_str() : "-");
    std::fflush(stdout);
  });
}

}  // namespace fisdit::cli
