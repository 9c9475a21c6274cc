#pragma once
// MagCache (Ma et al., "MagCache: Fast Video Generation with Magnitude-Aware Cache",
// arXiv 2506.09045): skip whole DiT forwards and reuse the cached residual of the block stack.
//
// What fisdit adopts, with where it comes from (facts read from the paper and the official code,
// Zehong-Ma/MagCache: MagCache4Wan2.1 and MagCache4Wan2.2/magcache_generate.py, functions
// magcache_forward, magcache_calibration, init_magcache, nearest_interp):
// - Residual r_k = output of the block stack minus its input (after patch embedding, before the
//   head) of step k (paper Sec. 3, "residual"; magcache_forward: residual_x = x - ori_x).
// - Magnitude ratio gamma_k = mean over tokens of ||r_k[token]||_2 / ||r_{k-1}[token]||_2
//   (magcache_calibration: (residual_x.norm(dim=-1) / cache.norm(dim=-1)).mean()); gamma_0 = 1
//   (the official lists are padded with 1.0 for the first step).
// - Error model and adaptive cache (paper Sec. 3, error modeling / adaptive caching; code
//   magcache_forward): on an eligible step, accumulated_ratio *= gamma_k, accumulated_steps += 1,
//   accumulated_err += |1 - accumulated_ratio|; skip when accumulated_err < threshold and
//   accumulated_steps <= K, else compute and reset the three to (1, 0, 0).
// - A skipped step reuses the last computed residual unchanged: h = patch_embed(x) + r_cached,
//   then the head (time, text and patch embeddings still run).
// - Classifier-free guidance: the conditional and unconditional passes keep separate states,
//   separate residual caches and separate ratio lists (the code's cnt % 2).
// - Retention: the first steps are never skipped. The code counts forwards (2 per CFG step) and
//   retains cnt < int(2 N r); fisdit counts steps and retains the first max(1, ceil(P r)) steps of
//   each expert phase of P steps (at least one: a skip needs a residual; counting steps keeps the
//   cond and uncond passes of one step together).
// - Wan 2.2 A14B (MagCache4Wan2.2): retention applies again at the start of the low-noise phase,
//   so no residual is ever applied across the expert switch; fisdit clears the caches at the
//   switch (same effect). For i2v-A14B the code never caches the high-noise phase: fisdit does
//   the same (DenoiseOptions sets that from the model type).
// - Defaults threshold 0.04, K 2, retention 0.2: MagCache4Wan2.2's command-line defaults (its
//   README examples use 0.06).
// - Calibrated ratios are stored per model (the code keeps one list per checkpoint, cond and
//   uncond interleaved, calibrated at 40-50 steps); a list of another length is resampled to the
//   run's steps by nearest_interp (index round(i (n-1)/(N-1)), half to even).
// - force: not found in the official code; a fisdit setting for few-step (e.g. 4-step Lightning)
//   models, where the magnitude ratios change too much between steps for the error model: every
//   eligible step is skipped while the consecutive-skip count stays <= K (the error test is
//   dropped; ratios are not needed).
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"

namespace fisdit::accel {

// Per-step magnitude ratios of one model and sampling setting, per CFG branch.
struct MagRatios {
  std::vector<double> cond;    // gamma_k of the conditional (or only) pass, k = 0..N-1
  std::vector<double> uncond;  // of the unconditional pass; empty when calibrated without CFG
  std::string info;            // JSON object: what the calibration ran (model, steps, ...)

  int steps() const { return static_cast<int>(cond.size()); }
  // Both lists resampled to `steps` (nearest_interp of the reference).
  MagRatios resampled(int steps) const;
};

// The reference's nearest_interp: out[i] = src[round(i (n - 1) / (N - 1))], N == 1 -> last.
std::vector<double> nearest_interp(const std::vector<double>& src, int target_length);

// JSON file of `fisdit calibrate --magcache` (format "fisdit-magcache-ratios", version 1).
nlohmann::json mag_ratios_to_json(const MagRatios& r);
MagRatios mag_ratios_from_json(const nlohmann::json& j, const std::string& source);
MagRatios load_mag_ratios(const std::string& path);  // errors name the file and field
void save_mag_ratios(const std::string& path, const MagRatios& r);

// Per-token L2 norms of a host [tokens, dim] residual, in double.
std::vector<double> token_norms(const Tensor& residual);
// mean over tokens of now / prev; tokens whose previous norm is 0 are left out (1 if none left).
double magnitude_ratio(const std::vector<double>& now, const std::vector<double>& prev);

struct MagCacheConfig {
  bool enabled = false;
  double threshold = 0.04;  // delta: bound on the accumulated error
  int max_skips = 2;        // K: most consecutive skipped steps per branch
  double retention = 0.2;   // first max(1, ceil(P r)) steps of each expert phase always computed
  bool force = false;       // skip regardless of the error (few-step models); see above
  MagRatios ratios;         // needed unless force

  // Throws fisdit::Error naming the flag (--magcache-thresh, ...) on a bad value.
  void validate() const;
  std::string describe() const;
};

// The reference's per-branch state: accumulated ratio, error and skipped-step count.
struct MagCacheState {
  double accumulated_ratio = 1.0, accumulated_err = 0.0;
  int accumulated_steps = 0;

  // One eligible step with magnitude ratio `gamma`: true to skip it (state advanced), false to
  // compute it (state reset).
  bool decide(double gamma, double threshold, int max_skips, bool force);
  void reset() { *this = MagCacheState{}; }
};

// MagCache over one sampling run: eligibility (retention per expert phase), per-branch states
// and residual caches. Branch 0 is the conditional (or only) pass, 1 the unconditional one.
class MagCache {
 public:
  // `phase_of_step[k]` numbers the expert phases (0 for the high-noise / only expert, 1 for the
  // low-noise one); `cache_phase[p]` false never skips phase p (i2v-A14B's high-noise phase).
  MagCache(MagCacheConfig config, std::vector<int> phase_of_step,
           std::vector<bool> cache_phase = {});

  const MagCacheConfig& config() const { return config_; }
  int steps() const { return static_cast<int>(phase_of_step_.size()); }
  bool retained(int step) const;  // never skipped (retention, uncached phase)

  // Decides step `step` of `branch` (call once per pass, steps in order): true means skip and
  // apply residual(branch). Clears caches and states on entering a new phase.
  bool skip(int step, int branch);
  // The residual cache of a branch: filled by the caller after a computed pass.
  Tensor& residual(int branch) { return residual_[branch]; }

 private:
  MagCacheConfig config_;
  MagRatios ratios_;  // resampled to the run's steps
  std::vector<int> phase_of_step_;
  std::vector<int> retained_until_;  // per step: first step of its phase that may be skipped
  std::vector<bool> cache_phase_;
  int current_phase_ = -1;
  MagCacheState state_[2];
  Tensor residual_[2];
};

}  // namespace fisdit::accel
