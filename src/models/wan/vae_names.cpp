// diffusers' AutoencoderKLWan in the official WanVAE_ terms: the name of every official key
// (diffusers_vae_key, after scripts/convert_wan_to_diffusers.py) and its config.json as a VaeConfig
// (diffusers_vae_config). Kept apart from the modules (vae.cpp) and from checkpoint detection
// (vae_loader.cpp), as the DiT keeps its names in keymap.cpp.
#include "models/wan/vae.h"

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "fisdit/error.h"

namespace fisdit::wan {

namespace {
// The residual-block part of a key: residual.{0,3}.gamma -> norm{1,2}.gamma, residual.{2,6}.X ->
// conv{1,2}.X, shortcut.X -> conv_shortcut.X (diffusers WanResidualBlock).
std::string diffusers_res(const std::string& tail, const std::string& key) {
  static const std::pair<const char*, const char*> kMap[] = {{"residual.0.gamma", "norm1.gamma"},
                                                             {"residual.3.gamma", "norm2.gamma"},
                                                             {"residual.2.", "conv1."},
                                                             {"residual.6.", "conv2."},
                                                             {"shortcut.", "conv_shortcut."}};
  for (const auto& [from, to] : kMap) {
    const std::string f = from;
    if (tail.compare(0, f.size(), f) == 0) return to + tail.substr(f.size());
  }
  throw Error("no diffusers name for VAE key '" + key + "'");
}

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

// "<n>.<rest>" -> n, rest; throws naming key otherwise.
std::pair<int, std::string> split_index(const std::string& s, const std::string& key) {
  size_t dot = s.find('.');
  if (dot == 0 || dot == std::string::npos || s.find_first_not_of("0123456789") != dot)
    throw Error("no diffusers name for VAE key '" + key + "'");
  return {std::stoi(s.substr(0, dot)), s.substr(dot + 1)};
}

std::vector<float> json_floats(const nlohmann::json& j) {
  std::vector<float> v;
  for (const auto& e : j) v.push_back(e.get<float>());
  return v;
}
}  // namespace

std::string diffusers_vae_key(const std::string& key, const VaeConfig& cfg) {
  const auto fail = [&]() -> std::string {
    throw Error("no diffusers name for VAE key '" + key + "'");
  };
  if (starts(key, "conv1.")) return "quant_conv." + key.substr(6);
  if (starts(key, "conv2.")) return "post_quant_conv." + key.substr(6);
  const bool enc = starts(key, "encoder."), dec = starts(key, "decoder.");
  if (!enc && !dec) return fail();
  const std::string side = key.substr(0, 8), k = key.substr(8);
  if (starts(k, "conv1.")) return side + "conv_in." + k.substr(6);
  if (k == "head.0.gamma") return side + "norm_out.gamma";
  if (starts(k, "head.2.")) return side + "conv_out." + k.substr(7);
  if (starts(k, "middle.0."))
    return side + "mid_block.resnets.0." + diffusers_res(k.substr(9), key);
  if (starts(k, "middle.1.")) return side + "mid_block.attentions.0." + k.substr(9);
  if (starts(k, "middle.2."))
    return side + "mid_block.resnets.1." + diffusers_res(k.substr(9), key);
  const auto resample = [](const std::string& t) {
    return starts(t, "resample.") || starts(t, "time_conv.");
  };
  const int nrb = cfg.num_res_blocks;
  if (cfg.version == 21) {
    if (enc && starts(k, "downsamples.")) {  // a flat list in both (WanEncoder3d.down_blocks)
      const auto [i, t] = split_index(k.substr(12), key);
      return side + "down_blocks." + std::to_string(i) + "." +
             (resample(t) ? t : diffusers_res(t, key));
    }
    if (dec && starts(k, "upsamples.")) {  // flat -> up_blocks.<stage>.{resnets.<r>, upsamplers.0}
      const auto [i, t] = split_index(k.substr(10), key);
      const int stage = i / (nrb + 2), r = i % (nrb + 2);
      const std::string blk = side + "up_blocks." + std::to_string(stage) + ".";
      if (r <= nrb && !resample(t))
        return blk + "resnets." + std::to_string(r) + "." + diffusers_res(t, key);
      if (r == nrb + 1 && resample(t)) return blk + "upsamplers.0." + t;
      return fail();
    }
    return fail();
  }
  // Wan 2.2: Down_ResidualBlock / Up_ResidualBlock keep their res blocks and resample in a
  // nested list (downsamples / upsamples); diffusers splits them into resnets and one
  // downsampler / upsampler.
  const std::string outer = enc ? "downsamples." : "upsamples.";
  if (!starts(k, outer)) return fail();
  const auto [i, t] = split_index(k.substr(outer.size()), key);
  const std::string blk = side + (enc ? "down_blocks." : "up_blocks.") + std::to_string(i) + ".";
  if (!starts(t, outer)) return fail();
  const auto [j, u] = split_index(t.substr(outer.size()), key);
  if (resample(u)) return blk + (enc ? "downsampler." : "upsampler.") + u;
  return blk + "resnets." + std::to_string(j) + "." + diffusers_res(u, key);
}

void diffusers_vae_config(const nlohmann::json& j, const std::string& where, VaeConfig& v,
                          LatentStats& stats) {
  const auto fail = [&](const std::string& what) { throw Error(where + ": " + what); };
  if (!j.is_object()) fail("not a JSON object (a diffusers AutoencoderKLWan config.json)");
  if (j.contains("_class_name") && j["_class_name"] != "AutoencoderKLWan")
    fail("_class_name is " + j["_class_name"].dump() + ", expected \"AutoencoderKLWan\"");
  try {
    const bool residual = j.value("is_residual", false);
    v.version = residual ? 22 : 21;
    v.dim = j.value("base_dim", 96);
    const auto& dbd = j.find("decoder_base_dim");
    v.dec_dim = dbd == j.end() || dbd->is_null() ? 0 : dbd->get<int>();
    if (!residual && v.dec_dim != 0 && v.dec_dim != v.dim)
      fail("decoder_base_dim " + std::to_string(v.dec_dim) + " without is_residual is not a " +
           "Wan VAE (only the Wan 2.2 VAE has its own decoder width)");
    v.z_dim = j.value("z_dim", 16);
    if (j.contains("dim_mult")) v.dim_mult = j["dim_mult"].get<std::vector<int>>();
    v.num_res_blocks = j.value("num_res_blocks", 2);
    if (j.contains("attn_scales")) v.attn_scales = j["attn_scales"].get<std::vector<double>>();
    if (j.contains("temperal_downsample"))
      v.temperal_downsample = j["temperal_downsample"].get<std::vector<bool>>();
    const auto& ps = j.find("patch_size");
    const int patch = ps == j.end() || ps->is_null() ? 1 : ps->get<int>();
    if (patch != (residual ? 2 : 1))
      fail("patch_size " + std::to_string(patch) + " with is_residual " +
           (residual ? "true" : "false") + " (the Wan 2.1 VAE has none, the Wan 2.2 VAE 2)");
    for (const char* io : {"in_channels", "out_channels"})
      if (j.value(io, 3) != 3 * patch * patch)
        fail(std::string(io) + " " + std::to_string(j.value(io, 3)) + ", expected " +
             std::to_string(3 * patch * patch) + " (RGB with patch_size " + std::to_string(patch) +
             ")");
    stats = {};
    if (j.contains("latents_mean") || j.contains("latents_std")) {
      if (!j.contains("latents_mean") || !j.contains("latents_std"))
        fail("latents_mean and latents_std go together");
      stats = {json_floats(j["latents_mean"]), json_floats(j["latents_std"])};
      if (static_cast<int>(stats.mean.size()) != v.z_dim ||
          static_cast<int>(stats.std.size()) != v.z_dim)
        fail("latents_mean / latents_std have " + std::to_string(stats.mean.size()) + " / " +
             std::to_string(stats.std.size()) + " values, z_dim is " + std::to_string(v.z_dim));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("bad AutoencoderKLWan config: ") + e.what());
  }
  v.validate(where);
}

}  // namespace fisdit::wan
