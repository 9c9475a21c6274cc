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
// the flag (--size, --frames, --image, ...).
GenerateResult generate(const GenerateOptions& options);

}  // namespace fisdit::pipeline
