#include "models/hunyuan15/config.h"

#include <cstdint>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "fisdit/error.h"
#include "models/family.h"

namespace fisdit::hunyuan15 {

void HunyuanConfig::validate(const std::string& source) const {
  auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  if (hidden <= 0 || heads <= 0 || hidden % heads != 0)
    fail("hidden_size " + std::to_string(hidden) + " is not a multiple of heads_num " +
         std::to_string(heads));
  if (rope_dims[0] + rope_dims[1] + rope_dims[2] != head_dim())
    fail("rope_dim_list must add up to the head dim " + std::to_string(head_dim()));
  for (int r : rope_dims)
    if (r < 0 || r % 2) fail("rope_dim_list entries must be even and >= 0");
  if (latent_channels <= 0 || out_channels <= 0) fail("channel counts must be positive");
  if (num_blocks <= 0 || refiner_blocks < 0) fail("block counts must be positive");
  if (mlp_dim() <= 0 || text_dim <= 0 || text_len <= 0) fail("sizes must be positive");
  for (int p : patch_size)
    if (p <= 0) fail("patch_size entries must be positive");
  if (glyph && (byt5_dims[0] <= 0 || byt5_dims[1] <= 0 || byt5_dims[2] <= 0))
    fail("byT5 mapper sizes must be positive");
  if (vision_dim < 0) fail("vision_states_dim must be >= 0");
  if (cond_type_embedding && (!glyph || vision_dim == 0))
    fail("use_cond_type_embedding needs the glyph and vision projections (as the official code)");
}

namespace {
struct Preset {
  const char* name;
  models::Task task;
  bool meanflow;
};
// transformer/<version> of the HF release (HUNYUAN15.md section 1); the super-resolution
// versions are other models.
constexpr Preset kPresets[] = {
    {"hunyuanvideo-1.5-480p-t2v", models::Task::T2V, false},
    {"hunyuanvideo-1.5-480p-i2v", models::Task::I2V, false},
    {"hunyuanvideo-1.5-480p-t2v-distilled", models::Task::T2V, false},
    {"hunyuanvideo-1.5-480p-i2v-distilled", models::Task::I2V, false},
    {"hunyuanvideo-1.5-480p-i2v-step-distilled", models::Task::I2V, true},
    {"hunyuanvideo-1.5-720p-t2v", models::Task::T2V, false},
    {"hunyuanvideo-1.5-720p-i2v", models::Task::I2V, false},
    {"hunyuanvideo-1.5-720p-i2v-distilled", models::Task::I2V, false},
};
}  // namespace

std::vector<std::string> preset_config_names() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.emplace_back(p.name);
  return names;
}

bool is_preset_name(const std::string& name) {
  for (const Preset& p : kPresets)
    if (name == p.name) return true;
  return false;
}

HunyuanConfig preset_config(const std::string& name) {
  for (const Preset& p : kPresets) {
    if (name != p.name) continue;
    HunyuanConfig c;
    c.task = p.task;
    c.meanflow = p.meanflow;
    c.resolution = std::string(p.name).find("720p") != std::string::npos ? "720p" : "480p";
    return c;
  }
  std::string names;
  for (const std::string& n : preset_config_names()) names += (names.empty() ? "" : ", ") + n;
  throw Error("unknown HunyuanVideo 1.5 config '" + name + "' (known: " + names + ")");
}

namespace {
template <class T>
void read_field_as(const nlohmann::json& j, const char* key, T& out, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return;
  constexpr bool integral = std::is_integral_v<T>;
  if (integral ? !j[key].is_number_integer() : !j[key].is_number())
    throw Error(source + ": field '" + key + "' must be " + (integral ? "an integer" : "a number"));
  out = j[key].get<T>();
}
}  // namespace

void read_field(const nlohmann::json& j, const char* key, int& out, const std::string& source) {
  read_field_as(j, key, out, source);
}
void read_field(const nlohmann::json& j, const char* key, int64_t& out, const std::string& source) {
  read_field_as(j, key, out, source);
}
void read_field(const nlohmann::json& j, const char* key, double& out, const std::string& source) {
  read_field_as(j, key, out, source);
}

HunyuanConfig config_from_json(const nlohmann::json& j, const std::string& source,
                               HunyuanConfig c) {
  if (!j.is_object()) throw Error(source + ": config is not a JSON object");
  auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  if (j.contains("_class_name") && j["_class_name"].is_string() &&
      j["_class_name"].get<std::string>() != "HunyuanVideo_1_5_DiffusionTransformer")
    fail("_class_name is '" + j["_class_name"].get<std::string>() +
         "', not HunyuanVideo_1_5_DiffusionTransformer");
  if (!j.contains("_class_name") && !j.contains("mm_double_blocks_depth"))
    fail("not a HunyuanVideo 1.5 transformer config (no _class_name or mm_double_blocks_depth)");
  auto integer = [&](const char* key, int& out) { read_field(j, key, out, source); };
  auto number = [&](const char* key, double& out) { read_field(j, key, out, source); };
  auto boolean = [&](const char* key, bool& out) {
    if (!j.contains(key) || j[key].is_null()) return;
    if (!j[key].is_boolean()) fail(std::string("field '") + key + "' must be true or false");
    out = j[key].get<bool>();
  };
  auto triple = [&](const char* key, std::array<int, 3>& out) {
    if (!j.contains(key) || j[key].is_null()) return;
    const auto& a = j[key];
    if (!a.is_array() || a.size() != 3) fail(std::string(key) + " must be an array of 3 integers");
    for (int i = 0; i < 3; ++i) {
      if (!a[static_cast<size_t>(i)].is_number_integer())
        fail(std::string(key) + " must be an array of 3 integers");
      out[static_cast<size_t>(i)] = a[static_cast<size_t>(i)].get<int>();
    }
  };
  auto text = [&](const char* key) -> std::string {
    if (!j.contains(key) || j[key].is_null()) return {};
    if (!j[key].is_string()) fail(std::string("field '") + key + "' must be a string");
    return j[key].get<std::string>();
  };
  triple("patch_size", c.patch_size);
  integer("in_channels", c.latent_channels);
  boolean("concat_condition", c.concat_condition);
  c.out_channels = c.latent_channels;
  integer("out_channels", c.out_channels);
  integer("hidden_size", c.hidden);
  integer("heads_num", c.heads);
  number("mlp_width_ratio", c.mlp_ratio);
  integer("mm_double_blocks_depth", c.num_blocks);
  int single = 0;
  integer("mm_single_blocks_depth", single);
  if (single != 0)
    fail("mm_single_blocks_depth " + std::to_string(single) +
         ": single-stream blocks are not supported (no released model has them)");
  triple("rope_dim_list", c.rope_dims);
  number("rope_theta", c.rope_theta);
  integer("text_states_dim", c.text_dim);
  boolean("use_meanflow", c.meanflow);
  boolean("glyph_byT5_v2", c.glyph);
  triple("byt5_dims", c.byt5_dims);  // the fixtures' shrunk mapper; released: fixed
  integer("vision_states_dim", c.vision_dim);
  boolean("use_cond_type_embedding", c.cond_type_embedding);
  bool flag = false;
  boolean("guidance_embed", flag);
  if (flag) fail("guidance_embed: a guidance-embedding model is not supported");
  if (const std::string v = text("vision_projection"); !v.empty() && v != "linear") {
    if (v != "none") fail("vision_projection '" + v + "' is not supported");
    c.vision_dim = 0;
  }
  if (const std::string v = text("text_projection"); !v.empty() && v != "single_refiner")
    fail("text_projection '" + v + "' is not supported (only single_refiner)");
  if (!text("text_pool_type").empty())
    fail("text_pool_type: a pooled text vector is not supported");
  if (const std::string v = text("mlp_act_type"); !v.empty() && v != "gelu_tanh")
    fail("mlp_act_type '" + v + "' is not supported (only gelu_tanh)");
  if (const std::string v = text("qk_norm_type"); !v.empty() && v != "rms")
    fail("qk_norm_type '" + v + "' is not supported (only rms)");
  flag = true;
  boolean("qk_norm", flag);
  if (!flag) fail("qk_norm false is not supported");
  boolean("qkv_bias", flag);
  if (!flag) fail("qkv_bias false is not supported");
  if (const std::string v = text("ideal_resolution"); !v.empty()) {
    if (v != "480p" && v != "720p")
      fail("ideal_resolution '" + v +
           "' is not supported (480p or 720p; the super-resolution "
           "versions are not run)");
    c.resolution = v;
  }
  if (const std::string v = text("ideal_task"); !v.empty()) {
    if (v == "t2v")
      c.task = models::Task::T2V;
    else if (v == "i2v")
      c.task = models::Task::I2V;
  }
  c.validate(source);
  return c;
}

HunyuanConfig load_config(const std::string& name_or_path) {
  if (is_preset_name(name_or_path)) return preset_config(name_or_path);
  const std::optional<nlohmann::json> j = models::read_config_file(name_or_path);
  if (!j) return preset_config(name_or_path);  // throws with the list of names
  return config_from_json(*j, name_or_path);
}

}  // namespace fisdit::hunyuan15
