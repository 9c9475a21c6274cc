#pragma once
// A HunyuanVideo 1.5 release as `fisdit generate` runs it (models/release.h), as the official
// pipeline (hyvideo/pipelines/hunyuan_video_pipeline.py __call__) does:
//
//   text    the prompt in the official video chat template through the Qwen2.5-VL language
//           model (prefix cropped, at most 1000 tokens), and its quoted text through the byT5
//           glyph encoder (none when it quotes nothing); CFG's negative prompt likewise
//   image   I2V: the first frame (resized to cover the size bucket, centre crop) through the VAE
//           encoder, its posterior mode times scaling_factor put at latent frame 0 of the
//           condition channels, the mask channel 1 on frame 0; and through SigLIP, whose states
//           join every prompt's text side. T2V: condition and mask channels all zero, no vision
//           tokens
//   sample  the DiT (one model), MeanFlow's r for the step-distilled version
//   decode  latent / scaling_factor through the VAE decoder, spatially tiled
//
// Where the parts are on disk:
//   official    the download root (checkpoints-download.md): transformer/<version>/, vae/,
//               text_encoder/llm/ (Qwen2.5-VL-7B-Instruct and its tokenizer.json),
//               text_encoder/Glyph-SDXL-v2/ (+ byt5-small/), vision_encoder/siglip/. --model may
//               also name one transformer/<version>/ folder of such a root.
//   diffusers   model_index.json, transformer/, vae/, text_encoder/ + tokenizer/ (Qwen),
//               text_encoder_2/ + tokenizer_2/ (the glyph encoder), image_encoder/ (I2V).
// Parts given by role win over what is found: "version" (a name under transformer/),
// "text_encoder", "tokenizer", "glyph", "vision_encoder", "vae".
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/release.h"

namespace fisdit::hunyuan15 {

struct ReleasePaths {
  std::string layout;                 // "official", "diffusers"
  std::string root;                   // the download or pipeline root
  std::string version;                // transformer/<version> (official), "" for diffusers
  std::string dit;                    // the DiT folder
  std::string vae;                    // folder or file
  std::string text_encoder;           // the Qwen2.5-VL folder or file
  std::string tokenizer;              // its tokenizer.json (or a folder holding one)
  std::string glyph;                  // text_encoder/ holding Glyph-SDXL-v2/, or "" when absent
  std::string glyph_tokenizer;        // diffusers: tokenizer_2/ ("" in the official layout)
  std::string vision_encoder;         // vision_encoder/siglip, image_encoder/, or "" when absent
  std::vector<std::string> versions;  // every transformer/<version> found (official)
};

// Where each part of the release at `model` is. `task` (optional) picks the version of a root
// holding several. Throws ParamError naming the part that is missing (model, version,
// text_encoder, tokenizer, vae).
ReleasePaths resolve_release(const std::string& model, const models::ReleaseOptions& options);

// The request defaults of a version, as the official PIPELINE_CONFIGS and generate.py give them:
// flow shift (480p 5, 720p T2V 9, 720p I2V 7, step-distilled 7), CFG scale (6, 1 for the
// distilled versions), steps (50; the step-distilled version 8, which its model card
// recommends), 121 frames, a 16:9 video of the resolution's bucket.
models::RequestDefaults version_defaults(const std::string& version, bool meanflow,
                                         const std::string& resolution);

// Whether `path` is a HunyuanVideo 1.5 release (a download root, a transformer/<version>/ folder
// of one, or a diffusers pipeline of it): its errors are then the ones to show.
bool owns_release(const std::string& path);

// The family's models::Family::open_release: the release opened and its parts checked against
// each other (widths, channels), no weight read.
std::unique_ptr<models::Release> open_release(const std::string& model,
                                              const models::ReleaseOptions& options);

}  // namespace fisdit::hunyuan15
