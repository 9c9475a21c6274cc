#include "models/wan/config.h"

#include <nlohmann/json.hpp>

#include "fisdit/error.h"
#include "models/family.h"

namespace fisdit::wan {

void WanConfig::validate(const std::string& source) const {
  auto fail = [&](const std::string& what) { throw Error(source + ": " + what); };
  for (int p : patch_size)
    if (p < 1) fail("patch_size entries must be >= 1");
  if (dim < 1 || num_heads < 1 || dim % num_heads != 0)
    fail("dim (" + std::to_string(dim) + ") must be a positive multiple of num_heads (" +
         std::to_string(num_heads) + ")");
  if (head_dim() % 2 != 0) fail("head_dim must be even for RoPE");
  if (ffn_dim < 1 || freq_dim < 2 || freq_dim % 2 != 0 || text_dim < 1 || text_len < 1 ||
      in_dim < 1 || out_dim < 1 || num_layers < 1)
    fail("dimensions must be positive (freq_dim even)");
  if (!(eps > 0)) fail("eps must be positive");
}

WanConfig preset_config(const std::string& name) {
  WanConfig c;
  if (name == "wan2.2-t2v-a14b" || name == "wan2.2-i2v-a14b" || name == "wan2.1-t2v-14b") {
    c.dim = 5120;
    c.ffn_dim = 13824;
    c.num_heads = 40;
    c.num_layers = 40;
    if (name == "wan2.2-i2v-a14b") {
      c.task = models::Task::I2V;
      c.in_dim = 36;
    }
  } else if (name == "wan2.2-ti2v-5b") {
    c.task = models::Task::TI2V;
    c.dim = 3072;
    c.ffn_dim = 14336;
    c.num_heads = 24;
    c.num_layers = 30;
    c.in_dim = 48;
    c.out_dim = 48;
  } else if (name == "wan2.1-t2v-1.3b") {
    c.dim = 1536;
    c.ffn_dim = 8960;
    c.num_heads = 12;
    c.num_layers = 30;
  } else {
    std::string names;
    for (const auto& n : preset_config_names()) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown model config '" + name + "' (known: " + names +
                ", or a path to a config.json)");
  }
  return c;
}

std::vector<std::string> preset_config_names() {
  return {"wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "wan2.1-t2v-1.3b",
          "wan2.1-t2v-14b"};
}

WanConfig config_from_json(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config is not a JSON object");
  WanConfig c;
  auto get_int = [&](const char* key, int& field, bool required) {
    if (!j.contains(key)) {
      if (required) throw Error(source + ": missing required field '" + key + "'");
      return;
    }
    if (!j[key].is_number_integer())
      throw Error(source + ": field '" + std::string(key) + "' must be an integer");
    field = j[key].get<int>();
  };
  if (j.contains("_class_name") && j["_class_name"].is_string() &&
      j["_class_name"].get<std::string>() != "WanModel")
    throw Error(source + ": _class_name is '" + j["_class_name"].get<std::string>() +
                "', expected 'WanModel'");
  if (j.contains("model_type")) {
    if (!j["model_type"].is_string()) throw Error(source + ": model_type must be a string");
    const std::string type = j["model_type"].get<std::string>();
    const std::optional<models::Task> task = models::parse_task(type);
    if (!task) throw Error(source + ": model_type must be t2v, i2v or ti2v, got '" + type + "'");
    c.task = *task;
  }
  get_int("dim", c.dim, true);
  get_int("ffn_dim", c.ffn_dim, true);
  get_int("freq_dim", c.freq_dim, false);
  get_int("in_dim", c.in_dim, true);
  get_int("out_dim", c.out_dim, true);
  get_int("num_heads", c.num_heads, true);
  get_int("num_layers", c.num_layers, true);
  get_int("text_len", c.text_len, false);
  get_int("text_dim", c.text_dim, false);
  if (j.contains("eps")) {
    if (!j["eps"].is_number()) throw Error(source + ": field 'eps' must be a number");
    c.eps = j["eps"].get<double>();
  }
  if (j.contains("patch_size")) {
    const auto& p = j["patch_size"];
    if (!p.is_array() || p.size() != 3)
      throw Error(source + ": patch_size must be an array of 3 integers");
    for (int i = 0; i < 3; ++i) {
      if (!p[i].is_number_integer())
        throw Error(source + ": patch_size must be an array of 3 integers");
      c.patch_size[i] = p[i].get<int>();
    }
  }
  for (const char* key : {"qk_norm", "cross_attn_norm"}) {
    if (j.contains(key) && !j[key].is_boolean())
      throw Error(source + ": field '" + std::string(key) + "' must be true or false");
  }
  if (j.contains("qk_norm")) c.qk_norm = j["qk_norm"].get<bool>();
  if (j.contains("cross_attn_norm")) c.cross_attn_norm = j["cross_attn_norm"].get<bool>();
  c.validate(source);
  return c;
}

WanConfig load_config(const std::string& name_or_path) {
  for (const auto& n : preset_config_names())
    if (n == name_or_path) return preset_config(n);
  const std::optional<nlohmann::json> j = models::read_config_file(name_or_path);
  if (!j) return preset_config(name_or_path);  // throws with the list of names
  return config_from_json(*j, name_or_path);
}

std::array<int, 3> vae_stride(const WanConfig& cfg) {
  return cfg.in_dim == 48 || cfg.out_dim == 48 ? std::array<int, 3>{4, 16, 16}
                                               : std::array<int, 3>{4, 8, 8};
}

}  // namespace fisdit::wan
