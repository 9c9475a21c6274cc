// The stages of a Wan release (models/release.h): umT5 text encoding, the VAE encode of a first
// frame, the DiT experts with their LoRAs, the VAE decode. Built with the pipeline only: the
// tokenizer needs SentencePiece.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "fisdit/error.h"
#include "models/wan/loader.h"
#include "models/wan/release.h"
#include "models/wan/t5.h"
#include "models/wan/t5_tokenizer.h"
#include "models/wan/vae.h"
#include "models/weights.h"

namespace fisdit::wan {

std::pair<int, int> i2v_size(int64_t max_area, int64_t image_width, int64_t image_height,
                             int64_t vae_stride, int64_t patch_h, int64_t patch_w) {
  if (max_area <= 0 || image_width <= 0 || image_height <= 0)
    throw Error("i2v size: the area and the image size must be positive");
  // wan/image2video.py: lat = round(sqrt(area * ar) // stride // patch * patch) in float64.
  const double aspect = static_cast<double>(image_height) / static_cast<double>(image_width);
  const double area = static_cast<double>(max_area);
  const auto lat = [&](double side, int64_t patch) {
    const double p = static_cast<double>(patch);
    return static_cast<int64_t>(std::floor(std::floor(side / static_cast<double>(vae_stride)) / p) *
                                p);
  };
  const int64_t lat_h = lat(std::sqrt(area * aspect), patch_h);
  const int64_t lat_w = lat(std::sqrt(area / aspect), patch_w);
  if (lat_h <= 0 || lat_w <= 0)
    throw ParamError("size", ": the area is too small for an image of aspect ratio " +
                                 std::to_string(image_width) + ":" + std::to_string(image_height));
  return {static_cast<int>(lat_w * vae_stride), static_cast<int>(lat_h * vae_stride)};
}

namespace {

// [3, H, W] image -> [3, 1, H, W] video of one frame.
Tensor as_one_frame(const Tensor& image) {
  return image.clone().reshape({image.dim(0), 1, image.dim(1), image.dim(2)});
}

class WanRelease final : public models::Release {
 public:
  WanRelease(const std::string& model, const models::ReleaseOptions& options)
      : options_(options), paths_(resolve_release(model, overrides_of(options), options.vae)) {
    high_src_ = open_model(paths_.dit);
    if (!paths_.dit_low.empty()) low_src_ = open_model(paths_.dit_low);
    const WanConfig& cfg = high_src_->config;
    if (low_src_) {
      const WanConfig& lc = low_src_->config;
      if (lc.task != cfg.task || lc.dim != cfg.dim || lc.in_dim != cfg.in_dim ||
          lc.out_dim != cfg.out_dim || lc.text_dim != cfg.text_dim)
        throw Error("the low-noise expert " + paths_.dit_low + " (" + models::task_name(lc.task) +
                    ", dim " + std::to_string(lc.dim) + ") does not match the high-noise expert " +
                    paths_.dit + " (" + models::task_name(cfg.task) + ", dim " +
                    std::to_string(cfg.dim) + ")");
    }
    // A low-noise LoRA on a one-expert release would be dropped without a word. (That each LoRA
    // file exists is checked with the request, pipeline::check_request; loading names it too.)
    if (!options.lora_low.empty() && !low_src_)
      throw ParamError("lora_low", " " + options.lora_low.front().path + ": " + paths_.dit +
                                       " has one expert; give its LoRA for the high-noise one");
    if (options.vae) vae_src_ = open_vae(paths_.vae);  // official or diffusers names
    const int z = vae_src_ ? vae_src_->config.z_dim : cfg.out_dim;
    if (cfg.out_dim != z)
      throw ParamError("vae", " " + paths_.vae + ": its latent has " + std::to_string(z) +
                                  " channels, the DiT predicts " + std::to_string(cfg.out_dim) +
                                  " (a Wan 2.1 VAE goes with the 16-channel models, the Wan 2.2 "
                                  "VAE with TI2V-5B)");
    const int expected_in = cfg.task == models::Task::I2V ? 2 * z + 4 : z;
    if (cfg.in_dim != expected_in)
      throw Error(paths_.dit + ": a " + std::string(models::task_name(cfg.task)) + " DiT with " +
                  std::to_string(z) + "-channel latents should take " +
                  std::to_string(expected_in) + " input channels, it takes " +
                  std::to_string(cfg.in_dim));

    models::ReleaseInfo& i = info_;
    i.family = "wan";
    i.layout = paths_.layout;
    i.parts = {{"dit", paths_.dit},
               {"dit_low", paths_.dit_low},
               {"text_encoder", paths_.text_encoder},
               {"tokenizer", paths_.tokenizer},
               {"vae", paths_.vae}};
    i.model = model_info(cfg);
    // The latent grid follows the VAE that decodes it (its strides), whatever the DiT's guess.
    if (vae_src_)
      i.model.vae_stride = {static_cast<int>(vae_src_->config.temporal_stride()),
                            static_cast<int>(vae_src_->config.spatial_stride()),
                            static_cast<int>(vae_src_->config.spatial_stride())};
    i.two_experts = low_src_.has_value();
    i.boundary = paths_.boundary ? static_cast<float>(*paths_.boundary) : i.model.expert_boundary;
    // As the official pipelines prepare the first frame: TI2V-5B scales with Lanczos and
    // centre-crops (textimage2video.py); I2V-A14B stretches with bicubic (image2video.py).
    i.image_fit =
        cfg.task == models::Task::TI2V ? models::ImageFit::CoverCrop : models::ImageFit::Stretch;
    i.fps = cfg.task == models::Task::TI2V ? 24.0 : 16.0;
  }

  const models::ReleaseInfo& info() const override { return info_; }

  std::pair<int, int> frame_size(int width, int height, int image_width,
                                 int image_height) const override {
    if (info_.model.task != models::Task::I2V) return {width, height};
    // I2V-A14B, as wan/image2video.py: the size gives the area; the first frame's aspect ratio
    // sets the shape (height and width rounded down to whole latent patches).
    return i2v_size(static_cast<int64_t>(width) * height, image_width, image_height,
                    info_.model.vae_stride[1], info_.model.patch[1], info_.model.patch[2]);
  }

  std::vector<models::EncodedText> encode_text(const std::vector<std::string>& prompts,
                                               Backend& backend, double* load_seconds) override {
    const WanConfig& cfg = high_src_->config;
    const auto t0 = std::chrono::steady_clock::now();
    if (t5_ && t5_on_ != &backend) t5_.reset();
    if (!tokenizer_) tokenizer_ = std::make_unique<T5Tokenizer>(paths_.tokenizer);
    if (!t5_) {
      const T5Source src = open_t5(paths_.text_encoder);
      if (src.config.dim != cfg.text_dim)
        throw ParamError("text_encoder", " " + paths_.text_encoder + ": its output has " +
                                             std::to_string(src.config.dim) +
                                             " channels, the DiT's text_dim is " +
                                             std::to_string(cfg.text_dim));
      check_tokenizer_fits(*tokenizer_, src.config, paths_.text_encoder);
      t5_ = load_t5(src, backend);
      t5_->set_resident(options_.resident_text_encoder && backend.device() != Device::CPU);
      t5_on_ = &backend;
    }
    if (load_seconds)
      *load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<models::EncodedText> out;
    for (PromptContext& pc : encode_prompts(*tokenizer_, *t5_, prompts, cfg.text_len))
      out.push_back({std::move(pc.context), pc.tokens.length});
    return out;
  }

  models::FirstFrame encode_image(const Tensor& image, int frames, Backend& backend,
                                  const models::StageProgress& progress) override {
    WanVae& vae = vae_on(backend);
    const LatentStats& stats = vae_src_->stats;
    models::FirstFrame out;
    if (info_.model.task == models::Task::TI2V) {
      Tensor zi = vae.encode(as_one_frame(image));
      normalize_latent(zi, stats);
      if (progress) progress(1, 1, "VAE encode");
      out.z_image = zi;
      return out;
    }
    if (info_.model.task != models::Task::I2V)
      throw ParamError("image", ": " + paths_.dit + " is a text-to-video model and takes no image");
    // I2V: encode [image, zeros...], mask 1 on latent frame 0 (wan/image2video.py).
    const int64_t height = image.dim(1), width = image.dim(2);
    Tensor video = Tensor::zeros({3, frames, height, width});
    const int64_t plane = height * width;
    for (int64_t c = 0; c < 3; ++c)
      std::copy(image.f32() + c * plane, image.f32() + (c + 1) * plane,
                video.f32() + c * frames * plane);
    const int64_t lat_f = (frames - 1) / info_.model.vae_stride[0] + 1;
    Tensor cond = vae.encode(video, nullptr, [&](int chunk, int, int64_t, int64_t) {
      if (progress)
        progress(chunk + 1, static_cast<int>(lat_f),
                 "VAE encode chunk " + std::to_string(chunk + 1));
    });
    normalize_latent(cond, stats);
    const int64_t z = cond.dim(0), lat_h = cond.dim(2), lat_w = cond.dim(3);
    Tensor y = Tensor::zeros({4 + z, lat_f, lat_h, lat_w});
    const int64_t lplane = lat_h * lat_w;
    for (int64_t c = 0; c < 4; ++c)
      std::fill(y.f32() + c * lat_f * lplane, y.f32() + c * lat_f * lplane + lplane, 1.0f);
    std::copy(cond.f32(), cond.f32() + cond.numel(), y.f32() + 4 * lat_f * lplane);
    out.y = y;
    return out;
  }

  models::VelocityModel& expert(bool high_noise, Backend& backend,
                                std::string* load_report) override {
    const bool use_high = high_noise || !low_src_;
    std::unique_ptr<WanDiT>& slot = experts_[use_high ? 0 : 1];
    if (slot && &slot->backend() != &backend) slot.reset();
    if (!slot) {
      const ModelSource& src = use_high ? *high_src_ : *low_src_;
      // What prepare_expert made for this device is used once (and freed as it goes up).
      std::unique_ptr<StagedDit> staged = std::move(staged_[use_high ? 0 : 1]);
      if (staged && staged->device != backend.device()) staged.reset();
      const int64_t ahead = staged ? staged->device_bytes : 0;
      slot = load_dit(src, backend, use_high ? options_.lora_high : options_.lora_low,
                      options_.precision, staged.get());  // quantized block by block as it loads
      if (load_report) {
        *load_report = src.checkpoint.path();
        if (ahead > 0) {
          char text[64];
          std::snprintf(text, sizeof text, " (%.2f GB of it on the GPU ahead)",
                        static_cast<double>(ahead) / 1e9);
          *load_report += text;
        }
      }
    }
    return *slot;
  }

  bool prepares_experts() const override { return true; }

  int64_t prepare_expert(bool high_noise, Device device, std::stop_token stop,
                         const models::UploadAhead& upload) override {
    const bool use_high = high_noise || !low_src_;
    staged_[use_high ? 0 : 1].reset();
    // Half of the free host memory at most: the text encoder loads beside it meanwhile.
    const int64_t available = models::host_memory_available();
    auto staged = std::make_unique<StagedDit>(
        stage_dit(use_high ? *high_src_ : *low_src_, device,
                  use_high ? options_.lora_high : options_.lora_low, options_.precision,
                  available > 0 ? available / 2 : 0, std::move(stop), upload));
    const int64_t bytes = staged->bytes;
    staged_[use_high ? 0 : 1] = std::move(staged);
    return bytes;
  }

  int64_t text_stage_bytes(const Backend& backend) const override {
    if (paths_.text_encoder.empty()) return -1;
    T5Config c;
    try {
      c = open_t5(paths_.text_encoder).config;
    } catch (const Error&) {
      return -1;  // the text stage says what is wrong with the file
    }
    return t5_streamed_bytes(c, backend.weight_dtype(), high_src_->config.text_len, 2);
  }

  int64_t expert_bytes(bool high_noise, const Backend& backend) const override {
    const ModelSource& src = high_noise || !low_src_ ? *high_src_ : *low_src_;
    const DitBytes b = dit_device_bytes(src.config, backend.weight_dtype(), options_.precision);
    return b.other + int64_t{src.config.num_layers} * b.block;
  }

  Tensor decode(const Tensor& latent, Backend& backend, const models::StageProgress& progress,
                const FrameSink& frames) override {
    if (!vae_src_) throw Error("this release was opened without its VAE");
    const VaeConfig& vc = vae_src_->config;
    if (latent.ndim() != 4 || latent.dim(0) != vc.z_dim)
      throw Error("decode: expects a latent [" + std::to_string(vc.z_dim) + ", F, H, W], got " +
                  shape_str(latent.shape()));
    WanVae& vae = vae_on(backend);
    // The VAE's own statistics (file metadata or diffusers config.json), else Wan's constants.
    Tensor zraw = latent.clone();
    denormalize_latent(zraw, vae_src_->stats);
    const int chunks = static_cast<int>(latent.dim(1));
    // Each chunk's frames are clamped as they arrive, before `frames` sees them (a reader of
    // those frames then never races a write).
    return vae.decode(
        zraw, nullptr,
        [&](int chunk, int, int64_t, int64_t) {
          if (progress) progress(chunk + 1, chunks, "latent frame " + std::to_string(chunk + 1));
        },
        [&](const Tensor& video, int64_t first, int64_t count) {
          const int64_t all = video.dim(1), plane = video.dim(2) * video.dim(3);
          Tensor shared = video;  // the same storage: the frames are clamped in place
          float* p = shared.f32();
          for (int64_t c = 0; c < video.dim(0); ++c) {
            float* q = p + (c * all + first) * plane;
            const int64_t n = count * plane;
#pragma omp parallel for schedule(static) if (n > (int64_t{1} << 20))
            for (int64_t i = 0; i < n; ++i) q[i] = std::clamp(q[i], -1.0f, 1.0f);
          }
          if (frames) frames(video, first, count);
        });
  }

  void unload(Part part) override {
    switch (part) {
      case Part::TextEncoder:
        t5_.reset();
        tokenizer_.reset();
        t5_on_ = nullptr;
        break;
      case Part::HighExpert:
        experts_[0].reset();
        staged_[0].reset();
        break;
      case Part::LowExpert:
        experts_[1].reset();
        staged_[1].reset();
        break;
      case Part::Vae:
        vae_.reset();
        break;
    }
  }

 private:
  WanVae& vae_on(Backend& backend) {
    if (!vae_src_) throw Error("this release was opened without its VAE");
    if (vae_ && &vae_->backend() != &backend) vae_.reset();
    if (!vae_) vae_ = load_vae(*vae_src_, &backend);
    return *vae_;
  }

  models::ReleaseOptions options_;
  ReleasePaths paths_;
  models::ReleaseInfo info_;
  std::optional<ModelSource> high_src_, low_src_;
  std::optional<VaeSource> vae_src_;
  std::unique_ptr<T5Tokenizer> tokenizer_;
  std::unique_ptr<T5Encoder> t5_;
  Backend* t5_on_ = nullptr;
  std::unique_ptr<WanDiT> experts_[2];    // high-noise (or only), low-noise
  std::unique_ptr<StagedDit> staged_[2];  // prepare_expert's, until expert() uses it
  std::unique_ptr<WanVae> vae_;
};

}  // namespace

std::unique_ptr<models::Release> open_release(const std::string& model,
                                              const models::ReleaseOptions& options) {
  return std::make_unique<WanRelease>(model, options);
}

}  // namespace fisdit::wan
