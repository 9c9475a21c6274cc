// fisdit bench: the DiT denoising loop at real sizes, dense and with FIS presets and MagCache in
// one process, in bf16, fp8 and/or fp8-gemm (--precision). Random bf16 weights of the real shapes
// are drawn directly on the device (no host copy), or real weights come from --model. Per setting:
// ms per step, ms per DiT forward, analytic PFLOP, achieved TFLOP/s, speedup vs the first setting,
// peak device memory, MagCache's skipped steps, and with --compare-dense the rel. L2 of the final
// latent against the dense setting.
// --vae times a VAE instead (bench_vae.cpp).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "bench_util.h"
#include "cli.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "models/flops.h"
#include "models/offload.h"
#include "sched/flow_euler.h"

namespace fisdit::cli {

namespace {

struct BenchArgs {
  std::string model_config, size = kDefaultSize, fis = "off,balanced,fast", mode = "loop";
  std::string precision = "bf16";
  std::optional<std::string> graphs;  // --graphs: off, on or both; unset: the backend's default
  std::optional<std::string> label;
  int frames = kDefaultFrames, warmup = 1, repeats = 3;
  bool random_weights = false, compare_dense = false, attention = false;
  ExpertFlags experts;     // --model
  SamplingFlags sampling;  // --steps, --shift
  DeviceFlags device;
  CacheFlags cache;
  std::optional<std::string> vae;
  std::string vae_op = "decode";
};

struct Setting {
  std::string name;
  accel::FisConfig fis;
  accel::MagCacheConfig cache;
  models::Precision precision = models::Precision::Default;
  std::optional<bool> graphs;  // Backend::set_graphs for this setting; unset: as it is
  bool dense() const { return !fis.enabled() && !cache.enabled; }
};

struct Result {
  std::string setting;
  double ms_step = 0, ms_forward = 0, ms_sparse = 0, ms_dense = 0;
  double ms_host = 0;  // median host time to queue a forward (Timings::host_ms)
  int sparse_steps = 0, dense_steps = 0, skipped_steps = 0;
  std::optional<double> rel_l2;  // final latent vs the dense setting's (--compare-dense)
  double pflop = 0, executed_pflop = 0, tflops = 0;
  Memory mem, weights;  // the run's; the weights' as it ran (fp8 rows: quantized)
};

// Every --cache mode with every --fis preset, the cache-off ones first, for each --precision in
// its order (bf16 first: the weights are quantized in place after it; fp8 and fp8-gemm share the
// quantized matrices). Rows of an fp8 precision are named with "+fp8" or "+fp8-gemm".
std::vector<Setting> bench_settings(const BenchArgs& a, int steps) {
  std::vector<accel::FisConfig> presets;
  for (const auto& name : split_commas(a.fis)) presets.push_back(accel::fis_preset(name));
  if (presets.empty()) throw Error("--fis names no setting");
  const std::vector<std::string> cache_modes = split_commas(a.cache.mode);
  if (cache_modes.empty()) throw Error("--cache names no mode");
  std::vector<models::Precision> precisions;
  for (const auto& name : split_commas(a.precision)) {
    const models::Precision p = parse_precision(name);
    if (std::find(precisions.begin(), precisions.end(), p) != precisions.end())
      throw Error("--precision: '" + name + "' is listed twice");
    if (!precisions.empty() && p == models::Precision::Default)
      throw Error("--precision: bf16 must come first (the weights are quantized in place for fp8)");
    precisions.push_back(p);
  }
  if (precisions.empty()) throw Error("--precision names no precision");
  std::vector<Setting> settings;
  for (const models::Precision precision : precisions) {
    std::vector<Setting> group;
    const std::string suffix = precision == models::Precision::Default
                                   ? ""
                                   : std::string("+") + models::precision_name(precision);
    for (const auto& mode : cache_modes) {
      const accel::MagCacheConfig cache = a.cache.resolve(mode, /*ratios_later=*/true);
      note_ratio_resampling(cache.ratios.cond.empty() ? accel::MagCacheConfig{} : cache, steps);
      for (const auto& fis : presets)
        group.push_back(
            {(cache.enabled ? (fis.enabled() ? fis.name + "+mc" : "magcache") : fis.name) + suffix,
             fis, cache, precision, std::nullopt});
    }
    std::stable_partition(group.begin(), group.end(),
                          [](const Setting& st) { return !st.cache.enabled; });
    settings.insert(settings.end(), group.begin(), group.end());
  }
  if (!a.graphs) return settings;
  // --graphs: each setting once per mode, side by side; "+graphs" names the recorded ones.
  std::vector<bool> modes;
  for (const auto& name : split_commas(*a.graphs)) {
    if (name != "off" && name != "on")
      throw Error("--graphs: each of off or on, got '" + name + "'");
    if (std::find(modes.begin(), modes.end(), name == "on") != modes.end())
      throw Error("--graphs: '" + name + "' is listed twice");
    modes.push_back(name == "on");
  }
  if (modes.empty()) throw Error("--graphs names no mode");
  std::vector<Setting> out;
  for (const Setting& st : settings)
    for (const bool on : modes) {
      out.push_back(st);
      out.back().graphs = on;
      if (on) out.back().name += "+graphs";
    }
  return out;
}

// Checks what the settings need of the run; returns whether MagCache's ratios are to be
// calibrated on the dense setting.
bool check_settings(const BenchArgs& a, const std::vector<Setting>& settings) {
  const bool has_dense =
      std::any_of(settings.begin(), settings.end(), [](const Setting& st) { return st.dense(); });
  const bool any_cache = std::any_of(settings.begin(), settings.end(),
                                     [](const Setting& st) { return st.cache.enabled; });
  if ((any_cache || a.compare_dense) && a.mode != "loop")
    throw Error("--cache magcache and --compare-dense need --mode loop");
  if (a.compare_dense && !has_dense)
    throw Error("--compare-dense needs the dense setting: 'off' in --fis and in --cache");
  const bool calibrate = any_cache && !a.cache.ratios && !a.cache.force;
  if (calibrate && !has_dense)
    throw Error(
        "--cache magcache without --magcache-ratios calibrates on the dense setting: add "
        "'off' to --fis and --cache, or give --magcache-ratios FILE or --magcache-force");
  return calibrate;
}

// What every setting's runs share: the model, the noise, the text and the schedule.
struct DitBench {
  explicit DitBench(const BenchArgs& a) : args(a) {}
  const BenchArgs& args;
  int width = 0, height = 0, steps = 0;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<models::VelocityModel> dit;
  Memory weights_mem;
  int64_t plan_frames = 0, tokens = 0;
  std::string label;
  Tensor x0;  // host noise
  models::TextContext text_in;
  models::TextEmbedding text;  // of text_in, made again when the precision changes the weights
  sched::EulerSchedule schedule;

  const models::ModelInfo& info() const { return dit->info(); }
  Tensor forward(const Tensor& x, const accel::FisPlan& plan, int k, bool open,
                 const models::BlockStackResidual& stack = {}) const {
    const size_t i = static_cast<size_t>(k);
    models::Timestep time{Tensor::from_vector({schedule.timesteps[i]}, {1}), std::nullopt};
    if (info().meanflow)
      time.r = i + 1 < schedule.timesteps.size() ? schedule.timesteps[i + 1] : 0.0f;
    return dit->forward(x, time, text, {&plan, open, {}, stack});
  }
  // The latent channels of x (the leading ones; the conditioning channels that follow, I2V's,
  // stay as drawn).
  static Tensor latent_of(const Tensor& x, int64_t channels) {
    return x.reshape({x.dim(0), x.numel() / x.dim(0)})
        .slice_rows(0, channels)
        .reshape({channels, x.dim(1), x.dim(2), x.dim(3)});
  }
  // The Euler step k: x += (sigma_{k+1} - sigma_k) v.
  void step(Tensor& x, const Tensor& v, int k) const {
    const size_t i = static_cast<size_t>(k);
    Tensor latent = latent_of(x, v.dim(0));
    backend->add_scaled(latent, v, schedule.sigmas[i + 1] - schedule.sigmas[i]);
  }
};

// The model's description without its weights: --model's, or --model-config's.
models::ModelInfo bench_model_info(const BenchArgs& a) {
  return !a.experts.model.empty()
             ? models::probe_model(a.experts.model)
             : models::family_for_config(a.model_config).config_info(a.model_config);
}

// The DiT's tokens at latent grid `g`: the frames a FIS plan covers, times one frame's patches.
int64_t dit_tokens(const models::ModelInfo& info, const models::LatentGrid& g) {
  return info.plan_frames(g) * (g.height / info.patch[1]) * (g.width / info.patch[2]);
}

// The name in the RESULT lines: --label, else the model.
std::string bench_label(const BenchArgs& a) {
  return a.label.value_or(a.experts.model.empty() ? a.model_config : a.experts.model);
}

// Loads (or draws) the weights and makes the inputs, with a status line.
void load_dit_bench(DitBench& b, double shift, const std::vector<Setting>& settings) {
  const BenchArgs& a = b.args;
  b.backend = a.device.backend();
  if (b.backend->memory_budget().limit >= 0) {  // --gpu-memory-limit: room for the activations
    const models::ModelInfo probed = bench_model_info(a);
    const auto any = [&](auto pred) { return std::any_of(settings.begin(), settings.end(), pred); };
    models::reserve_activations(*b.backend, probed, probed.latent_grid(b.width, b.height, a.frames),
                                any([](const Setting& st) { return st.fis.enabled(); }),
                                any([](const Setting& st) { return st.cache.enabled; }));
  }
  const auto t_load = std::chrono::steady_clock::now();
  b.dit = !a.experts.model.empty()
              ? models::load_model(a.experts.model, *b.backend, {}, nullptr, settings[0].precision)
              : models::family_for_config(a.model_config)
                    .random(a.model_config, *b.backend, settings[0].precision);
  b.backend->synchronize();
  const models::ModelInfo& info = b.info();
  b.weights_mem = memory(*b.backend);
  const models::LatentGrid g = info.latent_grid(b.width, b.height, a.frames);
  b.plan_frames = info.plan_frames(g);
  b.tokens = dit_tokens(info, g);
  b.label = bench_label(a);
  char line[512];
  std::snprintf(
      line, sizeof line,
      "bench %s: %d blocks, dim %d; %dx%d, %d frames -> latent %dx%dx%d, %lld tokens; "
      "%d steps; weights ready in %.1f s%s",
      b.label.c_str(), info.num_blocks, info.dim, b.width, b.height, a.frames,
      static_cast<int>(g.frames), static_cast<int>(g.height), static_cast<int>(g.width),
      static_cast<long long>(b.tokens), b.steps, seconds_since(t_load),
      b.weights_mem.known
          ? (", " + std::to_string(b.weights_mem.in_use_gib).substr(0, 6) + " GiB on the device")
                .c_str()
          : "");
  status(line);
  if (const std::string placed = b.dit->placement(); !placed.empty())
    status("  --gpu-memory-limit " + std::to_string(a.device.gpu_memory_limit).substr(0, 5) +
           " GiB: " + placed);
  b.x0 = b.backend->download(b.backend->random_normal(
      {info.in_channels, g.frames, g.height, g.width}, DType::F32, 0, 1, 1));
  const Tensor context = b.backend->download(
      b.backend->random_normal({info.text_tokens, info.text_dim}, DType::F32, 0, 1, 2));
  // HunyuanVideo 1.5 I2V: the first frame's vision tokens; no glyph tokens (a prompt without
  // quoted text).
  b.text_in = models::TextContext(context);
  if (info.task == models::Task::I2V && info.text_extra.count("vision")) {
    const auto [tokens, width] = info.text_extra.at("vision");
    b.text_in.extra["vision"] =
        b.backend->download(b.backend->random_normal({tokens, width}, DType::F32, 0, 1, 3));
  }
  b.text = b.dit->embed_text(b.text_in);
  b.schedule = sched::flow_euler_schedule(b.steps, static_cast<float>(shift));
}

// MagCache's ratios from this model: one untimed dense loop (as calibrate --magcache records).
accel::MagRatios calibrate_ratios(const DitBench& b, const accel::FisPlan& plan, Tensor& x) {
  accel::MagRatios calibrated;
  calibrated.cond.assign(static_cast<size_t>(b.steps), 1.0);
  std::vector<double> prev;
  Tensor residual;
  for (int k = 0; k < b.steps; ++k) {
    const Tensor v = b.forward(x, plan, k, false, {nullptr, &residual});
    const std::vector<double> norms = accel::token_norms(b.backend->download(residual));
    if (!prev.empty())
      calibrated.cond[static_cast<size_t>(k)] = accel::magnitude_ratio(norms, prev);
    prev = norms;
    b.step(x, v, k);
  }
  std::string list;
  for (double g : calibrated.cond) list += " " + std::to_string(g).substr(0, 7);
  status("  MagCache ratios from an untimed dense loop:" + list);
  return calibrated;
}

// The timed runs of one setting.
struct Timings {
  std::vector<double> loops, sparse_ms, dense_ms, fwd_ms;
  // Host milliseconds until each timed forward returned, its GPU work queued, not waited for:
  // near the forward's own time when launching the work is what limits it.
  std::vector<double> host_ms;
  double flops_sparse = 0, flops_dense = 0;  // executed by one forward of each type
  std::vector<bool> skipped;                 // per step, in the last loop (MagCache)
};

// --mode per-step-type: one forward of each step type per repeat.
Timings time_step_types(const DitBench& b, const accel::FisPlan& plan, const Result& r,
                        const Tensor& x) {
  Timings t;
  t.skipped.assign(static_cast<size_t>(b.steps), false);
  Timer timer(*b.backend);
  const auto time_forward = [&](int k, bool open, std::vector<double>& ms, double& flops) {
    const double before = b.backend->flops().total();
    timer.start();
    const auto queued = std::chrono::steady_clock::now();
    b.forward(x, plan, k, open);
    t.host_ms.push_back(since_ms(queued));
    ms.push_back(timer.stop_ms());
    flops = b.backend->flops().total() - before;
  };
  for (int rep = 0; rep < b.args.repeats; ++rep) {
    if (r.sparse_steps) time_forward(0, true, t.sparse_ms, t.flops_sparse);
    if (r.dense_steps) time_forward(b.steps - 1, false, t.dense_ms, t.flops_dense);
  }
  return t;
}

// --mode loop: whole denoising loops, MagCache deciding per step whether the blocks run.
Timings time_loops(const DitBench& b, const accel::FisPlan& plan, const std::vector<bool>& opens,
                   const accel::MagCacheConfig& cache_cfg, Tensor& x) {
  Timings t;
  Timer timer(*b.backend);
  const std::vector<int> one_phase(static_cast<size_t>(b.steps), 0);
  for (int rep = 0; rep < b.args.repeats; ++rep) {
    x = b.backend->upload(b.x0, DType::F32);
    double loop = 0;
    std::unique_ptr<accel::MagCache> cache;
    if (cache_cfg.enabled) cache = std::make_unique<accel::MagCache>(cache_cfg, one_phase);
    t.skipped.assign(static_cast<size_t>(b.steps), false);
    for (int k = 0; k < b.steps; ++k) {
      const bool open = opens[static_cast<size_t>(k)];
      timer.start();
      models::BlockStackResidual stack;
      const bool skip = cache && cache->skip(k, 0);
      if (skip)
        stack.apply = &cache->residual(0);
      else if (cache)
        stack.keep = &cache->residual(0);
      t.skipped[static_cast<size_t>(k)] = skip;
      const auto queued = std::chrono::steady_clock::now();
      const Tensor v = b.forward(x, plan, k, open, stack);
      t.host_ms.push_back(since_ms(queued));
      const double f = timer.stop_ms();
      timer.start();
      b.step(x, v, k);
      loop += f + timer.stop_ms();
      if (!skip) (open ? t.sparse_ms : t.dense_ms).push_back(f);
      t.fwd_ms.push_back(f);
    }
    t.loops.push_back(loop);
  }
  return t;
}

// Times, skipped steps and FLOPs of a setting from its timed runs.
void summarize(const DitBench& b, const accel::FisConfig& fis, const Timings& t, Result& r) {
  const BenchArgs& a = b.args;
  r.skipped_steps = static_cast<int>(std::count(t.skipped.begin(), t.skipped.end(), true));
  r.ms_sparse = median(t.sparse_ms);
  r.ms_dense = median(t.dense_ms);
  r.ms_host = median(t.host_ms);
  if (a.mode == "per-step-type") {
    const double total = r.sparse_steps * r.ms_sparse + r.dense_steps * r.ms_dense;
    r.ms_step = total / b.steps;
    r.ms_forward = r.ms_step;
  } else {
    r.ms_step = median(t.loops) / b.steps;
    double sum = 0;
    for (double f : t.fwd_ms) sum += f;
    r.ms_forward = sum / static_cast<double>(t.fwd_ms.size());
  }
  const models::RunFlops rf =
      models::run_flops(b.info(), b.width, b.height, a.frames, b.steps, fis);
  // MagCache: skipped steps run no block (their embeddings and head are left out here).
  double planned = 0;
  for (int k = 0; k < b.steps; ++k)
    if (!t.skipped[static_cast<size_t>(k)]) planned += rf.per_step_planned[static_cast<size_t>(k)];
  r.pflop = planned / 1e15;
  r.executed_pflop = a.mode == "loop"
                         ? b.backend->flops().total() / 1e15 / a.repeats
                         : (r.sparse_steps * t.flops_sparse + r.dense_steps * t.flops_dense) / 1e15;
  r.tflops = planned / (r.ms_step * b.steps / 1e3) / 1e12;
}

// One setting: MagCache's ratios first where they come from this (dense) setting, the warm-up,
// then the timed repeats. `dense_latent` keeps the dense setting's final latent.
Result run_setting(const DitBench& b, const Setting& setting, bool calibrate,
                   accel::MagRatios& calibrated, Tensor& dense_latent) {
  const BenchArgs& a = b.args;
  const accel::FisPlan plan(setting.fis, b.info().num_blocks, b.steps,
                            static_cast<int>(b.plan_frames));
  accel::MagCacheConfig cache_cfg = setting.cache;
  if (cache_cfg.enabled && calibrate) cache_cfg.ratios = calibrated;
  Result r;
  r.setting = setting.name;
  std::vector<bool> opens;
  for (int k = 0; k < b.steps; ++k) {
    const bool open = setting.fis.enabled() && plan.step_open(k);
    (open ? r.sparse_steps : r.dense_steps)++;
    opens.push_back(open);
  }
  if (setting.graphs) b.backend->set_graphs(*setting.graphs);
  Tensor x = b.backend->upload(b.x0, DType::F32);
  if (setting.dense() && calibrate && calibrated.cond.empty())
    calibrated = calibrate_ratios(b, plan, x);
  // Warm-up: every step type once per --warmup (graph builds, heuristics, pool growth); with
  // Backend::graphs once more, which records each (a forward's first run is op by op).
  const int warmups = a.warmup + (a.warmup > 0 && b.backend->graphs() ? 1 : 0);
  for (int w = 0; w < warmups; ++w) {
    if (r.sparse_steps) b.forward(x, plan, 0, true);
    if (r.dense_steps) b.forward(x, plan, b.steps - 1, false);
  }
  b.backend->synchronize();
  b.backend->reset_memory_peak();
  b.backend->flops().reset();
  take_op_profile();  // drop the warm-up's share
  const Backend::GraphCounts graphs_before = b.backend->graph_counts();
  const Timings t = a.mode == "per-step-type" ? time_step_types(b, plan, r, x)
                                              : time_loops(b, plan, opens, cache_cfg, x);
  if (a.compare_dense) {
    const Tensor final_latent =
        b.backend->download(DitBench::latent_of(x, b.info().latent_channels));
    if (setting.dense() && !dense_latent.defined()) dense_latent = final_latent;  // the first
    if (dense_latent.defined()) r.rel_l2 = rel_l2(final_latent, dense_latent);
  }
  summarize(b, setting.fis, t, r);
  r.mem = memory(*b.backend);
  r.weights = b.weights_mem;
  if (const std::string profile = take_op_profile(); !profile.empty())
    std::fprintf(stderr, "%s: %s", r.setting.c_str(), profile.c_str());
  char line[512];
  std::snprintf(line, sizeof line,
                "  %-12s %.1f ms/step (sparse step %.1f ms x%d, dense step %.1f ms x%d, "
                "skipped x%d), %.3f PFLOP, %.0f TFLOP/s; %.2f ms to queue a forward",
                r.setting.c_str(), r.ms_step, r.ms_sparse, r.sparse_steps, r.ms_dense,
                r.dense_steps, r.skipped_steps, r.pflop, r.tflops, r.ms_host);
  status(line);
  if (b.backend->graphs()) {
    const Backend::GraphCounts& now = b.backend->graph_counts();
    status("  " + r.setting + ": " + std::to_string(now.replayed - graphs_before.replayed) +
           " timed forwards replayed from recorded graphs, " +
           std::to_string(now.recorded - graphs_before.recorded) + " recorded while timed");
  }
  return r;
}

// The table and the RESULT lines (the first twelve fields as before MagCache; its skipped steps
// and the rel. L2 appended).
void print_results(const DitBench& b, const std::vector<Result>& results) {
  const BenchArgs& a = b.args;
  const double base = results.front().ms_step;
  std::printf(
      "\nfisdit bench: %s, %dx%d, %d frames (%lld tokens), %d steps, %s, device %s, "
      "mode %s, warmup %d, repeats %d (median)\n",
      b.label.c_str(), b.width, b.height, a.frames, static_cast<long long>(b.tokens), b.steps,
      ((a.experts.model.empty() ? "random " : "real ") +
       std::string(dtype_name(b.backend->weight_dtype())) + " weights")
          .c_str(),
      b.backend->name().c_str(), a.mode.c_str(), a.warmup, a.repeats);
  int w = 12;  // the setting column: as wide as its longest name
  for (const Result& r : results) w = std::max(w, static_cast<int>(r.setting.size()));
  std::printf("%-*s %10s %10s %10s %10s %8s %8s %8s %9s %9s %7s %9s\n", w, "setting", "ms/step",
              "ms/DiT", "sparse ms", "dense ms", "PFLOP", "TFLOP/s", "speedup", "peak GiB",
              "act GiB", "skipped", "rel L2");
  for (const Result& r : results) {
    const std::string peak = gib_text(r.mem.known, r.mem.peak_gib);
    const std::string act = gib_text(r.mem.known, r.mem.peak_gib - r.weights.in_use_gib);
    char err[32] = "-";
    if (r.rel_l2) std::snprintf(err, sizeof err, "%.4g", *r.rel_l2);
    std::printf("%-*s %10.1f %10.1f %10.1f %10.1f %8.4f %8.0f %7.2fx %9s %9s %4d/%-2d %9s\n", w,
                r.setting.c_str(), r.ms_step, r.ms_forward, r.ms_sparse, r.ms_dense, r.pflop,
                r.tflops, base / r.ms_step, peak.c_str(), act.c_str(), r.skipped_steps, b.steps,
                err);
  }
  for (const Result& r : results)
    std::printf(
        "RESULT|%s|%dx%d|%d|%s|%.1f|%.1f|%.4f|%.0f|%.2f|%s|%.4f|%d|%s\n", b.label.c_str(), b.width,
        b.height, a.frames, r.setting.c_str(), r.ms_step, r.ms_forward, r.pflop, r.tflops,
        base / r.ms_step, r.mem.known ? std::to_string(r.mem.peak_gib).substr(0, 6).c_str() : "-",
        r.executed_pflop, r.skipped_steps, r.rel_l2 ? std::to_string(*r.rel_l2).c_str() : "-");
  std::fflush(stdout);
}

void run_dit_bench(const BenchArgs& a) {
  if (a.sampling.steps.value_or(1) < 1 || a.repeats < 1 || a.warmup < 0)
    throw Error("--steps and --repeats must be >= 1, --warmup >= 0");
  const sched::DenoiseOptions sampling = a.sampling.resolve();  // --steps, --shift
  if (a.mode != "loop" && a.mode != "per-step-type")
    throw Error("--mode must be loop or per-step-type");
  if (a.experts.model.empty() == a.model_config.empty())
    throw Error("give exactly one of --model PATH or --model-config NAME");
  if (!a.model_config.empty() && !a.random_weights)
    throw Error("--model-config needs --random-weights (or use --model PATH)");
  DitBench b(a);
  b.steps = sampling.steps;
  parse_size(a.size, b.width, b.height);
  const std::vector<Setting> settings = bench_settings(a, b.steps);
  const bool calibrate = check_settings(a, settings);
  load_dit_bench(b, sampling.shift, settings);
  std::vector<Result> results;
  Tensor dense_latent;  // the dense setting's final latent (host), for --compare-dense
  accel::MagRatios calibrated;
  models::Precision precision = settings.front().precision;  // the weights' as loaded
  for (const Setting& setting : settings) {
    if (setting.precision != precision) {
      apply_precision(*b.dit, precision = setting.precision);
      b.text = b.dit->embed_text(b.text_in);
      b.backend->synchronize();
      b.weights_mem = memory(*b.backend);
      if (b.weights_mem.known)
        status("  weights now " + std::to_string(b.weights_mem.in_use_gib).substr(0, 6) +
               " GiB on the device");
    }
    results.push_back(run_setting(b, setting, calibrate, calibrated, dense_latent));
  }
  print_results(b, results);
}

// --attention: the blocks' self-attention alone, at the tokens of --size/--frames and the heads of
// the model, on random bf16 q, k, v (unit normal: logits of unit spread), once per --precision in
// one process: median ms of --repeats calls after --warmup, TFLOP/s (4 Lq Lk heads head_dim per
// call), and the output's rel. L2 against the first precision's.
void run_attention_bench(const BenchArgs& a) {
  if (a.model_config.empty() == a.experts.model.empty())
    throw Error("--attention takes the shapes of --model-config NAME or --model PATH (one)");
  if (a.repeats < 1 || a.warmup < 0) throw Error("--repeats must be >= 1, --warmup >= 0");
  std::vector<models::Precision> precisions;
  for (const auto& name : split_commas(a.precision)) precisions.push_back(parse_precision(name));
  if (precisions.empty()) throw Error("--precision names no precision");
  int width = 0, height = 0;
  parse_size(a.size, width, height);
  const models::ModelInfo info = bench_model_info(a);
  const int64_t tokens = dit_tokens(info, info.latent_grid(width, height, a.frames));
  const int64_t heads = info.num_heads, d = info.dim / std::max(1, info.num_heads);
  const std::string label = bench_label(a);
  std::unique_ptr<Backend> backend = a.device.backend();
  const Tensor q = backend->random_normal({tokens, heads, d}, backend->activation_dtype(), 0, 1, 1);
  const Tensor k = backend->random_normal({tokens, heads, d}, backend->activation_dtype(), 0, 1, 2);
  const Tensor v = backend->random_normal({tokens, heads, d}, backend->activation_dtype(), 0, 1, 3);
  const double flops = 4.0 * static_cast<double>(tokens) * static_cast<double>(tokens) *
                       static_cast<double>(heads) * static_cast<double>(d);
  std::printf(
      "\nfisdit bench --attention: %s, %dx%d, %d frames: %lld tokens, %lld heads x %lld, "
      "%.1f TFLOP per call, device %s\n",
      label.c_str(), width, height, a.frames, static_cast<long long>(tokens),
      static_cast<long long>(heads), static_cast<long long>(d), flops / 1e12,
      backend->name().c_str());
  std::printf("| precision | ms | TFLOP/s | rel L2 vs %s |\n| --- | ---: | ---: | ---: |\n",
              models::precision_name(precisions.front()));
  // On the GPU, fp8 runs once per fp8 attention kernel (FISDIT_FP8_ATTENTION, unless it is set):
  // the own Hopper kernel's variants, cuDNN's, then auto (the faster of cuDNN's and bf16 for
  // this shape, timed in its first call: a warm-up, unless --warmup 0).
  struct Row {
    models::Precision precision;
    const char* kernel;  // FISDIT_FP8_ATTENTION for this row, or nullptr
  };
  std::vector<Row> rows;
  const bool both_kernels = backend->name() == "cuda" && !std::getenv("FISDIT_FP8_ATTENTION");
  for (const models::Precision p : precisions)
    if (p == models::Precision::Fp8 && both_kernels) {
      for (const char* kernel :
           {"own-poly", "own-mufu", "own-ws", "own-ws-mufu", "own-ws224", "cudnn", "auto"})
        rows.push_back({p, kernel});
    } else {
      rows.push_back({p, nullptr});
    }
  Tensor first;
  for (const Row& row : rows) {
    const models::Precision p = row.precision;
    if (row.kernel) setenv("FISDIT_FP8_ATTENTION", row.kernel, 1);
    const std::string name =
        std::string(models::precision_name(p)) + (row.kernel ? std::string(" ") + row.kernel : "");
    Tensor out = backend->empty({tokens, heads, d}, backend->activation_dtype());
    const auto call = [&] {
      if (p == models::Precision::Fp8)
        backend->attention_fp8(q, k, v, out);
      else
        backend->attention(q, k, v, out);  // fp8-gemm leaves the attention in bf16
    };
    for (int i = 0; i < a.warmup; ++i) call();
    backend->synchronize();
    std::vector<double> ms;
    for (int i = 0; i < a.repeats; ++i) {
      const auto start = std::chrono::steady_clock::now();
      call();
      backend->synchronize();
      ms.push_back(seconds_since(start) * 1e3);
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    const Tensor host = backend->download(out);
    if (!first.defined()) first = host;
    const double err = rel_l2(host, first);
    if (row.kernel) unsetenv("FISDIT_FP8_ATTENTION");
    std::printf("| %s | %.2f | %.1f | %.3g |\n", name.c_str(), median,
                flops / (median * 1e-3) / 1e12, err);
    std::printf("ATTENTION|%s|%s|%lld|%lld|%lld|%.3f|%.1f|%.4g\n", label.c_str(), name.c_str(),
                static_cast<long long>(tokens), static_cast<long long>(heads),
                static_cast<long long>(d), median, flops / (median * 1e-3) / 1e12, err);
    std::fflush(stdout);
  }
}

void run_bench(const BenchArgs& a) {
  if (a.attention) {
    if (a.vae) throw Error("--attention and --vae each time one part: give one");
    return run_attention_bench(a);
  }
  if (!a.vae) return run_dit_bench(a);
  if (!a.experts.model.empty() || !a.model_config.empty())
    throw Error("--vae times the VAE alone: drop --model / --model-config");
  if (a.repeats < 1 || a.warmup < 0) throw Error("--repeats must be >= 1, --warmup >= 0");
  VaeBenchOptions o;
  parse_size(a.size, o.width, o.height);
  if (a.vae_op != "decode" && a.vae_op != "encode")
    throw Error("--vae-op must be decode or encode, got '" + a.vae_op + "'");
  o.vae = *a.vae;
  o.encode = a.vae_op == "encode";
  o.device = a.device;
  o.frames = a.frames;
  o.warmup = a.warmup;
  o.repeats = a.repeats;
  o.label = a.label;
  run_vae_bench(o);
}

}  // namespace

void register_bench(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench", "time the DiT denoising loop at real sizes, dense and with FIS, in one process");
  cmd->add_option("--model-config", args->model_config,
                  "preset name or config.json for --random-weights");
  add_expert_flags(cmd, args->experts,
                   {.model_help = "real weights: .safetensors file or model directory"});
  cmd->add_flag("--random-weights", args->random_weights,
                "random bf16 weights of the real shapes, made on the device");
  cmd->add_option("--size", args->size, "video WIDTHxHEIGHT")->capture_default_str();
  cmd->add_option("--frames", args->frames, "video frames (4k+1)")->capture_default_str();
  add_sampling_flags(
      cmd, args->sampling,
      {.solver = false, .guidance = false, .guidance_per_expert = false, .boundary = false});
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
  add_device_flags(cmd, args->device, "cuda", "cuda or cpu");
  add_memory_limit_flag(cmd, args->device);
  add_vae_precision_flag(cmd, args->device);
  cmd->add_option("--label", args->label, "name printed in the RESULT lines");
  cmd->add_option("--graphs", args->graphs,
                  "off, on or off,on: each setting's forwards op by op and/or recorded once as "
                  "CUDA graphs and replayed (\"+graphs\" rows); default: FISDIT_CUDA_GRAPHS's");
  CLI::Option* vae = cmd->add_option(
      "--vae", args->vae,
      "wan2.1, wan2.2 or hunyuan15: time VAE decode of a --size/--frames latent instead "
      "of the DiT (random weights of the released VAE's shapes)");
  cmd->add_option("--vae-op", args->vae_op,
                  "with --vae: decode (a random latent) or encode (a random --size/--frames "
                  "video, as I2V and TI2V do with the first frame)")
      ->capture_default_str()
      ->needs(vae);
  cmd->add_flag("--attention", args->attention,
                "time the blocks' self-attention alone at --size/--frames with the heads of "
                "--model-config or --model (random bf16 q, k, v), once per --precision");
  add_cache_flags(cmd, args->cache, /*list=*/true);
  add_precision_flag(cmd, args->precision, /*list=*/true);
  cmd->add_flag("--compare-dense", args->compare_dense,
                "rel. L2 of every setting's final latent against the first dense setting's (fis "
                "off, cache off, the first --precision; same noise, same process). bench has no "
                "VAE: no PSNR/SSIM here");
  cmd->callback([args] { run_bench(*args); });
}

}  // namespace fisdit::cli
