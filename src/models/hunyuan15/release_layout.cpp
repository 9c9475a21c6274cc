#include "models/hunyuan15/release_layout.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "fisdit/error.h"
#include "models/hunyuan15/family.h"
#include "models/hunyuan15/text_encoder.h"
#include "models/hunyuan15/vae.h"
#include "models/hunyuan15/vision_encoder.h"

namespace fisdit::hunyuan15 {

namespace fs = std::filesystem;

bool looks_like_release(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) return false;
  if (fs::is_directory(d / "text_encoder" / "llm") ||
      fs::is_directory(d / "vision_encoder" / "siglip"))
    return true;
  // transformer/<version>/ folders (a diffusers pipeline keeps its DiT in transformer/ itself).
  if (fs::is_directory(d / "transformer"))
    for (const auto& e : fs::directory_iterator(d / "transformer"))
      if (e.is_directory()) return true;
  return false;
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
  lines.push_back("release      HunyuanVideo 1.5 download layout: " + dir);
  // The DiT versions.
  const fs::path transformer = root / "transformer";
  std::vector<fs::path> versions;
  if (fs::is_directory(transformer))
    for (const auto& e : fs::directory_iterator(transformer))
      if (e.is_directory()) versions.push_back(e.path());
  std::sort(versions.begin(), versions.end());
  if (versions.empty())
    part("transformer", transformer / "<version>", "the DiT: transformer/<version>/", {});
  for (const fs::path& v : versions)
    part("transformer", v, "a DiT version", [&] {
      const ModelSource src = open_model(v.string());
      const HunyuanConfig& c = src.config;
      std::snprintf(buf, sizeof buf,
                    "%s: %d blocks, hidden %d, %d input channels%s (config from %s)",
                    v.filename().c_str(), c.num_blocks, c.hidden, c.in_dim(),
                    c.meanflow ? ", MeanFlow" : "", src.config_origin.c_str());
      return std::string(buf);
    });
  part("vae", root / "vae", "the VAE", [&] {
    const VaeSource v = open_vae((root / "vae").string());
    return v.path + " (" + (v.diffusers ? "diffusers" : "official") + " names, config from " +
           v.config_origin + ")";
  });
  const fs::path llm = root / "text_encoder" / "llm";
  part("text encoder", llm, "Qwen2.5-VL-7B-Instruct, for the prompt", [&] {
    const QwenTextSource q = open_qwen_text(llm.string());
    const QwenTextConfig& c = q.config;
    std::snprintf(
        buf, sizeof buf,
        "Qwen2.5-VL language model, hidden %lld, %d layers (%d run), %d heads (%d "
        "key/value), config from %s; tokenizer.json %s",
        static_cast<long long>(c.hidden), c.layers, c.layers_run(), c.heads, c.kv_heads,
        q.config_origin.c_str(),
        fs::exists(llm / "tokenizer.json") ? "present" : "MISSING (text-encode --tokenizer)");
    return std::string(buf);
  });
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
  part("image encoder", siglip, "SigLIP, for I2V's first frame", [&] {
    const SiglipSource s = open_siglip(siglip.string());
    std::snprintf(buf, sizeof buf,
                  "SigLIP, %d layers, hidden %lld, %d px, %lld tokens (config from %s)",
                  s.config.layers, static_cast<long long>(s.config.hidden), s.config.image_size,
                  static_cast<long long>(s.config.tokens()), s.config_origin.c_str());
    return std::string(buf);
  });
  lines.push_back(
      "generate     not yet for HunyuanVideo 1.5: run text-encode (--glyph), image encode, vae "
      "and denoise one by one");
  return lines;
}

}  // namespace fisdit::hunyuan15
