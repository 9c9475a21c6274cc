#pragma once
// Shared pieces of the fisdit subcommands. Each command is a file with register_<command> (its
// flags) and run_<command> (the work). Flag groups several commands take are structs here, their
// fields named as the flags are (underscores for dashes): a library ParamError names a field,
// and flag_of turns it back into the flag.
#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "accel/magcache.h"
#include "backend/backend.h"
#include "core/tensor.h"
#include "io/safetensors.h"
#include "models/lora.h"
#include "sched/denoise.h"

namespace fisdit::pipeline {
struct ModelDefaults;
struct GenerateOptions;
}  // namespace fisdit::pipeline

namespace fisdit::cli {

// The video when neither a flag nor the model's fisdit.json gives one (Wan 2.2 A14B at 720p).
inline constexpr const char* kDefaultSize = "1280x720";
inline constexpr int kDefaultFrames = 81;

// --device, with the command's default ("cpu" for the tools, default_device() for generate and
// quality, "cuda" for bench) and, where it says more, the command's help.
// --gpu-memory-limit (where add_memory_limit_flag adds it): the backend's memory limit.
// --vae-precision (where add_vae_precision_flag adds it): the VAE's dtype on the backend.
struct DeviceFlags {
  std::string device;
  double gpu_memory_limit = 0;  // GiB; 0: the whole device
  std::string vae_precision;    // "", bf16 or fp32
  std::unique_ptr<Backend> backend() const;
};
void add_device_flags(CLI::App* cmd, DeviceFlags& flags, const std::string& default_device,
                      const std::string& help = "cpu or cuda");
void add_memory_limit_flag(CLI::App* cmd, DeviceFlags& flags);
void add_vae_precision_flag(CLI::App* cmd, DeviceFlags& flags);
// --precision bf16|fp8|fp8-gemm: the DiT blocks' arithmetic (models::Precision). `list` (bench)
// lets it name several, comma-separated, run in that order in one process.
void add_precision_flag(CLI::App* cmd, std::string& precision, bool list = false);
// "bf16", "fp8" or "fp8-gemm"; throws naming --precision.
models::Precision parse_precision(const std::string& name);
// "precision fp8: block matrices E4M3 ..." for the log; "" for the default precision.
std::string precision_text(models::Precision precision);
// Puts a loaded DiT in `precision` with a status line (nothing for the default precision).
void apply_precision(models::VelocityModel& dit, models::Precision precision);

// --steps, --shift, --solver, --guidance, --guidance-high, --guidance-low, --boundary. Not given:
// the model's fisdit.json where the command reads it (apply_model_defaults), else
// sched::DenoiseOptions' defaults (4 steps, shift 5, euler, guidance 1; the model's boundary).
struct SamplingFlags {
  std::optional<int> steps;
  std::optional<double> shift;
  std::optional<std::string> solver;
  std::optional<float> guidance, guidance_high, guidance_low, boundary;
  // The settings, checked before any weight is read (solver name, steps, shift, finite guidance
  // scales, boundary in [0, 1]: sched::check_options); throws ParamError naming the field.
  sched::DenoiseOptions resolve() const;
};
// Which sampling flags a command takes (--steps always), and how its help gives the defaults.
struct SamplingFlagSet {
  bool shift = true, solver = true, guidance = true;
  bool guidance_per_expert = true;  // --guidance-high, --guidance-low
  bool boundary = true;
  bool defaults_from_model = false;  // "(default: fisdit.json, else 4)" instead of "=4"
};
void add_sampling_flags(CLI::App* cmd, SamplingFlags& flags, const SamplingFlagSet& set = {});

// How a command takes LoRA files.
enum class LoraStyle {
  None,
  // --lora FILE (repeatable) and --lora-strength S, once for every --lora or once per --lora;
  // with --model-low the same as --lora-low / --lora-low-strength.
  PerFile,
  // --lora, --lora-low (repeatable) and one --lora-strength S (default 1) for every file.
  OneStrength,
};
// --model, --model-low and the LoRA files merged into each expert. (generate names its LoRA
// flags after the release's parameters, --lora-high / --lora-low, one file each: cmd_generate.)
struct ExpertFlags {
  std::string model, model_low;
  std::vector<std::string> lora, lora_low;
  std::vector<float> lora_strength, lora_low_strength;
  LoraStyle style = LoraStyle::None;  // set by add_expert_flags

  // The LoRA files of the (high-noise) expert and of the low-noise one with their strengths;
  // throws naming the flag (a strength without files, counts that do not match, --lora-low
  // without --model-low, a strength that is not a finite number).
  std::vector<LoraSpec> loras() const;
  std::vector<LoraSpec> loras_low() const;
};
struct ExpertFlagSet {
  std::string model_help;
  bool model_required = false;
  std::optional<std::string> model_low_help = std::nullopt;  // nullopt: no --model-low
  LoraStyle lora = LoraStyle::None;
};
void add_expert_flags(CLI::App* cmd, ExpertFlags& flags, const ExpertFlagSet& set);

// --fis PRESET|FILE and the --fis-* overrides.
struct FisFlags {
  std::string preset = "off";
  std::optional<int> stride, head, tail, dense_last_steps;
  std::optional<std::string> granularity, reconstruct;
  bool no_interleave = false;
  accel::FisConfig resolve() const;  // throws fisdit::Error naming the flag
};
void add_fis_flags(CLI::App* cmd, FisFlags& flags);

// --cache off|magcache and the --magcache-* settings (accel/magcache.h). `list` (bench) lets
// --cache name several modes, comma-separated.
struct CacheFlags {
  std::string mode = "off";
  std::optional<double> threshold, retention;
  std::optional<int> max_skips;
  std::optional<std::string> ratios;
  bool force = false;
  // The MagCache settings (enabled = false for "off"); throws fisdit::Error naming the flag.
  // `cache_mode` is one mode of --cache; `ratios_later`: the caller supplies the ratios (bench
  // calibrates on its dense setting), so none are required here.
  accel::MagCacheConfig resolve(const std::string& cache_mode, bool ratios_later = false) const;
  accel::MagCacheConfig resolve() const { return resolve(mode); }
};
void add_cache_flags(CLI::App* cmd, CacheFlags& flags, bool list = false);
// A status line when calibrated ratios are resampled to another step count (nearest index).
void note_ratio_resampling(const accel::MagCacheConfig& cache, int steps);

// "1280x720" -> width, height; throws naming --size.
void parse_size(const std::string& text, int& width, int& height);

// Reads a named tensor (or "input.<name>", as fixture files store it) from an inputs file as host
// F32; `required` false returns an undefined tensor when absent. Errors name file and tensor.
Tensor read_input(const SafetensorsFile& file, const std::string& name, bool required);
// The sampling loop's inputs as denoise takes them: x and context, optional context_neg, y and
// z_image, and the text side's further streams (byt5, vision, and their _neg).
sched::DenoiseInputs read_denoise_inputs(const SafetensorsFile& file);

// models::load_model with status lines: what was loaded (`role`: "model", "high-noise", ...),
// the LoRA report, the precision and the time.
std::unique_ptr<models::VelocityModel> load_model_reporting(
    const std::string& path, Backend& backend, const std::string& role,
    const std::vector<LoraSpec>& loras, models::Precision precision = models::Precision::Default);
// Writes one tensor to a safetensors file with a status line.
void write_tensor(const std::string& path, const std::string& name, const Tensor& t);

// The flag that sets a library parameter (fisdit::ParamError): "magcache_ratios" ->
// "--magcache-ratios".
std::string flag_of(const std::string& param);

// Progress and status lines go to stderr so stdout stays machine-readable.
void status(const std::string& line);

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
std::vector<std::string> split_commas(const std::string& text);
// {"a", "b"} -> "a, b" with `sep` between.
std::string join(const std::vector<std::string>& items, const std::string& sep);

// With the pipeline (cli_model.cpp): --model's value, or the bundled model (pipeline::
// bundled_model_dir, with a status line) when it is empty.
std::string model_or_bundled(const std::string& model);
// The settings a model's fisdit.json gives, for the flags not given.
void apply_model_defaults(const pipeline::ModelDefaults& defaults, std::optional<std::string>& size,
                          std::optional<int>& frames, SamplingFlags& sampling);
// The resolved sampling flags into a request (steps, shift, solver, the guidance scales, boundary).
void set_sampling(pipeline::GenerateOptions& request, const sched::DenoiseOptions& sampling);

void register_inspect(CLI::App& app);
void register_flops(CLI::App& app);
void register_dit(CLI::App& app);
void register_denoise(CLI::App& app);
void register_bench(CLI::App& app);  // the DiT loop (cmd_bench.cpp) and --vae (bench_vae.cpp)
void register_vae(CLI::App& app);
void register_text_encode(CLI::App& app);
void register_media(CLI::App& app);      // video encode, image prepare
void register_generate(CLI::App& app);   // needs the pipeline
void register_analyze(CLI::App& app);    // needs the pipeline (figures)
void register_quality(CLI::App& app);    // needs the pipeline (generate, figures)
void register_serve(CLI::App& app);      // needs the pipeline (generate, serve)
void register_calibrate(CLI::App& app);  // FIS presets; --magcache: calibrate_magcache.cpp

}  // namespace fisdit::cli
