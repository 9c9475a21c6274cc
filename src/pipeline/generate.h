#pragma once
// Prompt (and image) to video with a Wan release: tokenizer -> umT5 -> (VAE encode of the first
// frame) -> flow sampling with the DiT expert(s) and FIS -> VAE decode. T2V-A14B, I2V-A14B and
// TI2V-5B (and Wan 2.1 T2V), selected by the DiT's model_type.
//
// Where each stage runs: the DiT on the chosen backend (cuda or cpu); the text encoder and the
// VAE on the CPU backend in fp32 (their CUDA versions do not exist yet). The two A14B experts
// are loaded one at a time: the high-noise expert for the first steps, then it is freed and the
// low-noise expert is loaded, so peak memory is one expert.
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "accel/fis.h"
#include "core/tensor.h"
#include "pipeline/release.h"
#include "sched/denoise.h"

namespace fisdit::pipeline {

struct GenerateOptions {
  std::string model;  // --model: release directory, diffusers directory or DiT file
  ReleaseOverrides parts;
  std::string lora_high, lora_low;  // LoRA files for the (high-noise) and low-noise experts
  float lora_strength = 1.0f;
  std::string prompt, negative;
  std::string image;  // first frame (i2v, ti2v); PNG or JPEG
  int width = 1280, height = 720, frames = 81;
  int steps = 4;
  double shift = 5.0;
  sched::SolverKind solver = sched::SolverKind::Euler;
  float guidance = 1.0f;
  std::optional<float> guidance_high, guidance_low;
  std::optional<float> boundary;  // default: the release's, else t2v 0.875 / i2v 0.9
  uint64_t seed = 0;
  accel::FisConfig fis;
  accel::MagCacheConfig cache;  // MagCache step caching (off by default)
  std::string device = "cuda";
  bool progress = true;
  // Optional analysis hook on the conditional DiT forward of every step (sched::ForwardCall):
  // fisdit quality records the redundancy of the dense runs through it.
  sched::ForwardHook on_forward;
  // false: stop after sampling; the result's video is then undefined (Generator::decode).
  bool decode = true;
};

struct GenerateResult {
  Tensor video;   // [3, frames, height, width] in [-1, 1]
  Tensor latent;  // the final latent [z, F', h, w] (normalised, as the DiT sees it)
  std::string task;
  nlohmann::json summary;  // options, resolved paths, per-stage seconds, per-step records
};

// I2V's frame size as wan/image2video.py derives it: the area `max_area` (the --size's W*H) at the
// image's aspect ratio, each side rounded down to whole latent patches: returns {width, height}.
std::pair<int, int> i2v_size(int64_t max_area, int64_t image_width, int64_t image_height,
                             int64_t vae_stride, int64_t patch_h, int64_t patch_w);

// Checks the request against the model before any weight is loaded; throws fisdit::Error naming
// the flag (--size, --frames, --image, ...). The same as Generator(options, false).run(options).
GenerateResult generate(const GenerateOptions& options);

// One release opened for several requests (fisdit quality runs many on one model).
class Generator {
 public:
  // Resolves and opens the release of the model fields of `model` (model, parts, lora_high,
  // lora_low, lora_strength, device) and checks that its parts fit each other; no weight is read.
  // keep_loaded: the text encoder, the DiT expert(s) and the VAE stay in memory once a request
  // has loaded them, and encoded prompts are remembered, so later requests load nothing (every
  // weight is then resident at once, both A14B experts included). Without it every request loads
  // and frees them as the header comment says (one expert at a time).
  Generator(const GenerateOptions& model, bool keep_loaded);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  const ReleasePaths& paths() const;
  const models::ModelInfo& model_info() const;  // the (high-noise) expert's
  bool two_experts() const;

  // One request: the request fields of `request` (prompt, image, size, sampling, seed, fis,
  // cache, progress, on_forward). Its model fields must name the generator's model and device.
  GenerateResult run(const GenerateOptions& request);
  // The VAE decode of a final latent [z, F', h, w] (normalised, as run's result holds it) to a
  // video [3, frames, height, width] clamped to [-1, 1], as run does it.
  Tensor decode(const Tensor& latent, bool progress = false);

 private:
  GenerateResult run_request(const GenerateOptions& request);
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace fisdit::pipeline
