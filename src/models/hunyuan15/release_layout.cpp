#include "models/hunyuan15/release_layout.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"
#include "models/hunyuan15/family.h"
#include "models/hunyuan15/text_encoder.h"
#include "models/hunyuan15/vae.h"
#include "models/hunyuan15/vision_encoder.h"

namespace fisdit::hunyuan15 {

namespace fs = std::filesystem;

bool is_diffusers_pipeline(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "model_index.json");
  if (!in) return false;
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("_class_name") ||
      !j["_class_name"].is_string())
    return false;
  return j["_class_name"].get<std::string>().rfind("HunyuanVideo15", 0) == 0;
}

std::vector<std::string> release_versions(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(fs::path(root) / "transformer", ec))
    if (e.is_directory(ec)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string default_version(const std::vector<std::string>& versions, models::Task task) {
  static const std::vector<std::string> t2v = {"480p_t2v_distilled", "480p_t2v",
                                               "720p_t2v_distilled", "720p_t2v"};
  static const std::vector<std::string> i2v = {"480p_i2v_step_distilled", "480p_i2v_distilled",
                                               "480p_i2v", "720p_i2v_distilled", "720p_i2v"};
  for (const std::string& v : task == models::Task::T2V ? t2v : i2v)
    if (std::find(versions.begin(), versions.end(), v) != versions.end()) return v;
  return "";
}

bool looks_like_release(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) return false;
  return is_diffusers_pipeline(dir) || fs::is_directory(d / "text_encoder" / "llm") ||
         fs::is_directory(d / "vision_encoder" / "siglip") || !release_versions(dir).empty();
}

std::vector<std::string> describe_release(const std::string& dir) {
  const fs::path root(dir);
  std::vector<std::string> lines;
  char buf[512];
  // One part: its line from `read` when the path exists, "missing" otherwise, "unreadable" when
  // reading it throws.
  auto part = [&](const char* name, const fs::path& path, const char* purpose,
                  const std::function<std::string()>& read) {
    std::string text;
    if (!fs::exists(path)) {
      text = "missing     " + path.string() + " (" + purpose + ")";
    } else {
      try {
        text = "found       " + read();
      } catch (const Error& e) {
        text = "unreadable  " + std::string(e.what());
      }
    }
    std::snprintf(buf, sizeof buf, "  %-14s %s", name, text.c_str());
    lines.emplace_back(buf);
  };
  auto qwen_line = [&](const fs::path& encoder, const fs::path& tokenizer) {
    const QwenTextSource q = open_qwen_text(encoder.string());
    const QwenTextConfig& c = q.config;
    std::snprintf(buf, sizeof buf,
                  "Qwen2.5-VL language model, hidden %lld, %d layers (%d run), %d heads (%d "
                  "key/value), config from %s; %s %s",
                  static_cast<long long>(c.hidden), c.layers, c.layers_run(), c.heads, c.kv_heads,
                  q.config_origin.c_str(), tokenizer.string().c_str(),
                  fs::exists(tokenizer) ? "present" : "MISSING (--tokenizer)");
    return std::string(buf);
  };
  auto siglip_line = [&](const fs::path& path) {
    const SiglipSource s = open_siglip(path.string());
    std::snprintf(buf, sizeof buf,
                  "SigLIP, %d layers, hidden %lld, %d px, %lld tokens (config from %s)",
                  s.config.layers, static_cast<long long>(s.config.hidden), s.config.image_size,
                  static_cast<long long>(s.config.tokens()), s.config_origin.c_str());
    return std::string(buf);
  };
  auto dit_line = [&](const fs::path& v, const std::string& name) {
    const ModelSource src = open_model(v.string());
    const HunyuanConfig& c = src.config;
    std::snprintf(buf, sizeof buf,
                  "%s: %d blocks, hidden %d, %d input channels, %s%s (config from %s)",
                  name.c_str(), c.num_blocks, c.hidden, c.in_dim(), models::task_name(c.task),
                  c.meanflow ? ", MeanFlow" : "", src.config_origin.c_str());
    return std::string(buf);
  };
  auto vae_line = [&](const fs::path& path) {
    const VaeSource v = open_vae(path.string());
    return v.path + " (" + (v.diffusers ? "diffusers" : "official") + " names, config from " +
           v.config_origin + ")";
  };
  if (is_diffusers_pipeline(dir)) {
    lines.push_back("release      HunyuanVideo 1.5 diffusers pipeline: " + dir);
    part("transformer", root / "transformer", "the DiT",
         [&] { return dit_line(root / "transformer", "transformer"); });
    part("vae", root / "vae", "the VAE", [&] { return vae_line(root / "vae"); });
    part("text encoder", root / "text_encoder", "Qwen2.5-VL's language model, for the prompt",
         [&] { return qwen_line(root / "text_encoder", root / "tokenizer" / "tokenizer.json"); });
    part("glyph encoder", root / "text_encoder_2", "byT5 with the Glyph-SDXL-v2 weights", [&] {
      if (!fs::exists(root / "tokenizer_2" / "tokenizer_config.json"))
        throw Error((root / "tokenizer_2" / "tokenizer_config.json").string() + " is missing");
      return (root / "text_encoder_2").string() + " with tokenizer_2/";
    });
    part("image encoder", root / "image_encoder", "SigLIP, for I2V's first frame",
         [&] { return siglip_line(root / "image_encoder"); });
    lines.push_back("generate     fisdit generate --model " + dir +
                    " (one DiT: --image for an i2v pipeline)");
    return lines;
  }
  lines.push_back("release      HunyuanVideo 1.5 download layout: " + dir);
  // The DiT versions.
  const fs::path transformer = root / "transformer";
  const std::vector<std::string> versions = release_versions(dir);
  if (versions.empty())
    part("transformer", transformer / "<version>", "the DiT: transformer/<version>/", {});
  for (const std::string& v : versions)
    part("transformer", transformer / v, "a DiT version",
         [&] { return dit_line(transformer / v, v); });
  part("vae", root / "vae", "the VAE", [&] { return vae_line(root / "vae"); });
  const fs::path llm = root / "text_encoder" / "llm";
  part("text encoder", llm, "Qwen2.5-VL-7B-Instruct, for the prompt",
       [&] { return qwen_line(llm, llm / "tokenizer.json"); });
  const fs::path glyph = root / "text_encoder" / "Glyph-SDXL-v2";
  part("glyph encoder", glyph / "checkpoints" / "byt5_model.pt",
       "byT5 with the Glyph-SDXL-v2 weights, for quoted text", [&] {
         std::string s = (glyph / "checkpoints" / "byt5_model.pt").string();
         for (const char* asset : {"color_idx.json", "multilingual_10-lang_idx.json"})
           if (!fs::exists(glyph / "assets" / asset))
             throw Error((glyph / "assets" / asset).string() + " is missing");
         s += "; byt5-small/config.json ";
         s += fs::exists(root / "text_encoder" / "byt5-small" / "config.json")
                  ? "present"
                  : "missing (defaults: distance 128, eps 1e-6)";
         return s;
       });
  const fs::path siglip = root / "vision_encoder" / "siglip";
  part("image encoder", siglip, "SigLIP, for I2V's first frame",
       [&] { return siglip_line(siglip); });
  // Which version generate runs by default, for each task.
  for (const models::Task task : {models::Task::I2V, models::Task::T2V}) {
    const std::string pick = default_version(versions, task);
    lines.push_back(std::string("generate     ") + models::task_name(task) + ": " +
                    (pick.empty() ? std::string("no version for it here")
                                  : pick + (task == models::Task::I2V ? " (with --image)"
                                                                      : " (without --image)")) +
                    "; --transformer-version names another");
  }
  return lines;
}

}  // namespace fisdit::hunyuan15
