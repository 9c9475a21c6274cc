#include "accel/magcache.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"

namespace fisdit::accel {

std::vector<double> nearest_interp(const std::vector<double>& src, int target_length) {
  if (src.empty() || target_length < 1) throw Error("nearest_interp: empty input or target");
  if (target_length == 1) return {src.back()};
  const double scale = static_cast<double>(src.size() - 1) / static_cast<double>(target_length - 1);
  std::vector<double> out;
  for (int i = 0; i < target_length; ++i) {
    // numpy's round: half to even, which std::nearbyint does in the default rounding mode.
    const auto idx = static_cast<size_t>(std::nearbyint(static_cast<double>(i) * scale));
    out.push_back(src[std::min(idx, src.size() - 1)]);
  }
  return out;
}

MagRatios MagRatios::resampled(int steps) const {
  MagRatios r = *this;
  if (steps == this->steps()) return r;
  r.cond = nearest_interp(cond, steps);
  if (!uncond.empty()) r.uncond = nearest_interp(uncond, steps);
  return r;
}

nlohmann::json mag_ratios_to_json(const MagRatios& r) {
  nlohmann::json j = {{"format", "fisdit-magcache-ratios"}, {"version", 1}, {"cond", r.cond}};
  if (!r.uncond.empty()) j["uncond"] = r.uncond;
  if (!r.info.empty()) j["calibration"] = nlohmann::json::parse(r.info);
  return j;
}

namespace {
std::vector<double> ratio_list(const nlohmann::json& j, const char* key,
                               const std::string& source) {
  const nlohmann::json& a = j.at(key);
  if (!a.is_array() || a.empty())
    throw Error(source + ": '" + key + "' must be a non-empty array of magnitude ratios");
  std::vector<double> out;
  for (const auto& v : a) {
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0)
      throw Error(source + ": '" + key + "' holds " + v.dump() +
                  "; magnitude ratios are positive finite numbers");
    out.push_back(v.get<double>());
  }
  return out;
}
}  // namespace

MagRatios mag_ratios_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object() || j.value("format", "") != "fisdit-magcache-ratios")
    throw Error(source +
                ": not a MagCache ratios file (format 'fisdit-magcache-ratios'; make one with "
                "fisdit calibrate --magcache)");
  if (j.value("version", 0) != 1)
    throw Error(source + ": unsupported MagCache ratios version " +
                j.value("version", nlohmann::json()).dump());
  if (!j.contains("cond")) throw Error(source + ": 'cond' (the per-step ratios) is missing");
  MagRatios r;
  r.cond = ratio_list(j, "cond", source);
  if (j.contains("uncond")) {
    r.uncond = ratio_list(j, "uncond", source);
    if (r.uncond.size() != r.cond.size())
      throw Error(source + ": 'uncond' has " + std::to_string(r.uncond.size()) +
                  " ratios, 'cond' " + std::to_string(r.cond.size()));
  }
  if (j.contains("calibration")) r.info = j.at("calibration").dump();
  return r;
}

MagRatios load_mag_ratios(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ParamError("magcache_ratios", " " + path + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ParamError("magcache_ratios", " " + path + ": not valid JSON (" + e.what() + ")");
  }
  return mag_ratios_from_json(j, path);
}

void save_mag_ratios(const std::string& path, const MagRatios& r) {
  std::ofstream out(path);
  out << mag_ratios_to_json(r).dump(2) << "\n";
  if (!out) throw ParamError("output", " " + path + ": cannot write");
}

std::vector<double> token_norms(const Tensor& residual) {
  if (residual.ndim() != 2) throw Error("token_norms: residual must be [tokens, dim]");
  const Tensor r = residual.to_f32();
  const int64_t tokens = r.dim(0), dim = r.dim(1);
  std::vector<double> out(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    double s = 0;
    for (int64_t c = 0; c < dim; ++c) {
      const double v = r.f32()[t * dim + c];
      s += v * v;
    }
    out[static_cast<size_t>(t)] = std::sqrt(s);
  }
  return out;
}

double magnitude_ratio(const std::vector<double>& now, const std::vector<double>& prev) {
  if (now.size() != prev.size())
    throw Error("magnitude_ratio: " + std::to_string(now.size()) + " tokens now, " +
                std::to_string(prev.size()) + " before");
  double sum = 0;
  size_t n = 0;
  for (size_t i = 0; i < now.size(); ++i) {
    if (prev[i] == 0) continue;
    sum += now[i] / prev[i];
    ++n;
  }
  return n ? sum / static_cast<double>(n) : 1.0;
}

void MagCacheConfig::validate() const {
  if (!enabled) return;
  if (!std::isfinite(threshold) || threshold < 0)
    throw ParamError("magcache_thresh",
                     ": must be a finite number >= 0, got " + std::to_string(threshold));
  if (max_skips < 0)
    throw ParamError("magcache_K", ": must be >= 0 (the most consecutive skipped steps), got " +
                                       std::to_string(max_skips));
  if (!(retention >= 0 && retention <= 1))
    throw ParamError("magcache_retention", ": must be in [0, 1], got " + std::to_string(retention));
  if (!force && ratios.cond.empty())
    throw ParamError("magcache_ratios",
                     ": MagCache needs calibrated ratios (fisdit calibrate --magcache writes "
                     "them), or forced skipping (magcache_force)");
}

std::string MagCacheConfig::describe() const {
  if (!enabled) return "off";
  char line[160];
  std::snprintf(line, sizeof line, "magcache (thresh %g, K %d, retention %g%s)", threshold,
                max_skips, retention, force ? ", force" : "");
  return line;
}

bool MagCacheState::decide(double gamma, double threshold, int max_skips, bool force) {
  accumulated_ratio *= gamma;
  accumulated_steps += 1;
  accumulated_err += std::abs(1.0 - accumulated_ratio);
  if ((force || accumulated_err < threshold) && accumulated_steps <= max_skips) return true;
  reset();
  return false;
}

MagCache::MagCache(MagCacheConfig config, std::vector<int> phase_of_step,
                   std::vector<bool> cache_phase)
    : config_(std::move(config)),
      phase_of_step_(std::move(phase_of_step)),
      cache_phase_(std::move(cache_phase)) {
  config_.validate();
  const int n = steps();
  if (!config_.ratios.cond.empty()) ratios_ = config_.ratios.resampled(n);
  // Retention per phase: the first max(1, ceil(P r)) steps of a phase of P steps.
  retained_until_.assign(static_cast<size_t>(n), 0);
  for (int k = 0; k < n;) {
    int end = k;
    while (end < n &&
           phase_of_step_[static_cast<size_t>(end)] == phase_of_step_[static_cast<size_t>(k)])
      ++end;
    const int kept = std::max(
        1, static_cast<int>(std::ceil(static_cast<double>(end - k) * config_.retention - 1e-9)));
    for (int i = k; i < end; ++i) retained_until_[static_cast<size_t>(i)] = k + kept;
    k = end;
  }
}

bool MagCache::retained(int step) const {
  const int phase = phase_of_step_.at(static_cast<size_t>(step));
  if (static_cast<size_t>(phase) < cache_phase_.size() && !cache_phase_[static_cast<size_t>(phase)])
    return true;
  return step < retained_until_[static_cast<size_t>(step)];
}

bool MagCache::skip(int step, int branch) {
  if (step < 0 || step >= steps() || branch < 0 || branch > 1)
    throw Error("MagCache: step " + std::to_string(step) + " branch " + std::to_string(branch) +
                " out of range");
  const int phase = phase_of_step_[static_cast<size_t>(step)];
  if (phase != current_phase_) {  // expert switch: nothing carries over
    current_phase_ = phase;
    for (int b = 0; b < 2; ++b) {
      state_[b].reset();
      residual_[b] = Tensor{};
    }
  }
  if (!config_.enabled || retained(step)) return false;
  MagCacheState& s = state_[branch];
  double gamma = 1.0;
  if (!config_.force) {
    const std::vector<double>& list =
        branch == 1 && !ratios_.uncond.empty() ? ratios_.uncond : ratios_.cond;
    if (branch == 1 && ratios_.uncond.empty())
      throw Error(
          "MagCache: the ratios file has no 'uncond' ratios (calibrated without guidance) but "
          "this run uses guidance; calibrate with the run's --guidance");
    gamma = list[static_cast<size_t>(step)];
  }
  const bool skip = s.decide(gamma, config_.threshold, config_.max_skips, config_.force);
  if (skip && !residual_[branch].defined()) {  // nothing cached yet for this branch: compute
    s.reset();
    return false;
  }
  return skip;
}

}  // namespace fisdit::accel
