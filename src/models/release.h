#pragma once
// A model release on disk as `fisdit generate` runs it, family-agnostic: what it is made of, what
// a request may ask of it, and its stages (text, first frame, experts, decode), each on a
// backend. A family implements Release (Wan: models/wan/release.h) and registers its opener in
// models/family.cpp; the pipeline never sees the family's encoders or VAE.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "models/lora.h"
#include "models/model.h"
#include "models/weights.h"

namespace fisdit::models {

// How a first frame is fitted to the video size before it is encoded (as each official pipeline
// prepares it).
enum class ImageFit : uint8_t {
  Stretch,    // bicubic to width x height (Wan I2V-A14B)
  CoverCrop,  // Lanczos to cover width x height, centre crop (Wan TI2V-5B)
  // The same with the crop's offsets rounded half to even, not floored (HunyuanVideo 1.5's
  // Resize + CenterCrop and resize_and_center_crop)
  CoverCropRounded,
};

struct ReleaseOptions {
  // Parts given explicitly, by role, win over what the release holds: "dit_low", "text_encoder",
  // "tokenizer", "vae" (Wan). An empty path means "as found".
  std::map<std::string, std::string> parts;
  std::vector<LoraSpec> lora_high, lora_low;  // merged into the (high-noise) / low-noise expert
  // false: the release is used without its VAE (fisdit analyze: text and DiT only), which then
  // need not exist; the image and decode stages throw.
  bool vae = true;
  // The task the requests have, when known (an image given or not): a release holding several
  // versions picks one made for it (HunyuanVideo 1.5's download root).
  std::optional<Task> task;
  // The text encoder's weights stay on the device once a prompt has uploaded them, so a new
  // prompt costs only the encoder's compute (a kept-loaded generator on a GPU); by default they
  // go up one block at a time for each batch of prompts.
  bool resident_text_encoder = false;
  // The DiT experts' block-matrix arithmetic, set as each expert is loaded (--precision).
  Precision precision = Precision::Default;
};

// What a request takes from the release when its flags do not say (the official settings of the
// model: HunyuanVideo 1.5's PIPELINE_CONFIGS); unset fields keep the command's own defaults.
struct RequestDefaults {
  std::optional<int> steps, frames;
  std::optional<double> shift;
  std::optional<float> guidance;
  std::optional<std::string> size;  // "WxH"
  std::string source;               // for the log: where they come from
};

struct ReleaseInfo {
  std::string family;  // "wan"
  std::string layout;  // "official", "diffusers", "single file"
  // The files of each part, by role, in the order a summary lists them ("dit", "dit_low", ...).
  std::vector<std::pair<std::string, std::string>> parts;
  ModelInfo model;  // the (high-noise) expert's
  bool two_experts = false;
  float boundary = 0.875f;  // the release's own expert switch, else the model's
  ImageFit image_fit = ImageFit::Stretch;
  double fps = 16;  // of the videos the model was trained on
  RequestDefaults defaults;

  // The path of a part, or "" when the release has none.
  std::string part(const std::string& role) const;
  bool takes_image() const { return model.task != Task::T2V; }
  bool needs_image() const { return model.task == Task::I2V; }
};

// The prompt's text side and how many tokens it had (after cleaning, with the end token).
struct EncodedText {
  TextContext context;
  int64_t tokens = 0;
};

// A first frame's conditioning, for sched::DenoiseInputs: channels concatenated to the latent
// (y, Wan I2V, HunyuanVideo 1.5) or a latent frame that replaces frame 0 (z_image, Wan TI2V),
// and streams the image adds to every prompt's text side (TextContext::extra: HunyuanVideo
// 1.5's SigLIP states, "vision").
struct FirstFrame {
  Tensor y, z_image;
  std::map<std::string, Tensor> text_extra;
};

// Progress of a stage: `done` of `total` units, and what the unit was.
using StageProgress = std::function<void(int done, int total, const std::string& detail)>;

class Release {
 public:
  virtual ~Release() = default;
  virtual const ReleaseInfo& info() const = 0;

  // The video size a request with an image of image_width x image_height gets (Wan I2V-A14B:
  // the area of width x height at the image's aspect ratio, as upstream); default: unchanged.
  virtual std::pair<int, int> frame_size(int width, int height, int image_width,
                                         int image_height) const;

  // Stage text: the text side of every prompt, in one pass over the encoder's weights;
  // *load_seconds (optional) gets the time spent loading the encoder (0 when it was loaded).
  virtual std::vector<EncodedText> encode_text(const std::vector<std::string>& prompts,
                                               Backend& backend, double* load_seconds) = 0;
  // Stage first frame: `image` [3, H, W] in [-1, 1], fitted to the video (info().image_fit), for
  // a video of `frames` frames.
  virtual FirstFrame encode_image(const Tensor& image, int frames, Backend& backend,
                                  const StageProgress& progress) = 0;
  // The conditioning of a request without a first frame over `grid` (HunyuanVideo 1.5: its
  // condition and mask channels, all zero); by default none.
  virtual FirstFrame no_image(const LatentGrid& grid) const {
    (void)grid;
    return {};
  }
  // Stage sample: the expert of a step (the high-noise one, or the only model), loaded on first
  // use; *load_report gets one line when this call loaded it.
  virtual VelocityModel& expert(bool high_noise, Backend& backend,
                                std::string* load_report = nullptr) = 0;
  // The host side of loading an expert, done ahead: what expert(high_noise, <a backend of
  // `device`>) does first that needs no device, such as reading its weights from the files,
  // matching its LoRAs and, for the CPU, making its weights on the host; with `upload`, also
  // putting them on the GPU as the files store them (as many as fit, `upload.reserve` kept free).
  // fisdit generate calls it on a thread of its own while the text encoder (and the image
  // encode, or the other expert's steps) run on this release, so it touches no backend but
  // `upload.backend` (only its calls made for that) and nothing those stages use, and stops
  // early when `stop` is requested.
  // Until it returns the caller calls nothing else on this expert (expert, unload); expert() then
  // finishes the load with what it prepared, giving the same weights bit for bit. Uses at most
  // half of the free host memory. Returns the weight bytes it read, made or put on the GPU. A
  // failure leaves nothing prepared: expert() then loads as usual (and fails as it would have).
  // Default: nothing to prepare (prepares_experts() false).
  virtual bool prepares_experts() const { return false; }
  virtual int64_t prepare_expert(bool high_noise, Device device, std::stop_token stop,
                                 const UploadAhead& upload = {}) {
    (void)high_noise;
    (void)device;
    (void)stop;
    (void)upload;
    return 0;
  }
  // The device bytes the text stage holds at most on `backend` when its encoder is not kept
  // resident (a one-shot run: weights and activations, the prompt and a negative prompt), without
  // loading it; -1 when the family cannot tell. fisdit generate keeps that much free while the
  // first expert goes up beside the text stage.
  virtual int64_t text_stage_bytes(const Backend& backend) const {
    (void)backend;
    return -1;
  }
  // The device bytes of an expert's weights on `backend`, all resident (none streamed), without
  // loading it; -1 when the family cannot tell.
  virtual int64_t expert_bytes(bool high_noise, const Backend& backend) const {
    (void)high_noise;
    (void)backend;
    return -1;
  }
  // Stage decode: a final latent [C, F', H', W'] (normalised, as the DiT sees it) to a video
  // [3, F, H, W] clamped to [-1, 1]. `frames` (optional) gets each run of frames as it is final:
  // frames [first, first + count) of `video` (host [3, F, H, W], the tensor decode returns, not
  // yet clamped: a reader clamps).
  using FrameSink = std::function<void(const Tensor& video, int64_t first, int64_t count)>;
  virtual Tensor decode(const Tensor& latent, Backend& backend, const StageProgress& progress,
                        const FrameSink& frames = {}) = 0;

  // What the stages loaded (or prepare_expert prepared) stays in memory until freed here.
  enum class Part : uint8_t { TextEncoder, HighExpert, LowExpert, Vae };
  virtual void unload(Part part) = 0;
};

}  // namespace fisdit::models
