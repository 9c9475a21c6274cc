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
// Parts given explicitly (roles dit_low, text_encoder, tokenizer, vae) win over what is found.
// Paths are only located here; opening and validating them is the loaders' job, and
// open_release's (release_stages.cpp), which runs the release's stages.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "models/release.h"

namespace fisdit::wan {

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
// The Wan roles of ReleaseOptions::parts; throws ParamError for a role Wan has not.
ReleaseOverrides overrides_of(const models::ReleaseOptions& options);

// Throws fisdit::ParamError naming the part that is missing (text_encoder, tokenizer, vae,
// dit_low) or the model path that does not exist (model).
// need_vae false: a release without a VAE is fine (its vae is then "").
ReleasePaths resolve_release(const std::string& model, const ReleaseOverrides& overrides = {},
                             bool need_vae = true);

// I2V's frame size as wan/image2video.py derives it: the area `max_area` (the --size's W*H) at the
// image's aspect ratio, each side rounded down to whole latent patches: returns {width, height}.
std::pair<int, int> i2v_size(int64_t max_area, int64_t image_width, int64_t image_height,
                             int64_t vae_stride, int64_t patch_h, int64_t patch_w);

// The release at `model` with its parts opened and checked against each other (no weight is
// read): the Wan family's models::Family::open_release. Built with the pipeline only (it needs
// the umT5 tokenizer).
std::unique_ptr<models::Release> open_release(const std::string& model,
                                              const models::ReleaseOptions& options);

}  // namespace fisdit::wan
