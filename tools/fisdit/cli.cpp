#include "cli.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <regex>
#include <sstream>

#include "fisdit/error.h"
#include "models/family.h"
#include "sched/flow_solvers.h"

namespace fisdit::cli {

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : sep) + item;
  return out;
}

void add_device_flags(CLI::App* cmd, DeviceFlags& f, const std::string& default_device,
                      const std::string& help) {
  f.device = default_device;
  cmd->add_option("--device", f.device, help)->capture_default_str();
}

std::unique_ptr<Backend> DeviceFlags::backend() const {
  return make_backend(device, {gpu_memory_limit, vae_precision});
}

void add_vae_precision_flag(CLI::App* cmd, DeviceFlags& f) {
  cmd->add_option("--vae-precision", f.vae_precision,
                  "the VAE's activations and conv weights: bf16 (the default on cuda; fp32 "
                  "accumulation) or fp32 (the cpu's only one; TF32 convolutions on cuda unless "
                  "FISDIT_VAE_TF32=0)")
      ->check(CLI::IsMember({"bf16", "fp32"}));
}

void add_memory_limit_flag(CLI::App* cmd, DeviceFlags& f) {
  cmd->add_option("--gpu-memory-limit", f.gpu_memory_limit,
                  "GiB of GPU memory to use at most (0: all): DiT blocks that do not fit beside "
                  "the activations stream from host memory, ahead of use")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
}

void add_precision_flag(CLI::App* cmd, std::string& precision, bool list) {
  cmd->add_option("--precision", precision,
                  std::string(list ? "comma-separated, each of: " : "") +
                      "bf16 (the backend's own: bf16 on cuda, fp32 on cpu), fp8-gemm (the DiT "
                      "block matrices in E4M3, per output channel, activations per token) or "
                      "fp8 (those and the self-attention: q, k, v in E4M3, one scale per "
                      "tensor). cuda needs FP8 tensor cores, compute capability 9.0+; the cpu "
                      "backend emulates them as the reference")
      ->capture_default_str();
}

models::Precision parse_precision(const std::string& name) {
  if (const std::optional<models::Precision> p = models::parse_precision(name)) return *p;
  throw Error("--precision: must be bf16, fp8 or fp8-gemm, got '" + name + "'");
}

std::string precision_text(models::Precision precision) {
  if (precision == models::Precision::Default) return "";
  return std::string("precision ") + models::precision_name(precision) +
         ": block matrices E4M3 per output channel" +
         (precision == models::Precision::Fp8 ? ", self-attention q, k, v E4M3 per tensor" : "");
}

void apply_precision(models::VelocityModel& dit, models::Precision precision) {
  if (precision == models::Precision::Default) return;
  const auto start = std::chrono::steady_clock::now();
  dit.set_precision(precision);
  dit.backend().synchronize();  // the quantization kernels' time, not their launch
  char line[64];
  std::snprintf(line, sizeof line, " (%.2f s)", seconds_since(start));
  status(precision_text(precision) + line);
}

void add_sampling_flags(CLI::App* cmd, SamplingFlags& f, const SamplingFlagSet& set) {
  const sched::DenoiseOptions d;
  // The default in the help: "=4", or where fisdit.json gives it.
  const auto add = [&](const std::string& flag, auto& value, const std::string& help,
                       const std::string& fallback) {
    if (set.defaults_from_model)
      cmd->add_option(flag, value, help + " (default: fisdit.json, else " + fallback + ")");
    else
      cmd->add_option(flag, value, help)->default_str(fallback);
  };
  add("--steps", f.steps, "denoising steps", std::to_string(d.steps));
  if (set.shift) add("--shift", f.shift, "flow shift", CLI::detail::to_string(d.shift));
  if (set.solver)
    add("--solver", f.solver,
        "euler (the Lightning recipe), or the official Wan solvers unipc and dpm++",
        sched::solver_name(d.solver));
  if (set.guidance)
    add("--guidance", f.guidance,
        "CFG scale; 1 = no guidance, else a second (unconditional) DiT forward per step",
        CLI::detail::to_string(d.guidance));
  if (set.guidance_per_expert) {
    cmd->add_option("--guidance-high", f.guidance_high,
                    "CFG scale of the high-noise steps (timestep >= boundary*1000); default "
                    "--guidance");
    cmd->add_option("--guidance-low", f.guidance_low,
                    "CFG scale of the low-noise steps; default --guidance");
  }
  if (set.boundary)
    cmd->add_option("--boundary", f.boundary,
                    "expert switch: high-noise while timestep >= boundary*1000 (default: the "
                    "release's or model's, Wan t2v 0.875, i2v 0.9)");
}

sched::DenoiseOptions SamplingFlags::resolve() const {
  sched::DenoiseOptions o;
  if (solver) o.solver = sched::parse_solver(*solver);
  o.steps = steps.value_or(o.steps);
  o.shift = shift.value_or(o.shift);
  o.guidance = guidance.value_or(o.guidance);
  o.guidance_high = guidance_high;
  o.guidance_low = guidance_low;
  o.boundary = boundary;
  sched::check_options(o);  // ParamError: main names the flag
  return o;
}

void add_expert_flags(CLI::App* cmd, ExpertFlags& f, const ExpertFlagSet& set) {
  f.style = set.lora;
  CLI::Option* model = cmd->add_option("--model", f.model, set.model_help);
  if (set.model_required) model->required();
  if (set.model_low_help) cmd->add_option("--model-low", f.model_low, *set.model_low_help);
  if (set.lora == LoraStyle::None) return;
  const bool low = set.model_low_help.has_value();
  const auto add_files = [&](const std::string& flag, std::vector<std::string>& paths,
                             const std::string& which) {
    cmd->add_option(flag, paths,
                    "LoRA (.safetensors or .pth) merged into the " + which +
                        " weights at load time; repeatable")
        ->allow_extra_args(false);
  };
  add_files("--lora", f.lora, low ? "(high-noise) DiT" : "DiT");
  if (set.lora == LoraStyle::OneStrength) {
    if (low) add_files("--lora-low", f.lora_low, "low-noise DiT (--model-low)");
    cmd->add_option("--lora-strength", f.lora_strength, "strength of every LoRA")
        ->expected(1)
        ->default_str("1");
    return;
  }
  const auto add_strengths = [&](const std::string& flag, std::vector<float>& strengths) {
    cmd->add_option(flag + "-strength", strengths,
                    "LoRA strength (default 1): once for every " + flag + ", or once per " + flag)
        ->allow_extra_args(false);
  };
  add_strengths("--lora", f.lora_strength);
  if (low) {
    add_files("--lora-low", f.lora_low, "low-noise DiT (--model-low)");
    add_strengths("--lora-low", f.lora_low_strength);
  }
}

namespace {
// `paths` with `strengths`: none (all 1), one for every file or, `per_file`, one per file.
std::vector<LoraSpec> lora_specs(const std::vector<std::string>& paths,
                                 const std::vector<float>& strengths, const std::string& flag,
                                 const std::string& strength_flag, bool per_file) {
  if (per_file && paths.empty() && !strengths.empty())
    throw Error(strength_flag + " is given without " + flag);
  if (strengths.size() > 1 && strengths.size() != paths.size())
    throw Error(strength_flag + " is given " + std::to_string(strengths.size()) + " times for " +
                std::to_string(paths.size()) + " " + flag + " files (give it once, or once per " +
                flag + ")");
  for (float s : strengths)
    if (!std::isfinite(s)) throw Error(strength_flag + " must be a finite number");
  std::vector<LoraSpec> out;
  for (size_t i = 0; i < paths.size(); ++i)
    out.push_back({paths[i], strengths.empty() ? 1.0f : strengths[strengths.size() > 1 ? i : 0]});
  return out;
}
}  // namespace

std::vector<LoraSpec> ExpertFlags::loras() const {
  return lora_specs(lora, lora_strength, "--lora", "--lora-strength", style == LoraStyle::PerFile);
}

std::vector<LoraSpec> ExpertFlags::loras_low() const {
  if (!lora_low.empty() && model_low.empty())
    throw Error("--lora-low needs --model-low (the low-noise expert it changes)");
  if (style == LoraStyle::OneStrength)
    return lora_specs(lora_low, lora_strength, "--lora-low", "--lora-strength", false);
  return lora_specs(lora_low, lora_low_strength, "--lora-low", "--lora-low-strength", true);
}

void add_fis_flags(CLI::App* cmd, FisFlags& f) {
  cmd->add_option("--fis", f.preset, "FIS preset: off, balanced, fast, or a preset JSON file")
      ->capture_default_str();
  cmd->add_option("--fis-stride", f.stride, "anchor stride s (1 = dense)");
  cmd->add_option("--fis-head", f.head, "leading blocks kept dense");
  cmd->add_option("--fis-tail", f.tail, "trailing blocks kept dense");
  cmd->add_option("--fis-dense-last-steps", f.dense_last_steps, "final steps kept dense");
  cmd->add_option("--fis-granularity", f.granularity, "module or block");
  cmd->add_option("--fis-reconstruct", f.reconstruct, "linear or delta (block granularity)");
  cmd->add_flag("--fis-no-interleave", f.no_interleave,
                "same anchor offset in every block (ablation)");
}

accel::FisConfig FisFlags::resolve() const {
  accel::FisConfig c = accel::fis_preset(preset);
  const bool overridden =
      stride || head || tail || dense_last_steps || granularity || reconstruct || no_interleave;
  if (stride) c.stride = *stride;
  if (head) c.head = *head;
  if (tail) c.tail = *tail;
  if (dense_last_steps) c.dense_last_steps = *dense_last_steps;
  if (granularity) c.granularity = accel::parse_granularity(*granularity);
  if (reconstruct) c.reconstruct = accel::parse_reconstruct(*reconstruct);
  if (no_interleave) c.interleave = false;
  if (overridden) c.name = "custom";
  c.validate();
  return c;
}

void add_cache_flags(CLI::App* cmd, CacheFlags& f, bool list) {
  cmd->add_option("--cache", f.mode,
                  list ? "comma-separated step-cache modes, each run with every --fis setting: "
                         "off, magcache"
                       : "step cache: off, or magcache (skip steps, reuse the DiT's cached "
                         "block-stack residual)")
      ->capture_default_str();
  cmd->add_option("--magcache-thresh", f.threshold,
                  "MagCache bound on the accumulated error (default 0.04; 0 never skips)");
  cmd->add_option("--magcache-K", f.max_skips,
                  "MagCache: most consecutive skipped steps (default 2)");
  cmd->add_option("--magcache-retention", f.retention,
                  "MagCache: fraction of each expert's first steps never skipped (default 0.2; "
                  "at least one step)");
  cmd->add_option("--magcache-ratios", f.ratios,
                  "calibrated magnitude ratios, JSON from fisdit calibrate --magcache");
  cmd->add_flag("--magcache-force", f.force,
                "skip every eligible step up to K in a row, ignoring the error bound (few-step "
                "models; needs no ratios)");
}

accel::MagCacheConfig CacheFlags::resolve(const std::string& cache_mode, bool ratios_later) const {
  accel::MagCacheConfig c;
  if (cache_mode == "off") {
    const char* given = threshold   ? "--magcache-thresh"
                        : max_skips ? "--magcache-K"
                        : retention ? "--magcache-retention"
                        : ratios    ? "--magcache-ratios"
                        : force     ? "--magcache-force"
                                    : nullptr;
    if (given && mode == "off") throw Error(std::string(given) + " needs --cache magcache");
    return c;
  }
  if (cache_mode != "magcache")
    throw Error("--cache must be off or magcache, got '" + cache_mode + "'");
  c.enabled = true;
  if (threshold) c.threshold = *threshold;
  if (max_skips) c.max_skips = *max_skips;
  if (retention) c.retention = *retention;
  c.force = force;
  if (ratios) c.ratios = accel::load_mag_ratios(*ratios);
  if (ratios_later && c.ratios.cond.empty()) {
    c.ratios.cond = {1.0};  // a stand-in for validation; the caller replaces it
    c.validate();
    c.ratios = {};
  } else {
    c.validate();
  }
  return c;
}

void note_ratio_resampling(const accel::MagCacheConfig& cache, int steps) {
  if (cache.enabled && !cache.force && cache.ratios.steps() != steps)
    status("MagCache ratios are for " + std::to_string(cache.ratios.steps()) +
           " steps: resampled to " + std::to_string(steps) + " by nearest index");
}

void parse_size(const std::string& text, int& width, int& height) {
  static const std::regex re(R"((\d{1,6})x(\d{1,6}))");
  std::smatch m;
  if (!std::regex_match(text, m, re))
    throw Error("--size must be WIDTHxHEIGHT (e.g. 1280x720), got '" + text + "'");
  width = std::stoi(m[1]);
  height = std::stoi(m[2]);
}

Tensor read_input(const SafetensorsFile& file, const std::string& name, bool required) {
  // Fixture files keep their inputs under "input." (tests/data/wan): accept both.
  const std::string stored =
      file.contains(name) || !file.contains("input." + name) ? name : "input." + name;
  if (!file.contains(stored)) {
    if (required) throw Error(file.path() + ": required input tensor '" + name + "' is missing");
    return {};
  }
  const TensorInfo* info = file.find(stored);
  if (!is_float(info->dtype) && info->dtype != DType::I64 && info->dtype != DType::I32)
    throw Error(file.path() + ": input tensor '" + stored + "' has dtype " +
                std::string(dtype_name(info->dtype)) + ", expected a float type");
  return file.tensor_f32(stored);
}

sched::DenoiseInputs read_denoise_inputs(const SafetensorsFile& file) {
  sched::DenoiseInputs in{read_input(file, "x", true), read_input(file, "context", true),
                          read_input(file, "context_neg", false), read_input(file, "y", false),
                          read_input(file, "z_image", false)};
  // Further text-side streams (HunyuanVideo 1.5: the glyph states "byt5" and the first frame's
  // "vision" states), "<name>_neg" for the negative prompt; the negative side reuses "vision"
  // (one first frame) when it has none of its own.
  for (const char* name : {"byt5", "vision"}) {
    if (Tensor t = read_input(file, name, false); t.defined()) in.context.extra[name] = t;
    Tensor neg = read_input(file, std::string(name) + "_neg", false);
    if (!neg.defined() && std::string(name) == "vision" && in.context.extra.count(name))
      neg = in.context.extra[name];
    if (neg.defined() && in.context_neg.defined()) in.context_neg.extra[name] = neg;
  }
  return in;
}

std::unique_ptr<models::VelocityModel> load_model_reporting(const std::string& path,
                                                            Backend& backend,
                                                            const std::string& role,
                                                            const std::vector<LoraSpec>& loras,
                                                            models::Precision precision) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> report;
  auto dit = models::load_model(path, backend, loras, &report, precision);
  backend.synchronize();
  char line[640];
  const std::string fp8 = precision_text(precision);
  std::snprintf(line, sizeof line, "loaded %s %s: %s%s in %.2f s", role.c_str(), path.c_str(),
                report.empty() ? "" : report.front().c_str(),
                fp8.empty() ? "" : ("; " + fp8).c_str(), seconds_since(start));
  status(line);
  for (size_t i = 1; i < report.size(); ++i) status("  " + report[i]);
  return dit;
}

void write_tensor(const std::string& path, const std::string& name, const Tensor& t) {
  write_safetensors(path, {{name, t}}, {{"producer", "fisdit"}});
  status("wrote " + path + " ('" + name + "' " + shape_str(t.shape()) + ")");
}

std::string flag_of(const std::string& param) {
  std::string flag = "--" + param;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

void status(const std::string& line) { std::cerr << line << std::endl; }

}  // namespace fisdit::cli
