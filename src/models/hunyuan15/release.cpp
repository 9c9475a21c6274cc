// The HunyuanVideo 1.5 release (release.h): where its parts are, and its stages. Built with the
// pipeline and the Qwen2 tokenizer.
#include "models/hunyuan15/release.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "fisdit/error.h"
#include "media/image.h"
#include "models/hunyuan15/family.h"
#include "models/hunyuan15/glyph.h"
#include "models/hunyuan15/qwen_tokenizer.h"
#include "models/hunyuan15/release_layout.h"
#include "models/hunyuan15/text_encoder.h"
#include "models/hunyuan15/text_prompt.h"
#include "models/hunyuan15/vae.h"
#include "models/hunyuan15/vision_encoder.h"
#include "models/weights.h"

namespace fisdit::hunyuan15 {
namespace {

namespace fs = std::filesystem;

bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool present(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// A transformer/<version>/ folder of a download root: the root, else nullopt.
std::optional<fs::path> root_of_version(const fs::path& dir) {
  const fs::path parent = dir.lexically_normal().parent_path();
  if (dir.filename().empty() || parent.filename() != "transformer") return std::nullopt;
  if (!looks_like_release(parent.parent_path().string())) return std::nullopt;
  return parent.parent_path();
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

struct Overrides {
  std::string version, text_encoder, tokenizer, glyph, vision_encoder, vae;
};

Overrides overrides_of(const models::ReleaseOptions& options) {
  Overrides o;
  for (const auto& [role, path] : options.parts) {
    if (path.empty()) continue;
    if (role == "version")
      o.version = path;
    else if (role == "text_encoder")
      o.text_encoder = path;
    else if (role == "tokenizer")
      o.tokenizer = path;
    else if (role == "glyph")
      o.glyph = path;
    else if (role == "vision_encoder")
      o.vision_encoder = path;
    else if (role == "vae")
      o.vae = path;
    else
      throw ParamError(role, " " + path +
                                 ": a HunyuanVideo 1.5 release has no such part (version, "
                                 "text_encoder, tokenizer, glyph, vision_encoder, vae)");
  }
  return o;
}

std::string pick(const std::string& given, const fs::path& found) {
  if (!given.empty()) return given;
  return present(found) ? found.string() : std::string();
}

// The version of `root` to run: the one named, else default_version's for the task (either
// task's, I2V first, when it is not known), else the only one.
std::string choose_version(const fs::path& root, const std::vector<std::string>& versions,
                           const std::string& named, std::optional<models::Task> task) {
  if (!named.empty()) {
    if (std::find(versions.begin(), versions.end(), named) == versions.end())
      throw ParamError("version", " " + named + ": not in " + (root / "transformer").string() +
                                      " (found: " + joined(versions) + ")");
    return named;
  }
  std::string pick = default_version(versions, task.value_or(models::Task::I2V));
  if (pick.empty() && !task) pick = default_version(versions, models::Task::T2V);
  if (!pick.empty()) return pick;
  if (versions.size() == 1) return versions.front();
  throw ParamError("version",
                   ": " + (root / "transformer").string() + " holds " + joined(versions) +
                       (task ? std::string(", none made for ") + models::task_name(*task) : "") +
                       "; name one with --transformer-version");
}

}  // namespace

bool owns_release(const std::string& path) {
  const fs::path p(path);
  if (!is_dir(p)) return false;
  return looks_like_release(path) || root_of_version(p).has_value();
}

ReleasePaths resolve_release(const std::string& model, const models::ReleaseOptions& options) {
  const Overrides o = overrides_of(options);
  const fs::path path(model);
  if (!present(path)) throw ParamError("model", " " + model + ": no such file or directory");
  ReleasePaths r;
  if (is_diffusers_pipeline(model)) {
    r.layout = "diffusers";
    r.root = path.string();
    if (!o.version.empty())
      throw ParamError(
          "version",
          " " + o.version + ": a diffusers pipeline holds one transformer/ (no versions)");
    r.dit = (path / "transformer").string();
    if (!is_dir(path / "transformer"))
      throw ParamError("model", " " + model + ": diffusers layout without transformer/");
    r.text_encoder = pick(o.text_encoder, path / "text_encoder");
    r.tokenizer = pick(o.tokenizer, path / "tokenizer");
    r.glyph = pick(o.glyph, path / "text_encoder_2");
    if (o.glyph.empty() && !r.glyph.empty()) {
      r.glyph_tokenizer = pick("", path / "tokenizer_2");
      if (r.glyph_tokenizer.empty())
        throw ParamError("glyph", ": " + model +
                                      " has text_encoder_2/ (the glyph encoder) but no "
                                      "tokenizer_2/ (its tokens); download it");
    }
    r.vision_encoder = pick(o.vision_encoder, path / "image_encoder");
    r.vae = pick(o.vae, path / "vae");
  } else {
    fs::path root = path;
    std::string named = o.version;
    if (const std::optional<fs::path> up = root_of_version(path)) {
      root = *up;
      const std::string here = path.lexically_normal().filename().string();
      if (!named.empty() && named != here)
        throw ParamError("version", " " + named + ": --model names the version " + here);
      named = here;
    } else if (!looks_like_release(model)) {
      throw ParamError("model", " " + model +
                                    ": not a HunyuanVideo 1.5 release (no transformer/<version>/, "
                                    "text_encoder/llm/ or vision_encoder/siglip/, nor a diffusers "
                                    "model_index.json)");
    }
    r.layout = "official";
    r.root = root.string();
    r.versions = release_versions(r.root);
    if (r.versions.empty())
      throw ParamError("model", " " + r.root +
                                    ": no transformer/<version>/ folder (download the DiT: "
                                    "transformer/480p_i2v_step_distilled, ...)");
    r.version = choose_version(root, r.versions, named, options.task);
    if (r.version.find("_sr_") != std::string::npos)
      throw ParamError("version", " " + r.version +
                                      ": the super-resolution versions refine another version's "
                                      "latent and are not run by fisdit");
    r.dit = (root / "transformer" / r.version).string();
    r.text_encoder = pick(o.text_encoder, root / "text_encoder" / "llm");
    r.tokenizer = pick(o.tokenizer, root / "text_encoder" / "llm" / "tokenizer.json");
    if (!o.glyph.empty())
      r.glyph = o.glyph;
    else if (is_dir(root / "text_encoder" / "Glyph-SDXL-v2"))
      r.glyph = (root / "text_encoder").string();
    r.vision_encoder = pick(o.vision_encoder, root / "vision_encoder" / "siglip");
    r.vae = pick(o.vae, root / "vae");
  }
  // A tokenizer folder must hold tokenizer.json.
  if (!r.tokenizer.empty() && is_dir(r.tokenizer) &&
      !present(fs::path(r.tokenizer) / "tokenizer.json"))
    r.tokenizer.clear();
  const std::string where = ": not in " + r.root + " (" + r.layout + " layout, looked for ";
  const bool official = r.layout == "official";
  if (r.text_encoder.empty())
    throw ParamError("text_encoder", where + (official ? "text_encoder/llm/" : "text_encoder/") +
                                         "): download Qwen2.5-VL-7B-Instruct there, or give the "
                                         "text encoder's path");
  if (r.tokenizer.empty())
    throw ParamError(
        "tokenizer",
        where + (official ? "text_encoder/llm/tokenizer.json" : "tokenizer/tokenizer.json") +
            "): give Qwen2.5's tokenizer.json");
  if (r.vae.empty() && options.vae) throw ParamError("vae", where + "vae/): give the VAE's path");
  return r;
}

models::RequestDefaults version_defaults(const std::string& version, bool meanflow,
                                         const std::string& resolution) {
  models::RequestDefaults d;
  const bool p720 = resolution == "720p";
  const bool i2v = version.find("i2v") != std::string::npos;
  const bool distilled = meanflow || version.find("distilled") != std::string::npos;
  d.shift = meanflow ? 7.0 : p720 ? (i2v ? 7.0 : 9.0) : 5.0;
  d.guidance = distilled ? 1.0f : 6.0f;
  d.steps = meanflow ? 8 : 50;
  d.frames = 121;
  d.size = p720 ? "1280x720" : "848x480";
  d.source = "HunyuanVideo 1.5 " + (version.empty() ? std::string("release") : version) +
             " (the official settings)";
  return d;
}

namespace {

// An encoder whose states are `have` channels wide where the DiT's `field` takes `want`.
void expect_width(const char* part, const std::string& path, int64_t have, const char* field,
                  int64_t want) {
  if (have != want)
    throw ParamError(part, " " + path + ": its states have " + std::to_string(have) +
                               " channels, the DiT's " + field + " is " + std::to_string(want));
}

class HunyuanRelease final : public models::Release {
 public:
  HunyuanRelease(const std::string& model, const models::ReleaseOptions& options)
      : options_(options), paths_(resolve_release(model, options)) {
    if (!options.lora_high.empty() || !options.lora_low.empty())
      throw ParamError(options.lora_high.empty() ? "lora_low" : "lora_high",
                       ": LoRAs are not supported for HunyuanVideo 1.5");
    dit_src_ = open_model(paths_.dit);
    const HunyuanConfig& c = dit_src_->config;
    const std::string dit_name =
        paths_.version.empty() ? paths_.dit : "transformer/" + paths_.version;
    text_src_ = open_qwen_text(paths_.text_encoder);
    expect_width("text_encoder", paths_.text_encoder, text_src_->config.hidden, "text_states_dim",
                 c.text_dim);
    if (c.task == models::Task::I2V) {
      if (paths_.vision_encoder.empty())
        throw ParamError(
            "vision_encoder",
            ": not in " + paths_.root + " (looked for " +
                (paths_.layout == "official" ? "vision_encoder/siglip/" : "image_encoder/") +
                "): the image-to-video " + dit_name +
                " needs the SigLIP image encoder (FLUX.1-Redux-dev's); download "
                "it, or give its path");
      vision_src_ = open_siglip(paths_.vision_encoder);
      expect_width("vision_encoder", paths_.vision_encoder, vision_src_->config.hidden,
                   "vision_states_dim", c.vision_dim);
    }
    if (options.vae) {
      vae_src_ = open_vae(paths_.vae);
      if (vae_src_->config.latent_channels != c.latent_channels)
        throw ParamError("vae", " " + paths_.vae + ": its latent has " +
                                    std::to_string(vae_src_->config.latent_channels) +
                                    " channels, the DiT's " + std::to_string(c.latent_channels));
    }
    resolution_ = !c.resolution.empty()                  ? c.resolution
                  : paths_.version.rfind("720p", 0) == 0 ? "720p"
                                                         : "480p";
    models::ReleaseInfo& i = info_;
    i.family = "hunyuan15";
    i.layout = paths_.layout;
    i.parts = {{"dit", paths_.dit},
               {"text_encoder", paths_.text_encoder},
               {"tokenizer", paths_.tokenizer},
               {"glyph", paths_.glyph},
               {"vision_encoder", paths_.vision_encoder},
               {"vae", paths_.vae}};
    i.model = model_info(c);
    if (vae_src_)
      i.model.vae_stride = {vae_src_->config.ffactor_temporal, vae_src_->config.ffactor_spatial,
                            vae_src_->config.ffactor_spatial};
    i.two_experts = false;
    i.image_fit = models::ImageFit::CoverCropRounded;
    i.fps = 24;
    i.defaults = version_defaults(paths_.version, c.meanflow, resolution_);
  }

  const models::ReleaseInfo& info() const override { return info_; }

  // The size bucket of the version's resolution closest to the image's (or the requested
  // size's) aspect ratio, as the official pipeline picks it.
  std::pair<int, int> frame_size(int width, int height, int image_width,
                                 int image_height) const override {
    (void)width;
    (void)height;
    const ImageSize s = hunyuan15_video_size(
        image_width, image_height, resolution_ == "720p" ? 960 : 640, info_.model.vae_stride[1]);
    return {s.width, s.height};
  }

  std::vector<models::EncodedText> encode_text(const std::vector<std::string>& prompts,
                                               Backend& backend, double* load_seconds) override {
    const auto t0 = std::chrono::steady_clock::now();
    if (qwen_ && qwen_on_ != &backend) unload(Part::TextEncoder);
    if (!tokenizer_) tokenizer_ = std::make_unique<QwenTokenizer>(paths_.tokenizer);
    if (!qwen_) {
      qwen_ = load_qwen_text(*text_src_, backend);
      qwen_->set_resident(options_.resident_text_encoder && backend.device() != Device::CPU);
      qwen_on_ = &backend;
    }
    // Which prompts quote text (only those need the glyph encoder).
    std::vector<bool> quotes;
    for (const std::string& p : prompts) quotes.push_back(!glyph_texts(p).empty());
    if (!glyph_ && std::find(quotes.begin(), quotes.end(), true) != quotes.end())
      glyph_ = load_glyph(backend);
    if (load_seconds)
      *load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<models::EncodedText> out;
    for (size_t n = 0; n < prompts.size(); ++n) {
      const std::string& prompt = prompts[n];
      const PromptTokens pt = prompt_tokens(*tokenizer_, prompt);
      if (pt.dropped > 0)
        std::fprintf(stderr,
                     "warning: the prompt has %lld tokens; HunyuanVideo 1.5's text encoder takes "
                     "%lld, so the last %lld are cut (as the official pipeline cuts them)\n",
                     static_cast<long long>(pt.prompt_tokens() + pt.dropped),
                     static_cast<long long>(kTextMaxLength), static_cast<long long>(pt.dropped));
      const Tensor all = qwen_->encode(pt.ids);
      models::EncodedText e;
      e.context.states = all.slice_rows(pt.crop_start, all.dim(0)).clone();
      e.tokens = pt.prompt_tokens();
      if (quotes[n]) {
        Tensor byt5 = glyph_->encode(prompt);
        if (byt5.dim(0) > 0) e.context.extra["byt5"] = std::move(byt5);
      }
      out.push_back(std::move(e));
    }
    return out;
  }

  models::FirstFrame encode_image(const Tensor& image, int frames, Backend& backend,
                                  const models::StageProgress& progress) override {
    const HunyuanConfig& c = dit_src_->config;
    if (c.task != models::Task::I2V)
      throw ParamError("image", ": " + paths_.dit + " is a text-to-video model and takes no image");
    // The first frame as a one-frame video: its posterior mode, scaled as the pipeline scales it.
    HunyuanVae& vae = vae_on(backend);
    Tensor cond = vae.encode(image.clone().reshape({image.dim(0), 1, image.dim(1), image.dim(2)}));
    if (progress) progress(1, 2, "VAE encode");
    const float scale = static_cast<float>(vae_src_->config.scaling_factor);
    const int64_t lat_f = (frames - 1) / vae_src_->config.ffactor_temporal + 1;
    const int64_t z = cond.dim(0), plane = cond.dim(2) * cond.dim(3);
    models::FirstFrame out;
    out.y = Tensor::zeros({z + 1, lat_f, cond.dim(2), cond.dim(3)});
    float* y = out.y.f32();
    const float* src = cond.f32();
    for (int64_t ch = 0; ch < z; ++ch)
      for (int64_t i = 0; i < plane; ++i) y[ch * lat_f * plane + i] = src[ch * plane + i] * scale;
    std::fill(y + z * lat_f * plane, y + z * lat_f * plane + plane, 1.0f);  // the mask, frame 0
    // SigLIP sees the same fitted image, resized by its processor to its square.
    if (!siglip_ || siglip_on_ != &backend) {
      siglip_ = load_siglip(*vision_src_, backend);
      siglip_on_ = &backend;
    }
    const int side = siglip_->config().image_size;
    out.text_extra["vision"] =
        siglip_->encode(resize_image(image, side, side, ResizeFilter::PilBicubic));
    if (progress) progress(2, 2, "SigLIP");
    return out;
  }

  models::FirstFrame no_image(const models::LatentGrid& grid) const override {
    models::FirstFrame out;
    const HunyuanConfig& c = dit_src_->config;
    if (c.concat_condition)  // T2V: condition latent and mask all zero
      out.y = Tensor::zeros({c.latent_channels + 1, grid.frames, grid.height, grid.width});
    return out;
  }

  models::VelocityModel& expert(bool high_noise, Backend& backend,
                                std::string* load_report) override {
    (void)high_noise;
    if (dit_ && &dit_->backend() != &backend) dit_.reset();
    if (!dit_) {
      dit_ = load_dit(*dit_src_, backend, options_.precision);
      if (load_report) *load_report = paths_.dit;
    }
    return *dit_;
  }

  bool prepares_experts() const override { return true; }

  // The DiT's files read ahead (its load converts on the device, or on the host as it uploads).
  int64_t prepare_expert(bool, Device, std::stop_token stop, const models::UploadAhead&) override {
    const int64_t available = models::host_memory_available();
    return models::read_ahead(dit_src_->checkpoint, available > 0 ? available / 2 : 0,
                              std::move(stop));
  }

  Tensor decode(const Tensor& latent, Backend& backend, const models::StageProgress& progress,
                const FrameSink& frames) override {
    if (!vae_src_) throw Error("this release was opened without its VAE");
    const VaeConfig& vc = vae_src_->config;
    if (latent.ndim() != 4 || latent.dim(0) != vc.latent_channels)
      throw Error("decode: expects a latent [" + std::to_string(vc.latent_channels) +
                  ", F, H, W], got " + shape_str(latent.shape()));
    HunyuanVae& vae = vae_on(backend);
    Tensor z = latent.clone();
    const float inv = static_cast<float>(1.0 / vc.scaling_factor);
    float* p = z.f32();
    const int64_t nz = z.numel();
#pragma omp parallel for schedule(static) if (nz > (int64_t{1} << 20))
    for (int64_t i = 0; i < nz; ++i) p[i] *= inv;
    // The pipeline decodes in spatial tiles on GPUs with more than 21 GB (256 pixels, 1/8
    // overlap); fisdit always does: it bounds the memory and matches the official output there.
    Tensor video = vae.decode(z, VaeTiling{true, 256, 0.125}, [&](int done, int total) {
      if (progress) progress(done, total, "tile " + std::to_string(done));
    });
    float* v = video.f32();
    const int64_t nv = video.numel();
#pragma omp parallel for schedule(static) if (nv > (int64_t{1} << 20))
    for (int64_t i = 0; i < nv; ++i) v[i] = std::clamp(v[i], -1.0f, 1.0f);
    if (frames) frames(video, 0, video.dim(1));
    return video;
  }

  void unload(Part part) override {
    switch (part) {
      case Part::TextEncoder:
        qwen_.reset();
        tokenizer_.reset();
        glyph_.reset();
        qwen_on_ = nullptr;
        break;
      case Part::HighExpert:
      case Part::LowExpert:
        dit_.reset();
        break;
      case Part::Vae:
        vae_.reset();
        siglip_.reset();
        siglip_on_ = nullptr;
        break;
    }
  }

 private:
  HunyuanVae& vae_on(Backend& backend) {
    if (!vae_src_) throw Error("this release was opened without its VAE");
    if (!vae_ || vae_on_ != &backend) {
      vae_ = std::make_unique<HunyuanVae>(vae_src_->config, vae_src_->weights, backend);
      vae_on_ = &backend;
    }
    return *vae_;
  }

  std::unique_ptr<GlyphEncoder> load_glyph(Backend& backend) const {
    if (paths_.glyph.empty())
      throw ParamError(
          "glyph",
          ": the prompt quotes text (\"...\"), which HunyuanVideo 1.5 encodes with "
          "its byT5 glyph encoder, and it is not in " +
              paths_.root + " (looked for " +
              (paths_.layout == "official" ? "text_encoder/Glyph-SDXL-v2/" : "text_encoder_2/") +
              "): download it, give its path, or drop the quotes");
    // The official folder (Glyph-SDXL-v2/ and byt5-small/), or diffusers' text_encoder_2/ with
    // its tokenizer_2/.
    auto g = paths_.glyph_tokenizer.empty()
                 ? std::make_unique<GlyphEncoder>(paths_.glyph, backend)
                 : std::make_unique<GlyphEncoder>(paths_.glyph, paths_.glyph_tokenizer, backend);
    expect_width("glyph", paths_.glyph, g->dim(), "byT5 mapper input",
                 dit_src_->config.byt5_dims[0]);
    return g;
  }

  models::ReleaseOptions options_;
  ReleasePaths paths_;
  models::ReleaseInfo info_;
  std::string resolution_;
  std::optional<ModelSource> dit_src_;
  std::optional<QwenTextSource> text_src_;
  std::optional<SiglipSource> vision_src_;
  std::optional<VaeSource> vae_src_;
  std::unique_ptr<QwenTokenizer> tokenizer_;
  std::unique_ptr<QwenTextEncoder> qwen_;
  Backend* qwen_on_ = nullptr;
  std::unique_ptr<GlyphEncoder> glyph_;
  std::unique_ptr<SiglipEncoder> siglip_;
  Backend* siglip_on_ = nullptr;
  std::unique_ptr<HunyuanDiT> dit_;
  std::unique_ptr<HunyuanVae> vae_;
  Backend* vae_on_ = nullptr;
};

}  // namespace

std::unique_ptr<models::Release> open_release(const std::string& model,
                                              const models::ReleaseOptions& options) {
  return std::make_unique<HunyuanRelease>(model, options);
}

}  // namespace fisdit::hunyuan15
