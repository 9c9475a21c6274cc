#pragma once
// The official HunyuanVideo 1.5 download as fisdit reads it (checkpoints-download.md of the
// official repository):
//
//   transformer/<version>/        the DiT of each released version (480p_i2v_step_distilled, ...)
//   vae/                          the VAE
//   text_encoder/llm/             Qwen2.5-VL-7B-Instruct (its language model is the text encoder)
//   text_encoder/byt5-small/      byT5's config and tokenizer files
//   text_encoder/Glyph-SDXL-v2/   assets/ (color and font tokens), checkpoints/byt5_model.pt
//   vision_encoder/siglip/        image_encoder/ (SigLIP, for I2V) and feature_extractor/
//
// or diffusers' pipeline (model_index.json naming a HunyuanVideo15 pipeline: transformer/, vae/,
// text_encoder/ + tokenizer/, text_encoder_2/ + tokenizer_2/ (the glyph encoder), image_encoder/).
//
// describe_release says, part by part, what a folder holds and what is missing, for `inspect`.
#include <string>
#include <vector>

#include "models/task.h"

namespace fisdit::hunyuan15 {

// Whether `dir` looks like a release: the download's root (text_encoder/llm/,
// vision_encoder/siglip/ or a transformer/<version>/ folder) or a diffusers pipeline (whose
// transformer/ holds files, not folders).
bool looks_like_release(const std::string& dir);
// Whether `dir` holds a model_index.json naming a HunyuanVideo15 pipeline.
bool is_diffusers_pipeline(const std::string& dir);

// The names of the download root's transformer/<version>/ folders, sorted.
std::vector<std::string> release_versions(const std::string& root);
// The version of `versions` fisdit runs for `task` when the request names none, "" when none
// is made for it: the step-distilled 480p I2V model (8 steps), then the cfg-distilled ones (one
// pass per step), then the others; the sparse-attention and super-resolution versions are never
// picked.
std::string default_version(const std::vector<std::string>& versions, models::Task task);
// One line per part: "found" with what was read, "missing" with what it is for, or "unreadable"
// with the error. The DiT versions are listed one per line.
std::vector<std::string> describe_release(const std::string& dir);

}  // namespace fisdit::hunyuan15
