#pragma once
// A tiny HunyuanVideo 1.5 download (the official layout of checkpoints-download.md) assembled from
// the encoder and VAE fixtures of tests/data/hunyuan15, for the pipeline tests: the Qwen2.5-VL
// text encoder (hidden 64) and its tokenizer, the byT5 glyph encoder (d_model 32), SigLIP (hidden
// 64, 56 px), the VAE (4 latent channels), and DiTs of random weights whose widths take those
// (the DiT fixture's were made for other widths): the videos are noise, every stage and its
// wiring is the real one.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/random.h"
#include "io/safetensors.h"
#include "models/hunyuan15/config.h"
#include "models/hunyuan15/dit.h"

namespace fisdit::pipeline {
namespace tiny_hunyuan15 {

namespace fs = std::filesystem;

inline std::string data(const std::string& rel) {
  return std::string(FISDIT_TEST_DATA) + "/hunyuan15/" + rel;
}

// transformer/<version>/: config.json with the official constructor keys and random weights
// under the official names (matrices N(0, 1/fan_in), vectors N(0, 0.1^2), norm gains about 1).
inline void write_dit(const fs::path& dir, bool i2v, bool meanflow, uint64_t seed) {
  fs::create_directories(dir);
  const std::string config =
      std::string(
          R"({"_class_name": "HunyuanVideo_1_5_DiffusionTransformer", "patch_size": [1, 1, 1],)") +
      R"( "in_channels": 4, "concat_condition": true, "out_channels": 4, "hidden_size": 64,)" +
      R"( "heads_num": 2, "mlp_width_ratio": 2.0, "mlp_act_type": "gelu_tanh",)" +
      R"( "mm_double_blocks_depth": 2, "mm_single_blocks_depth": 0, "rope_dim_list": [8, 12, 12],)" +
      R"( "qkv_bias": true, "qk_norm": true, "qk_norm_type": "rms", "guidance_embed": false,)" +
      R"( "use_meanflow": )" + (meanflow ? "true" : "false") +
      R"(, "text_projection": "single_refiner", "use_attention_mask": true, "text_states_dim": 64,)" +
      R"( "text_pool_type": null, "rope_theta": 256, "glyph_byT5_v2": true, "byt5_dims": [32, 48, 48],)" +
      R"( "vision_projection": "linear", "vision_states_dim": 64, "use_cond_type_embedding": true,)" +
      R"( "ideal_resolution": "480p", "ideal_task": ")" + (i2v ? "i2v" : "t2v") + "\"}";
  std::ofstream(dir / "config.json") << config;
  const hunyuan15::HunyuanConfig cfg =
      hunyuan15::config_from_json(nlohmann::json::parse(config), "tiny config");
  NamedTensors out;
  uint64_t s = seed * 1000;
  for (const auto& [name, shape] : hunyuan15::dit_parameter_shapes(cfg)) {
    Tensor v = randn(shape, ++s);
    const bool norm =
        name.find("norm") != std::string::npos && name.find(".weight") != std::string::npos;
    const float scale = shape.size() == 1
                            ? 0.1f
                            : static_cast<float>(1.0 / std::sqrt(double(v.numel() / shape[0])));
    for (int64_t i = 0; i < v.numel(); ++i) v.f32()[i] = v.f32()[i] * scale + (norm ? 1.0f : 0.0f);
    out.emplace_back(name, v);
  }
  write_safetensors((dir / "diffusion_pytorch_model.safetensors").string(), out);
}

inline void link(const fs::path& target, const fs::path& at) {
  fs::create_directories(at.parent_path());
  if (fs::is_directory(target))
    fs::create_directory_symlink(target, at);
  else
    fs::create_symlink(target, at);
}

// The download root: `versions` of 480p_i2v_step_distilled (I2V, MeanFlow), 480p_t2v (T2V);
// `vision` / `glyph`: whether those encoders are there.
inline void make_release(const fs::path& root,
                         const std::vector<std::string>& versions = {"480p_i2v_step_distilled",
                                                                     "480p_t2v"},
                         bool vision = true, bool glyph = true) {
  uint64_t seed = 1;
  for (const std::string& v : versions)
    write_dit(root / "transformer" / v, v.find("i2v") != std::string::npos,
              v.find("step_distilled") != std::string::npos, seed++);
  link(data("vae_tiny.safetensors"), root / "vae" / "diffusion_pytorch_model.safetensors");
  link(data("text_tiny.safetensors"), root / "text_encoder" / "llm" / "model.safetensors");
  link(data("text_tokenizer.json"), root / "text_encoder" / "llm" / "tokenizer.json");
  if (glyph) {
    link(data("glyph_tiny/Glyph-SDXL-v2"), root / "text_encoder" / "Glyph-SDXL-v2");
    link(data("glyph_tiny/byt5-small"), root / "text_encoder" / "byt5-small");
  }
  if (vision)
    link(data("vision_tiny.safetensors"),
         root / "vision_encoder" / "siglip" / "image_encoder" / "model.safetensors");
}

// The same parts as a diffusers pipeline: model_index.json, transformer/ (the step-distilled DiT
// of make_release, the same weights under the official names, which the loader reads in any
// folder), vae/ (diffusers' names), text_encoder/ + tokenizer/, text_encoder_2/ + tokenizer_2/
// (the glyph encoder converted by diffusers' script), image_encoder/.
inline void make_diffusers_pipeline(const fs::path& root) {
  fs::create_directories(root);
  std::ofstream(root / "model_index.json")
      << R"({"_class_name": "HunyuanVideo15ImageToVideoPipeline", "_diffusers_version": "0.36.0"})";
  write_dit(root / "transformer", true, true, 1);
  link(data("vae_tiny_diffusers"), root / "vae");
  link(data("text_tiny.safetensors"), root / "text_encoder" / "model.safetensors");
  link(data("text_tokenizer.json"), root / "tokenizer" / "tokenizer.json");
  link(data("glyph_tiny_diffusers/text_encoder_2"), root / "text_encoder_2");
  link(data("glyph_tiny_diffusers/tokenizer_2"), root / "tokenizer_2");
  link(data("vision_tiny.safetensors"), root / "image_encoder" / "model.safetensors");
}

}  // namespace tiny_hunyuan15
}  // namespace fisdit::pipeline
