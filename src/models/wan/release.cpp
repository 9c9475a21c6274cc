#include "models/wan/release.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "fisdit/error.h"

namespace fisdit::wan {
namespace {

namespace fs = std::filesystem;

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// Files directly in `dir` whose lower-case name starts with `prefix` and ends with one of `exts`,
// sorted (so the choice is deterministic).
std::vector<fs::path> files_like(const fs::path& dir, const std::string& prefix,
                                 const std::vector<std::string>& exts) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    std::string name = entry.path().filename().string();
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (name.rfind(prefix, 0) != 0) continue;
    for (const std::string& e : exts)
      if (name.size() >= e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
        out.push_back(entry.path());
        break;
      }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool holds_dit(const fs::path& dir) {
  if (!is_dir(dir)) return false;
  return !files_like(dir, "", {".safetensors", ".safetensors.index.json"}).empty();
}

std::string pick(const std::string& override_path, const std::string& found) {
  return override_path.empty() ? found : override_path;
}

std::string first_or_empty(const std::vector<fs::path>& v) {
  return v.empty() ? std::string() : v.front().string();
}

ReleasePaths official(const fs::path& root, const ReleaseOverrides& o) {
  ReleasePaths r;
  r.layout = "official";
  const fs::path high = root / "high_noise_model", low = root / "low_noise_model";
  const bool has_high = holds_dit(high), has_low = holds_dit(low);
  if (has_high || has_low) {
    if (!has_high)
      throw Error(root.string() + ": low_noise_model/ is there but high_noise_model/ is missing " +
                  "or holds no .safetensors (an A14B release has both experts; download it again)");
    r.dit = high.string();
    if (has_low)
      r.dit_low = low.string();
    else if (o.dit_low.empty())
      throw ParamError("dit_low", ": " + root.string() +
                                      " has high_noise_model/ but low_noise_model/ is missing or "
                                      "holds no .safetensors (an A14B release has both experts); "
                                      "download it, or give the low-noise expert's path");
  } else {
    r.dit = root.string();  // TI2V-5B, Wan 2.1: the DiT shards are in the root
  }
  r.text_encoder = first_or_empty(files_like(root, "models_t5", {".pth", ".safetensors"}));
  std::vector<fs::path> vaes = files_like(root, "wan2.2_vae", {".pth", ".safetensors"});
  if (vaes.empty()) vaes = files_like(root, "wan2.1_vae", {".pth", ".safetensors"});
  r.vae = first_or_empty(vaes);
  for (const char* sub : {"google/umt5-xxl", "tokenizer", "umt5-xxl"})
    if (is_dir(root / sub)) {
      r.tokenizer = (root / sub).string();
      break;
    }
  return r;
}

ReleasePaths diffusers(const fs::path& root, const ReleaseOverrides& o) {
  ReleasePaths r;
  r.layout = "diffusers";
  const fs::path index = root / "model_index.json";
  std::ifstream in(index);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw Error(index.string() + ": not valid JSON (a diffusers model_index.json)");
  if (j.contains("boundary_ratio") && j["boundary_ratio"].is_number())
    r.boundary = j["boundary_ratio"].get<double>();
  if (!holds_dit(root / "transformer"))
    throw Error(root.string() + ": diffusers layout without transformer/ (or it holds no " +
                ".safetensors); download the transformer or pass a DiT with --model");
  r.dit = (root / "transformer").string();
  if (holds_dit(root / "transformer_2")) {
    r.dit_low = (root / "transformer_2").string();
  } else if (j.contains("transformer_2") && j["transformer_2"].is_array() &&
             !j["transformer_2"].empty() && !j["transformer_2"][0].is_null() && o.dit_low.empty()) {
    throw ParamError("dit_low", ": " + root.string() +
                                    "/model_index.json names transformer_2 (the low-noise expert) "
                                    "but transformer_2/ is missing; download it or give its path");
  }
  if (is_dir(root / "text_encoder")) r.text_encoder = (root / "text_encoder").string();
  if (is_dir(root / "tokenizer")) r.tokenizer = (root / "tokenizer").string();
  if (is_dir(root / "vae")) r.vae = (root / "vae").string();
  return r;
}

}  // namespace

ReleasePaths resolve_release(const std::string& model, const ReleaseOverrides& o, bool need_vae) {
  const fs::path root(model);
  ReleasePaths r;
  if (is_dir(root)) {
    r = is_file(root / "model_index.json") ? diffusers(root, o) : official(root, o);
  } else if (is_file(root)) {
    r.layout = "single file";
    r.dit = root.string();
  } else {
    throw ParamError("model", " " + model + ": no such file or directory");
  }
  r.dit_low = pick(o.dit_low, r.dit_low);
  r.text_encoder = pick(o.text_encoder, r.text_encoder);
  r.tokenizer = pick(o.tokenizer, r.tokenizer);
  r.vae = pick(o.vae, r.vae);
  const std::string where = ": not in " + model + " (" + r.layout + " layout, ";
  if (r.text_encoder.empty())
    throw ParamError("text_encoder",
                     where +
                         "looked for models_t5_*.pth/.safetensors and text_encoder/): give the "
                         "umT5 encoder's path");
  if (r.tokenizer.empty())
    throw ParamError("tokenizer", where +
                                      "looked for google/umt5-xxl/ and tokenizer/ with "
                                      "spiece.model): give the tokenizer's path");
  if (r.vae.empty() && need_vae)
    throw ParamError("vae", where +
                                "looked for Wan2.1_VAE.pth, Wan2.2_VAE.pth and vae/): give the "
                                "VAE's path");
  return r;
}

ReleaseOverrides overrides_of(const models::ReleaseOptions& options) {
  ReleaseOverrides o;
  for (const auto& [role, path] : options.parts) {
    if (path.empty()) continue;  // "as found"
    if (role == "dit_low")
      o.dit_low = path;
    else if (role == "text_encoder")
      o.text_encoder = path;
    else if (role == "tokenizer")
      o.tokenizer = path;
    else if (role == "vae")
      o.vae = path;
    else
      throw ParamError(role, " " + path +
                                 ": a Wan release has no such part (dit_low, text_encoder, "
                                 "tokenizer, vae)");
  }
  return o;
}

}  // namespace fisdit::wan
