#pragma once
// Shared pieces of the fisdit subcommands.
#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "accel/magcache.h"
#include "core/tensor.h"
#include "io/safetensors.h"

namespace fisdit::pipeline {
struct ModelDefaults;
}

namespace fisdit::cli {

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

// The flag that sets a library parameter (fisdit::ParamError): "magcache_ratios" ->
// "--magcache-ratios".
std::string flag_of(const std::string& param);

// Progress and status lines go to stderr so stdout stays machine-readable.
void status(const std::string& line);

// "a,b,,c" -> {"a", "b", "c"} (empty items dropped).
std::vector<std::string> split_commas(const std::string& text);
// {"a", "b"} -> "a, b" with `sep` between.
std::string join(const std::vector<std::string>& items, const std::string& sep);

// With the pipeline (cli_model.cpp): --model's value, or the bundled model (pipeline::
// bundled_model_dir, with a status line) when it is empty.
std::string model_or_bundled(const std::string& model);
// The settings a model's fisdit.json gives, written to the flags' variables for the flags `cmd`
// was not given.
struct GenerationFlags {
  std::string& size;
  int& frames;
  int& steps;
  double& shift;
  std::string& solver;
  float& guidance;
};
void apply_model_defaults(const CLI::App& cmd, const pipeline::ModelDefaults& defaults,
                          const GenerationFlags& flags);

void register_inspect(CLI::App& app);
void register_flops(CLI::App& app);
void register_dit(CLI::App& app);
void register_denoise(CLI::App& app);
void register_bench(CLI::App& app);
void register_vae(CLI::App& app);
void register_text_encode(CLI::App& app);
void register_media(CLI::App& app);  // video encode, image prepare
void register_generate(CLI::App& app);
void register_analyze(CLI::App& app);    // needs the pipeline (figures)
void register_quality(CLI::App& app);    // needs the pipeline (generate, figures)
void register_calibrate(CLI::App& app);  // FIS presets; --magcache: cmd_magcache.cpp

}  // namespace fisdit::cli
