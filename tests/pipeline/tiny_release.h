#pragma once
// Tiny Wan releases assembled from the official fixtures for the pipeline tests (random weights:
// the videos are noise, but every stage and its wiring is the real one).
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/random.h"
#include "io/safetensors.h"

namespace fisdit::pipeline {
namespace tiny_release {

namespace fs = std::filesystem;

inline std::string data(const std::string& rel) {
  return std::string(FISDIT_TEST_DATA) + "/" + rel;
}

// The fixture DiT's `model.*` tensors under their official names, with a text embedding that
// takes the tiny umT5's 64 channels (the DiT fixtures were made with text_dim 48).
inline void write_dit(const std::string& fixture, const fs::path& dir, uint64_t seed,
                      const std::string& model_type) {
  fs::create_directories(dir);
  const auto f = SafetensorsFile::open(data("wan/" + fixture));
  NamedTensors out;
  for (const TensorInfo& t : f->tensors()) {
    if (t.name.rfind("model.", 0) != 0) continue;
    const std::string key = t.name.substr(6);
    Tensor v = f->tensor_f32(t.name);
    if (key == "text_embedding.0.weight") {
      v = randn({v.dim(0), 64}, seed);
      for (int64_t i = 0; i < v.numel(); ++i) v.f32()[i] *= 0.125f;  // ~1/sqrt(64)
    }
    out.emplace_back(key, v);
  }
  write_safetensors((dir / "diffusion_pytorch_model.safetensors").string(), out);
  const int in_dim = model_type == "i2v" ? 36 : (model_type == "ti2v" ? 48 : 16);
  const int out_dim = model_type == "ti2v" ? 48 : 16;
  std::ofstream(dir / "config.json")
      << R"({"_class_name": "WanModel", "model_type": ")" << model_type
      << R"(", "dim": 128, "ffn_dim": 256, "freq_dim": 256, "in_dim": )" << in_dim
      << R"(, "out_dim": )" << out_dim
      << R"(, "num_heads": 2, "num_layers": 4, "eps": 1e-06, "text_len": 32, "text_dim": 64})";
}

// An official-layout release: experts (or one DiT in the root), umT5, VAE, tokenizer.
// `single_dit`: a t2v / i2v DiT in the root too (the Wan 2.1 layout, as fisdit's own models).
inline void make_release(const fs::path& root, const std::string& model_type,
                         bool single_dit = false) {
  if (model_type == "ti2v") {
    write_dit("dit_ti2v_tiny.safetensors", root, 1, "ti2v");
    fs::copy_file(data("wan/vae22_tiny.safetensors"), root / "Wan2.2_VAE.safetensors");
  } else if (single_dit) {
    write_dit(model_type == "i2v" ? "dit_i2v_tiny.safetensors" : "dit_t2v_tiny.safetensors", root,
              1, model_type);
    fs::copy_file(data("wan/vae21_tiny.safetensors"), root / "Wan2.1_VAE.safetensors");
  } else {
    const std::string fx =
        model_type == "i2v" ? "dit_i2v_tiny.safetensors" : "dit_t2v_tiny.safetensors";
    write_dit(fx, root / "high_noise_model", 1, model_type);
    write_dit(fx, root / "low_noise_model", 2, model_type);
    fs::copy_file(data("wan/vae21_tiny.safetensors"), root / "Wan2.1_VAE.safetensors");
  }
  fs::copy_file(data("wan/t5_tiny.safetensors"), root / "models_t5_umt5-xxl-enc-bf16.safetensors");
  fs::create_directories(root / "google/umt5-xxl");
  fs::copy_file(data("tokenizer/spiece.model"), root / "google/umt5-xxl/spiece.model");
}

}  // namespace tiny_release
}  // namespace fisdit::pipeline
