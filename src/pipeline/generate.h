#pragma once
// Prompt (and first frame) to video with any family's release (models/release.h), in named
// stages, each on --device:
//   check   the request against the release: sizes, frames, image, sampling, LoRA files; no
//           weight is read (check_request)
//   text    the prompt (and the negative prompt with CFG) through the text encoder; meanwhile a
//           one-shot run prepares the first DiT expert's host side (GenerateOptions::overlap_load)
//   image   the first frame through the VAE encoder (I2V, TI2V)
//   sample  the flow solver over the DiT expert(s), with FIS and MagCache; meanwhile a one-shot
//           run prepares the second expert's host side beside the first one's steps
//   decode  the final latent through the VAE decoder
//   write   MP4, PNG frames, the latent, the summary (pipeline/output.h)
// Without keep_loaded each stage frees what it loaded (one A14B expert at a time).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "core/tensor.h"
#include "fisdit/error.h"
#include "models/release.h"
#include "sched/denoise.h"

namespace fisdit::pipeline {

struct GenerateOptions {
  // ---- the model (fixed for a Generator)
  std::string model;  // release directory, diffusers directory or DiT file
  // Parts given explicitly, by role (Wan: dit_low, text_encoder, tokenizer, vae).
  std::map<std::string, std::string> parts;
  std::string lora_high, lora_low;  // LoRA files for the (high-noise) and low-noise experts
  float lora_strength = 1.0f;
  std::string device = "cuda";
  // GiB of device memory the run may hold (0: the whole device): the DiT blocks that do not fit
  // beside the activations stream from host memory (models/offload.h), and anything else that
  // would pass it fails as running out of GPU memory does.
  double gpu_memory_limit = 0;
  // The DiT blocks' arithmetic (models::Precision): "bf16" (the backend's own), "fp8-gemm" (the
  // block matrices in E4M3 with per-row scales) or "fp8" (those and the self-attention in E4M3;
  // CUDA on FP8 tensor cores, the cpu backend as the reference).
  std::string precision = "bf16";
  // The VAE's dtype on the backend (Backend::set_video_precision): "" (the backend's default:
  // bf16 on CUDA, fp32 on the CPU), "bf16" or "fp32".
  std::string vae_precision;
  // ---- the request
  std::string prompt, negative;
  std::string image;  // first frame (i2v, ti2v); PNG or JPEG
  int width = 1280, height = 720, frames = 81;
  int steps = 4;
  double shift = 5.0;
  sched::SolverKind solver = sched::SolverKind::Euler;
  float guidance = 1.0f;
  std::optional<float> guidance_high, guidance_low;
  std::optional<float> boundary;  // default: the release's, else the model's
  uint64_t seed = 0;
  accel::FisConfig fis;
  accel::MagCacheConfig cache;  // MagCache step caching (off by default)
  bool progress = true;
  // A one-shot run (a Generator not kept loaded) prepares the host side of loading the first DiT
  // expert (models::Release::prepare_expert: reading its weights, matching its LoRAs) on a thread
  // of its own while the text encoder and the image encode run, and that of the second expert
  // (two experts) while the first one's steps run; the output is the same. false (or
  // FISDIT_OVERLAP_LOAD=0): one after the other. Never under a gpu_memory_limit.
  bool overlap_load = true;
  // Optional analysis hook on the conditional DiT forward of every step (sched::ForwardCall):
  // fisdit quality records the redundancy of the dense runs through it.
  sched::ForwardHook on_forward;
  // false: stop after sampling; the result's video is then undefined (Generator::decode).
  bool decode = true;
  // Where a run's progress goes besides the terminal (fisdit serve): called as each stage starts
  // (done 0) and as its units finish; stages "text" (prompts), "image" and "decode" (VAE
  // chunks), "denoise" (steps). An exception thrown from it (Cancelled) ends the run there.
  std::function<void(const std::string& stage, int done, int total)> on_progress;
  // Decoded frames as each chunk of the decode makes them final (fisdit generate encodes them
  // into the MP4 meanwhile): models::Release::FrameSink. Not copied into --compare-dense's run.
  models::Release::FrameSink on_frames;
};

// What an on_progress callback throws to stop a run between two units of work.
class Cancelled : public Error {
 public:
  using Error::Error;
};

// A request checked against the release: what the stages run.
struct CheckedRequest {
  GenerateOptions options;  // width and height as the video will have them (I2V: the image's)
  models::LatentGrid grid;  // the latent [latent_channels, frames, height, width]
  Tensor image;             // the first frame as read, [3, H, W] in [-1, 1]; undefined if none
  sched::DenoiseOptions denoise;
  bool needs_uncond = false;       // a guidance scale != 1 on some step
  std::vector<std::string> notes;  // for the log: what was derived (I2V's size)
};

// Checks `request` against the release and resolves it, reading no weight (the image file is
// read: its size decides I2V's). Throws ParamError naming the parameter (frames, size, image,
// steps, boundary, guidance, lora_high, lora_low, ...).
CheckedRequest check_request(const models::Release& release, const GenerateOptions& request);

struct GenerateResult {
  Tensor video;   // [3, frames, height, width] in [-1, 1]
  Tensor latent;  // the final latent [C, F', h, w] (normalised, as the DiT sees it)
  models::Task task = models::Task::T2V;
  double fps = 16;         // the release's
  nlohmann::json summary;  // options, resolved paths, per-stage seconds, per-step records
};

// One request on a release opened for it: Generator(options, false).run(options).
GenerateResult generate(const GenerateOptions& options);

// One release opened for several requests (fisdit quality runs many on one model).
class Generator {
 public:
  // Opens the release of the model fields of `model` (model, parts, lora_high, lora_low,
  // lora_strength, device) and checks that its parts fit each other; no weight is read.
  // keep_loaded: the text encoder, the DiT expert(s) and the VAE stay in memory once a request
  // has loaded them, and encoded prompts are remembered, so later requests load nothing (every
  // weight is then resident at once, both A14B experts included).
  Generator(const GenerateOptions& model, bool keep_loaded);
  // The same on a release opened by the caller (tests: a release whose stages are recorded).
  Generator(std::unique_ptr<models::Release> release, const GenerateOptions& model,
            bool keep_loaded);
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  const models::ReleaseInfo& release() const;
  const models::ModelInfo& model_info() const { return release().model; }
  bool two_experts() const { return release().two_experts; }

  // check_request on this generator's release (and model: the request's model fields must
  // name it).
  CheckedRequest check(const GenerateOptions& request) const;
  // One request: checked, then text, image, sample, decode.
  GenerateResult run(const GenerateOptions& request);
  // keep_loaded: loads the text encoder and the DiT expert(s) now (fisdit serve at start), so
  // requests load only the VAE, once; returns the seconds it took (0 without keep_loaded).
  double preload();
  // keep_loaded: forgets the prompts encoded so far, so the next request encodes its text again
  // (with the encoder's weights still resident); generate --repeat times each run's text so.
  void forget_texts();
  // The decode stage alone, for a final latent as run's result holds it.
  Tensor decode(const Tensor& latent, bool progress = false);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace fisdit::pipeline
