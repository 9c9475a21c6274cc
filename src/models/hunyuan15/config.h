#pragma once
// HunyuanVideo 1.5 DiT hyper-parameters
// (hyvideo/models/transformers/hunyuanvideo_1_5_transformer.py
// HunyuanVideo_1_5_DiffusionTransformer), as the released transformer/<version>/config.json and
// the constructor spell them. Every released 480p/720p T2V/I2V model shares one architecture;
// the 8-step distilled I2V model adds MeanFlow's time_r_in.
#include <array>
#include <string>
#include <vector>

#include <cstdint>
#include <nlohmann/json_fwd.hpp>

#include "models/task.h"

namespace fisdit::hunyuan15 {

struct HunyuanConfig {
  models::Task task = models::Task::I2V;  // which inputs the released version is made for
  std::array<int, 3> patch_size = {1, 1, 1};
  int latent_channels = 32;  // the official `in_channels`: the noisy latent
  // The patch embedding reads [latent, condition latent, mask]: 2 * latent_channels + 1.
  bool concat_condition = true;
  int out_channels = 32;
  int hidden = 2048;
  int heads = 16;
  double mlp_ratio = 4.0;
  int num_blocks = 54;  // double-stream blocks (no single-stream block is released)
  int refiner_blocks = 2;
  std::array<int, 3> rope_dims = {16, 56, 56};  // channels of a head per axis (t, h, w)
  double rope_theta = 256.0;
  int text_dim = 3584;    // Qwen2.5-VL-7B hidden states
  int text_len = 1000;    // the most prompt tokens the pipeline gives
  bool meanflow = false;  // time_r_in: the step-distilled model
  // byT5 glyph mapper (ByT5Mapper): in -> hidden -> out -> hidden. Released: 1472, 2048, 2048.
  bool glyph = true;
  std::array<int, 3> byt5_dims = {1472, 2048, 2048};
  int byt5_len = 256;
  int vision_dim = 1152;  // SigLIP states for I2V (0: no vision projection)
  int vision_tokens = 729;
  bool cond_type_embedding = true;
  // The pipeline's ideal_resolution ("480p" or "720p"; empty when the config does not say): the
  // size buckets of its videos (480p: base 640, 720p: base 960).
  std::string resolution;

  int in_dim() const { return concat_condition ? 2 * latent_channels + 1 : latent_channels; }
  int head_dim() const { return hidden / heads; }
  int mlp_dim() const { return static_cast<int>(hidden * mlp_ratio); }
  // Throws fisdit::Error naming `source` when a value is out of range or inconsistent.
  void validate(const std::string& source) const;
};

// Named shapes of the released versions: hunyuanvideo-1.5-480p-t2v, ...-480p-i2v,
// ...-480p-i2v-step-distilled, ...-720p-t2v, ...-720p-i2v (and the cfg-distilled ones).
HunyuanConfig preset_config(const std::string& name);
std::vector<std::string> preset_config_names();
bool is_preset_name(const std::string& name);

// Reads the constructor arguments of a config.json object (or a fixture's metadata), over
// `base` (values absent from the object keep base's). Refuses what fisdit does not run
// (single-stream blocks, another text projection, guidance embedding, a pooled text vector).
// One field of a JSON config (the DiT's, the VAE's, the encoders'): `out` takes j[key] when it is
// there and not null. Throws "<source>: field '<key>' must be an integer" (int, int64_t) or "...
// must be a number" (double) for a value of another type.
void read_field(const nlohmann::json& j, const char* key, int& out, const std::string& source);
void read_field(const nlohmann::json& j, const char* key, int64_t& out, const std::string& source);
void read_field(const nlohmann::json& j, const char* key, double& out, const std::string& source);

HunyuanConfig config_from_json(const nlohmann::json& j, const std::string& source,
                               HunyuanConfig base = {});
// A preset name, or a config.json file.
HunyuanConfig load_config(const std::string& name_or_path);

}  // namespace fisdit::hunyuan15
