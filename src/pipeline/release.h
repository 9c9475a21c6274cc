#pragma once
// Where the parts of a Wan release are on disk. Users pass one --model; this finds the experts,
// the text encoder, the tokenizer and the VAE in the layouts they download:
//   official    Wan2.2-T2V-A14B/ or I2V-A14B/: high_noise_model/ + low_noise_model/ (each a
//               sharded DiT with config.json), models_t5_umt5-xxl-enc-bf16.pth (or .safetensors),
//               Wan2.1_VAE.pth, google/umt5-xxl/ (tokenizer);
//               Wan2.2-TI2V-5B/ and Wan 2.1: the DiT in the root (config.json + shards),
//               Wan2.2_VAE.pth / Wan2.1_VAE.pth;
//   diffusers   model_index.json, transformer/ (+ transformer_2/: the low-noise expert),
//               text_encoder/, tokenizer/, vae/;
//   single file a .safetensors DiT (ComfyUI); the other parts must be named by flags.
// Explicit flags (--model-low, --text-encoder, --tokenizer, --vae) win over what is found.
// Paths are only located here; opening and validating them is the loaders' job.
#include <optional>
#include <string>

namespace fisdit::pipeline {

struct ReleasePaths {
  std::string layout;              // "official", "diffusers", "single file"
  std::string dit;                 // the only expert, or the high-noise one
  std::string dit_low;             // the low-noise expert; empty for single-expert models
  std::string text_encoder;        // file or directory
  std::string tokenizer;           // spiece.model or a directory holding it
  std::string vae;                 // file or directory
  std::optional<double> boundary;  // from model_index.json (boundary_ratio) when present
};

struct ReleaseOverrides {
  std::string dit_low, text_encoder, tokenizer, vae;
};

// Throws fisdit::Error saying what is missing and which flag supplies it.
ReleasePaths resolve_release(const std::string& model, const ReleaseOverrides& overrides = {});

}  // namespace fisdit::pipeline
