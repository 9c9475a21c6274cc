// The VAE behind --vae: which layout a checkpoint holds (official WanVAE_ keys under a prefix, or
// diffusers' AutoencoderKLWan), its config (metadata, config.json or the tensor shapes), and the
// weights read through a WeightSource onto the backend (models/weights.h).
#include "models/wan/vae.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "fisdit/error.h"
#include "io/weights.h"
#include "models/weights.h"

namespace fisdit::wan {

namespace {
// A JSON array of numbers (latents_mean / latents_std), as diffusers_vae_config reads it.
std::vector<float> json_floats(const nlohmann::json& j) {
  std::vector<float> v;
  for (const auto& e : j) v.push_back(e.get<float>());
  return v;
}

// A diffusers AutoencoderKLWan: config.json (the checkpoint's, or beside the file) or the tensor
// shapes.
VaeSource open_diffusers_vae(const Checkpoint& ck, const std::string& path,
                             const std::string& prefix) {
  VaeSource src{ck, prefix, VaeConfig{}, "tensor shapes", {}, true};
  VaeConfig& v = src.config;
  const Shape conv_in = ck.find(prefix + "encoder.conv_in.weight")->shape;
  if (conv_in.size() != 5 || (conv_in[1] != 3 && conv_in[1] != 12))
    throw Error(path + ": '" + prefix + "encoder.conv_in.weight' has shape " + shape_str(conv_in) +
                ", expected [base_dim, 3 (Wan 2.1) or 12 (Wan 2.2), 3, 3, 3]");
  std::optional<std::string> config = ck.config_path();
  if (!config) {
    std::error_code ec;
    const std::filesystem::path beside = std::filesystem::path(path).parent_path() / "config.json";
    if (std::filesystem::is_regular_file(beside, ec)) config = beside.string();
  }
  if (config) {
    std::ifstream in(*config);
    const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw Error(*config + ": not valid JSON (a diffusers VAE config.json)");
    diffusers_vae_config(j, *config, v, src.stats);
    src.config_origin = "config.json";
    if ((conv_in[1] == 12) != (v.version == 22))
      throw Error(path + ": '" + prefix + "encoder.conv_in.weight' takes " +
                  std::to_string(conv_in[1]) + " channels but " + *config + " says is_residual " +
                  (v.version == 22 ? "true" : "false"));
  } else {
    v.version = conv_in[1] == 12 ? 22 : 21;
    v.dim = static_cast<int>(conv_in[0]);
    if (const TensorInfo* c2 = ck.find(prefix + "post_quant_conv.weight"))
      v.z_dim = static_cast<int>(c2->shape[0]);
    if (const TensorInfo* d1 = ck.find(prefix + "decoder.conv_in.weight"); d1 && v.version == 22)
      v.dec_dim = static_cast<int>(d1->shape[0] / v.dim_mult.back());
    // Wan 2.1: encoder.down_blocks.<i> is the official flat list; Wan 2.2:
    // encoder.down_blocks.0.resnets.<j> the first stage's res blocks.
    const std::string down =
        prefix + (v.version == 22 ? "encoder.down_blocks.0.resnets." : "encoder.down_blocks.");
    std::set<int> idx;
    for (const std::string& name : ck.names())
      if (name.compare(0, down.size(), down) == 0)
        idx.insert(std::atoi(name.c_str() + down.size()));
    const int stages = static_cast<int>(v.dim_mult.size()), n = static_cast<int>(idx.size());
    v.num_res_blocks = std::max(1, v.version == 22 ? n : (n - (stages - 1)) / stages);
  }
  v.validate(path);
  if (!src.stats.defined() && v.z_dim == 16) src.stats = wan21_latent_stats();
  if (!src.stats.defined() && v.z_dim == 48) src.stats = wan22_latent_stats();
  return src;
}
}  // namespace

VaeSource open_vae(const std::string& path) {
  Checkpoint ck = Checkpoint::open(path);
  const std::vector<std::string> names = ck.names();
  const std::string anchor = "encoder.conv1.weight";
  const std::optional<std::string> official = shortest_prefix(names, anchor);
  if (!official) {
    if (const std::optional<std::string> d = shortest_prefix(names, "encoder.conv_in.weight"))
      return open_diffusers_vae(ck, path, *d);
    throw Error(path + ": not a Wan VAE (no tensor 'encoder.conv1.weight' (official names) or " +
                "'encoder.conv_in.weight' (diffusers AutoencoderKLWan) under any prefix)");
  }
  const std::string prefix = *official;
  const Shape conv_in = ck.find(prefix + anchor)->shape;
  if (conv_in.size() != 5 || (conv_in[1] != 3 && conv_in[1] != 12))
    throw Error(path + ": '" + prefix + anchor + "' has shape " + shape_str(conv_in) +
                ", expected [dim, 3 (Wan 2.1) or 12 (Wan 2.2), 3, 3, 3]");

  VaeSource src{ck, prefix, VaeConfig{}, "tensor shapes", {}};
  src.config.version = conv_in[1] == 12 ? 22 : 21;
  const std::optional<nlohmann::json> meta = metadata_config(ck);
  try {
    if (meta) {
      const nlohmann::json& c = meta->at("constructor");
      VaeConfig& v = src.config;
      if (c.contains("dec_dim")) v.version = 22;
      v.dec_dim = c.value("dec_dim", v.version == 22 ? 256 : 0);  // WanVAE_ default 256
      v.dim = c.value("dim", v.dim);
      v.z_dim = c.value("z_dim", v.z_dim);
      if (c.contains("dim_mult")) v.dim_mult = c["dim_mult"].get<std::vector<int>>();
      v.num_res_blocks = c.value("num_res_blocks", v.num_res_blocks);
      if (c.contains("attn_scales")) v.attn_scales = c["attn_scales"].get<std::vector<double>>();
      if (c.contains("temperal_downsample"))
        v.temperal_downsample = c["temperal_downsample"].get<std::vector<bool>>();
      src.config_origin = "file metadata";
      if (meta->contains("real_model")) {
        const nlohmann::json& r = (*meta)["real_model"];
        if (r.contains("latents_mean") && r.contains("latents_std"))
          src.stats = {json_floats(r["latents_mean"]), json_floats(r["latents_std"])};
      }
    } else {
      // The released layout (Wan2_1_VAE: dim 96, 2 res blocks per stage, no attention);
      // dim, z_dim and the res-block count from the tensors.
      VaeConfig& v = src.config;
      v.dim = static_cast<int>(conv_in[0]);
      if (const TensorInfo* c2 = ck.find(prefix + "conv2.weight"))
        v.z_dim = static_cast<int>(c2->shape[0]);
      if (const TensorInfo* d1 = ck.find(prefix + "decoder.conv1.weight"))
        v.dec_dim = static_cast<int>(d1->shape[0] / v.dim_mult.back());
      if (v.version == 21) v.dec_dim = 0;
      // Wan 2.1: encoder.downsamples.<i> counts res blocks and resamples of every stage;
      // Wan 2.2: encoder.downsamples.0.downsamples.<j> counts the first stage's (+ 1 resample).
      const std::string down = prefix + (v.version == 22 ? "encoder.downsamples.0.downsamples."
                                                         : "encoder.downsamples.");
      std::set<int> idx;
      for (const std::string& name : ck.names())
        if (name.compare(0, down.size(), down) == 0)
          idx.insert(std::atoi(name.c_str() + down.size()));
      const int stages = static_cast<int>(v.dim_mult.size()), n = static_cast<int>(idx.size());
      v.num_res_blocks = std::max(1, v.version == 22 ? n - 1 : (n - (stages - 1)) / stages);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": bad VAE config in metadata: " + e.what());
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  src.config.validate(path);
  if (!src.stats.defined() && src.config.z_dim == 16) src.stats = wan21_latent_stats();
  if (!src.stats.defined() && src.config.z_dim == 48) src.stats = wan22_latent_stats();
  return src;
}

std::unique_ptr<WanVae> load_vae(const VaeSource& src, Backend* backend) {
  const WeightSource weights(src.checkpoint, [&src](const std::string& key) {
    return src.prefix + (src.diffusers ? diffusers_vae_key(key, src.config) : key);
  });
  std::set<std::string> used;
  const VaeWeightFn fn = [&](const std::string& key, const Shape&) {
    const TensorInfo* info = weights.info(key);
    if (!info)
      throw Error(src.checkpoint.path() + ": missing VAE tensor '" + weights.stored_name(key) +
                  "'" + (src.diffusers ? " (official '" + key + "')" : std::string()));
    used.insert(info->name);
    // At its stored shape: WanVae checks the shape itself, naming the official key. Without a
    // backend, WanVae runs on a CPU backend of its own: host fp32.
    return backend ? models::load_weight(weights, key, info->shape, *backend, DType::F32)
                   : models::host_weight(weights, key, info->shape);
  };
  try {
    auto vae = std::make_unique<WanVae>(src.config, fn, backend);
    if (src.diffusers)  // every AutoencoderKLWan tensor must be one the mapping produced
      for (const std::string& name : src.checkpoint.names())
        if (name.compare(0, src.prefix.size(), src.prefix) == 0 && !used.count(name))
          throw Error("tensor '" + name + "' is not a weight of this AutoencoderKLWan (" +
                      "no official WanVAE_ key maps to it)");
    return vae;
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.rfind(src.checkpoint.path(), 0) == 0) throw;
    throw Error(src.checkpoint.path() + ": " + what);
  }
}

}  // namespace fisdit::wan
