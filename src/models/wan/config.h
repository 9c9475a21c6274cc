#pragma once
// Wan DiT hyper-parameters, as the official config.json (`_class_name: WanModel`) spells them.
#include <array>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "models/task.h"

namespace fisdit::wan {

struct WanConfig {
  models::Task task = models::Task::T2V;  // config.json's model_type
  std::array<int, 3> patch_size = {1, 2, 2};
  int text_len = 512;
  int in_dim = 16;
  int dim = 2048;
  int ffn_dim = 8192;
  int freq_dim = 256;
  int text_dim = 4096;
  int out_dim = 16;
  int num_heads = 16;
  int num_layers = 32;
  double eps = 1e-6;
  bool qk_norm = true;
  bool cross_attn_norm = true;

  int head_dim() const { return dim / num_heads; }
  // Throws fisdit::Error naming `source` when a value is out of range or inconsistent.
  void validate(const std::string& source) const;
};

// Named shapes of the released models: wan2.2-t2v-a14b, wan2.2-i2v-a14b, wan2.2-ti2v-5b,
// wan2.1-t2v-1.3b, wan2.1-t2v-14b. Throws fisdit::Error listing the names for an unknown one.
WanConfig preset_config(const std::string& name);
std::vector<std::string> preset_config_names();

// Reads the fields of an official config.json object. Fields the official files omit
// (text_dim, patch_size) keep their defaults unless present; `source` names the file in errors.
WanConfig config_from_json(const nlohmann::json& j, const std::string& source);
// Reads a config.json file (or a preset name when `name_or_path` is one).
WanConfig load_config(const std::string& name_or_path);

// The VAE's (t, h, w) stride of the latents a config works on: (4, 8, 8) for the Wan 2.1 VAE's
// 16 channels, (4, 16, 16) for the Wan 2.2 VAE's 48 (TI2V-5B).
std::array<int, 3> vae_stride(const WanConfig& cfg);

}  // namespace fisdit::wan
