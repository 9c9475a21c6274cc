#include "cli.h"

#include <algorithm>
#include <iostream>
#include <regex>
#include <sstream>

#include "fisdit/error.h"

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

std::string flag_of(const std::string& param) {
  std::string flag = "--" + param;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return flag;
}

void status(const std::string& line) { std::cerr << line << std::endl; }

}  // namespace fisdit::cli
