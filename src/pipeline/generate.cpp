#include "pipeline/generate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "backend/backend.h"
#include "core/progress.h"
#include "core/random.h"
#include "fisdit/error.h"
#include "media/image.h"
#include "models/lora.h"
#include "models/wan/loader.h"
#include "models/wan/t5.h"
#include "models/wan/t5_tokenizer.h"
#include "models/wan/vae.h"

namespace fisdit::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string expert_name(bool two_experts, bool high) {
  if (!two_experts) return "model";
  return high ? "high-noise expert" : "low-noise expert";
}

// [3, H, W] image -> [3, 1, H, W] video of one frame.
Tensor as_one_frame(const Tensor& image) {
  return image.clone().reshape({image.dim(0), 1, image.dim(1), image.dim(2)});
}

// The DiT with its LoRA merged (when one is given).
std::unique_ptr<wan::WanDiT> load_expert(const wan::ModelSource& src, const std::string& lora,
                                         float strength, Backend& backend) {
  std::vector<LoraSpec> loras;
  if (!lora.empty()) loras.push_back({lora, strength});
  return wan::load_dit(src, backend, loras);
}

}  // namespace

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
    throw Error("--size: the area is too small for an image of aspect ratio " +
                std::to_string(image_width) + ":" + std::to_string(image_height));
  return {static_cast<int>(lat_w * vae_stride), static_cast<int>(lat_h * vae_stride)};
}

struct Generator::State {
  GenerateOptions model;  // the model fields
  bool keep_loaded = false;
  ReleasePaths paths;
  std::optional<wan::ModelSource> high_src, low_src;  // high_src and vae_src: always set
  models::ModelInfo info;                             // the high-noise (or only) expert's
  std::optional<wan::VaeSource> vae_src;
  // Declared before the models that hold a reference to it, so it is destroyed after them.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<wan::T5Tokenizer> tokenizer;
  std::unique_ptr<wan::T5Encoder> t5;
  std::unique_ptr<wan::WanDiT> experts[2];  // high-noise (or only), low-noise
  std::unique_ptr<wan::WanVae> vae;
  std::map<std::string, wan::PromptContext> contexts;  // keep_loaded: encoded prompts
};

Generator::Generator(const GenerateOptions& model, bool keep_loaded)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.model = model;
  s.model.on_forward = {};
  s.keep_loaded = keep_loaded;
  // ---- what is where, and do the parts fit each other (before any weight is read)
  s.paths = resolve_release(model.model, model.parts);
  const ReleasePaths& paths = s.paths;
  s.high_src = wan::open_model(paths.dit);
  if (!paths.dit_low.empty()) s.low_src = wan::open_model(paths.dit_low);
  const wan::WanConfig& cfg = s.high_src->config;
  s.info = wan::model_info(cfg);
  const std::string task = models::task_name(cfg.task);
  if (s.low_src) {
    const wan::WanConfig& lc = s.low_src->config;
    if (lc.task != cfg.task || lc.dim != cfg.dim || lc.in_dim != cfg.in_dim ||
        lc.out_dim != cfg.out_dim || lc.text_dim != cfg.text_dim)
      throw Error("the low-noise expert " + paths.dit_low + " (" + models::task_name(lc.task) +
                  ", dim " + std::to_string(lc.dim) + ") does not match the high-noise expert " +
                  paths.dit + " (" + models::task_name(cfg.task) + ", dim " +
                  std::to_string(cfg.dim) + ")");
  }
  s.vae_src = wan::open_vae(paths.vae);  // official or diffusers names
  const int z = s.vae_src->config.z_dim;
  if (cfg.out_dim != z)
    throw Error("--vae " + paths.vae + ": its latent has " + std::to_string(z) +
                " channels, the DiT predicts " + std::to_string(cfg.out_dim) +
                " (a Wan 2.1 VAE goes with the 16-channel models, the Wan 2.2 VAE with TI2V-5B)");
  const int expected_in = task == "i2v" ? 2 * z + 4 : z;
  if (cfg.in_dim != expected_in)
    throw Error(paths.dit + ": a " + task + " DiT with " + std::to_string(z) +
                "-channel latents should take " + std::to_string(expected_in) +
                " input channels, it takes " + std::to_string(cfg.in_dim));
}

Generator::~Generator() = default;

const ReleasePaths& Generator::paths() const { return s_->paths; }
const models::ModelInfo& Generator::model_info() const { return s_->info; }
bool Generator::two_experts() const { return s_->low_src.has_value(); }

GenerateResult generate(const GenerateOptions& options) {
  return Generator(options, false).run(options);
}

Tensor Generator::decode(const Tensor& latent, bool progress) {
  State& s = *s_;
  const wan::VaeConfig& vc = s.vae_src->config;
  if (latent.ndim() != 4 || latent.dim(0) != vc.z_dim)
    throw Error("decode: expects a latent [" + std::to_string(vc.z_dim) + ", F, H, W], got " +
                shape_str(latent.shape()));
  if (!s.backend) s.backend = make_backend(s.model.device);
  if (!s.vae) s.vae = wan::load_vae(*s.vae_src, s.backend.get());
  // the VAE's own statistics (file metadata or diffusers config.json), else Wan's constants
  const wan::LatentStats& stats = s.vae_src->stats;
  Tensor zraw = latent.clone();
  wan::denormalize_latent(zraw, stats);
  Progress bar("decode", static_cast<int>(latent.dim(1)), progress);
  Tensor video = s.vae->decode(zraw, nullptr, [&](int chunk, int, int64_t, int64_t) {
    bar.update(chunk + 1, "latent frame " + std::to_string(chunk + 1));
  });
  float* p = video.f32();
  const int64_t n = video.numel();
#pragma omp parallel for schedule(static) if (n > (int64_t{1} << 20))
  for (int64_t i = 0; i < n; ++i) p[i] = std::clamp(p[i], -1.0f, 1.0f);
  bar.finish();
  if (!s.keep_loaded) s.vae.reset();
  return video;
}

GenerateResult Generator::run(const GenerateOptions& request) {
  try {
    return run_request(request);
  } catch (const Error& e) {
    // Running out of memory anywhere in the run: say what the run holds and what to change.
    const std::string what = e.what();
    if (what.find("out of GPU memory") != std::string::npos)
      throw Error(what +
                  ". generate holds one stage on the GPU at a time (one umT5 block, then one DiT "
                  "expert and the activations of one step, then the VAE decode): free the GPU of "
                  "other jobs, or lower --size / --frames");
    if (what.find("out of host memory") != std::string::npos)
      throw Error(what + ". lower --size / --frames" +
                  (request.device == "cpu" ? ", or run on a GPU (--device cuda)" : ""));
    throw;
  }
}

GenerateResult Generator::run_request(const GenerateOptions& request) {
  State& s = *s_;
  if (request.model != s.model.model || request.device != s.model.device)
    throw Error("Generator::run: the request names model " + request.model + " on " +
                request.device + ", the generator holds " + s.model.model + " on " +
                s.model.device);
  GenerateOptions o = request;  // i2v derives its size from the image (below)
  o.parts = s.model.parts;
  o.lora_high = s.model.lora_high;
  o.lora_low = s.model.lora_low;
  o.lora_strength = s.model.lora_strength;
  nlohmann::json summary;
  nlohmann::json stages = nlohmann::json::object();
  const auto t_total = Clock::now();

  // ---- does the request fit the model (before any weight is read)
  const ReleasePaths& paths = s.paths;
  const wan::ModelSource& high_src = *s.high_src;
  const std::optional<wan::ModelSource>& low_src = s.low_src;
  const wan::WanConfig& cfg = high_src.config;
  const std::string task = models::task_name(cfg.task);
  const wan::VaeSource& vae_src = *s.vae_src;
  const wan::VaeConfig& vc = vae_src.config;
  const int64_t sstride = vc.spatial_stride(), tstride = vc.temporal_stride();
  const int z = vc.z_dim;
  if (o.frames < 1 || (o.frames - 1) % tstride != 0)
    throw Error("--frames " + std::to_string(o.frames) + ": must be " + std::to_string(tstride) +
                "k+1 (e.g. 81 or 121): the VAE turns " + std::to_string(tstride) +
                " frames into one latent frame after the first");
  // I2V-A14B, as wan/image2video.py: --size gives the area; the first frame's aspect ratio sets
  // the shape (height and width rounded down to whole latent patches).
  Tensor source_image;
  if (task == "i2v" && !o.image.empty()) {
    source_image = read_image(o.image);
    const auto [w, h] =
        i2v_size(static_cast<int64_t>(o.width) * o.height, source_image.dim(2), source_image.dim(1),
                 sstride, cfg.patch_size[1], cfg.patch_size[2]);
    if ((w != o.width || h != o.height) && o.progress)
      std::fprintf(stderr,
                   "i2v: the area of --size %dx%d at the image's aspect ratio gives %dx%d (as the "
                   "official pipeline)\n",
                   o.width, o.height, w, h);
    o.width = w;
    o.height = h;
  }
  const int64_t cell_h = sstride * cfg.patch_size[1], cell_w = sstride * cfg.patch_size[2];
  if (o.width <= 0 || o.height <= 0 || o.width % cell_w || o.height % cell_h)
    throw Error("--size " + std::to_string(o.width) + "x" + std::to_string(o.height) +
                ": width must be a multiple of " + std::to_string(cell_w) + " and height of " +
                std::to_string(cell_h) + " for this model (VAE stride " + std::to_string(sstride) +
                " x patch " + std::to_string(cfg.patch_size[1]) + "), e.g. " +
                (sstride == 16 ? "1280x704" : "1280x720 or 832x480"));
  if (task == "i2v" && o.image.empty())
    throw Error("--image is required: " + paths.dit + " is an image-to-video model");
  if (task == "t2v" && !o.image.empty())
    throw Error("--image: " + paths.dit + " is a text-to-video model and takes no image");
  if (o.steps < 1) throw Error("--steps must be at least 1");
  if (!o.lora_low.empty() && paths.dit_low.empty())
    throw Error("--lora-low " + o.lora_low + ": " + paths.dit +
                " has one expert; give its LoRA with --lora-high");
  for (const auto& [flag, path] :
       {std::pair{"--lora-high", o.lora_high}, std::pair{"--lora-low", o.lora_low}}) {
    std::error_code ec;
    if (!path.empty() && !std::filesystem::is_regular_file(path, ec))
      throw Error(std::string(flag) + " " + path + ": no such file");
  }
  const int64_t lat_f = (o.frames - 1) / tstride + 1, lat_h = o.height / sstride,
                lat_w = o.width / sstride;
  const bool two_experts = low_src.has_value();
  const float boundary = o.boundary.value_or(paths.boundary ? static_cast<float>(*paths.boundary)
                                                            : s.info.expert_boundary);
  sched::DenoiseOptions dopt;
  dopt.steps = o.steps;
  dopt.shift = o.shift;
  dopt.solver = o.solver;
  dopt.guidance = o.guidance;
  dopt.guidance_high = o.guidance_high;
  dopt.guidance_low = o.guidance_low;
  dopt.boundary = boundary;
  dopt.fis = o.fis;
  dopt.cache = o.cache;
  dopt.on_forward = o.on_forward;
  const bool needs_uncond = dopt.guidance_for(true) != 1.0f || dopt.guidance_for(false) != 1.0f;

  summary["task"] = task;
  summary["layout"] = paths.layout;
  summary["paths"] = {{"dit", paths.dit},
                      {"dit_low", paths.dit_low},
                      {"text_encoder", paths.text_encoder},
                      {"tokenizer", paths.tokenizer},
                      {"vae", paths.vae}};
  summary["request"] = {{"prompt", o.prompt},
                        {"negative", o.negative},
                        {"image", o.image},
                        {"width", o.width},
                        {"height", o.height},
                        {"frames", o.frames},
                        {"steps", o.steps},
                        {"shift", o.shift},
                        {"solver", sched::solver_name(o.solver)},
                        {"guidance_high", dopt.guidance_for(true)},
                        {"guidance_low", dopt.guidance_for(false)},
                        {"boundary", boundary},
                        {"seed", o.seed},
                        {"fis", o.fis.describe()},
                        {"cache", o.cache.describe()},
                        {"device", o.device}};
  summary["latent"] = {z, lat_f, lat_h, lat_w};

  // Text encoder, VAE and DiT all run on --device.
  if (!s.backend) s.backend = make_backend(o.device);
  Backend* const backend = s.backend.get();
  // The most device memory held during each stage (GPU backends; the CPU does not track it).
  nlohmann::json peaks = nlohmann::json::object();
  const auto stage_begin = [&] { backend->reset_memory_peak(); };
  const auto stage_end = [&](const char* stage) {
    const int64_t peak = backend->memory_peak();
    if (peak >= 0) peaks[stage] = static_cast<double>(peak) / 1073741824.0;
  };

  // ---- text
  sched::DenoiseInputs in;
  {
    Progress bar("text", needs_uncond ? 2 : 1, o.progress);
    stage_begin();
    const auto t0 = Clock::now();
    if (!s.tokenizer) s.tokenizer = std::make_unique<wan::T5Tokenizer>(paths.tokenizer);
    if (!s.t5) {
      const wan::T5Source t5_src = wan::open_t5(paths.text_encoder);
      if (t5_src.config.dim != cfg.text_dim)
        throw Error("--text-encoder " + paths.text_encoder + ": its output has " +
                    std::to_string(t5_src.config.dim) + " channels, the DiT's text_dim is " +
                    std::to_string(cfg.text_dim));
      wan::check_tokenizer_fits(*s.tokenizer, t5_src.config, paths.text_encoder);
      s.t5 = wan::load_t5(t5_src, *backend);
    }
    stages["text_load"] = since(t0);
    const auto t1 = Clock::now();
    // The prompt and (with CFG) the negative prompt in one pass over the encoder's weights; a
    // kept-loaded generator reuses the contexts of texts it has encoded before.
    std::vector<std::string> texts = {o.prompt};
    if (needs_uncond) texts.push_back(o.negative);
    std::vector<std::string> todo;
    for (const std::string& t : texts)
      if (!s.contexts.count(t) && std::find(todo.begin(), todo.end(), t) == todo.end())
        todo.push_back(t);
    std::vector<wan::PromptContext> fresh =
        wan::encode_prompts(*s.tokenizer, *s.t5, todo, cfg.text_len);
    std::map<std::string, wan::PromptContext> local;
    for (size_t i = 0; i < todo.size(); ++i)
      (s.keep_loaded ? s.contexts : local).emplace(todo[i], std::move(fresh[i]));
    const auto context_of = [&](const std::string& t) -> const wan::PromptContext& {
      const auto it = local.find(t);
      return it != local.end() ? it->second : s.contexts.at(t);
    };
    const wan::PromptContext& pc = context_of(o.prompt);
    in.context = pc.context;
    summary["prompt_tokens"] = pc.tokens.length;
    bar.update(1, std::to_string(pc.tokens.length) + " tokens");
    if (needs_uncond) {
      in.context_neg = context_of(o.negative).context;
      bar.update(2, "negative prompt");
    }
    stages["text_encode"] = since(t1);
    if (!s.keep_loaded) {
      s.t5.reset();
      s.tokenizer.reset();
    }
    stage_end("text");
    bar.finish();
  }

  // ---- first frame (i2v: the whole conditioning video; ti2v: one frame)
  // The VAE runs on the DiT's backend (--device); its weights are loaded for the image encode and
  // again for the decode, so they never sit beside a DiT expert in GPU memory.
  std::unique_ptr<wan::WanVae>& vae = s.vae;
  const wan::LatentStats& stats = vae_src.stats;
  if (!o.image.empty()) {
    stage_begin();
    const auto t0 = Clock::now();
    if (!vae) vae = wan::load_vae(vae_src, backend);
    // As the official pipelines prepare the first frame: TI2V-5B scales with Lanczos and
    // centre-crops (textimage2video.py); I2V-A14B stretches with bicubic (image2video.py).
    const Tensor source = source_image.defined() ? source_image : read_image(o.image);
    const Tensor image = task == "ti2v"
                             ? resize_and_center_crop(source, o.width, o.height)
                             : resize_image(source, o.width, o.height, ResizeFilter::Bicubic);
    if (task == "ti2v") {
      Progress bar("image", 1, o.progress);
      Tensor zi = vae->encode(as_one_frame(image));
      wan::normalize_latent(zi, stats);
      in.z_image = zi;
      bar.finish();
    } else {  // i2v: encode [image, zeros...], mask 1 on latent frame 0 (wan/image2video.py)
      Tensor video = Tensor::zeros({3, o.frames, o.height, o.width});
      const int64_t plane = static_cast<int64_t>(o.height) * o.width;
      for (int64_t c = 0; c < 3; ++c)
        std::copy(image.f32() + c * plane, image.f32() + (c + 1) * plane,
                  video.f32() + c * o.frames * plane);
      const int chunks = static_cast<int>(lat_f);
      Progress bar("image", chunks, o.progress);
      Tensor cond = vae->encode(video, nullptr, [&](int chunk, int, int64_t, int64_t) {
        bar.update(chunk + 1, "VAE encode chunk " + std::to_string(chunk + 1));
      });
      wan::normalize_latent(cond, stats);
      Tensor y = Tensor::zeros({4 + z, lat_f, lat_h, lat_w});
      const int64_t lplane = lat_h * lat_w;
      for (int64_t c = 0; c < 4; ++c)
        std::fill(y.f32() + c * lat_f * lplane, y.f32() + c * lat_f * lplane + lplane, 1.0f);
      std::copy(cond.f32(), cond.f32() + cond.numel(), y.f32() + 4 * lat_f * lplane);
      in.y = y;
      bar.finish();
    }
    if (!s.keep_loaded) vae.reset();
    stages["image_encode"] = since(t0);
    stage_end("image_encode");
  }

  // ---- sampling
  in.x = randn({z, lat_f, lat_h, lat_w}, o.seed);
  nlohmann::json steps = nlohmann::json::array();
  Tensor latent;
  {
    // One expert in memory at a time (unless keep_loaded): the high-noise expert serves the first
    // steps, then it is freed and the low-noise expert loaded (the steps never go back).
    double load_seconds = 0;
    const sched::ExpertFn expert = [&](bool high) -> models::VelocityModel& {
      const bool use_high = high || !low_src;
      std::unique_ptr<wan::WanDiT>& slot = s.experts[use_high ? 0 : 1];
      if (!slot) {
        if (!s.keep_loaded) s.experts[use_high ? 1 : 0].reset();
        const auto t0 = Clock::now();
        const wan::ModelSource& src = use_high ? high_src : *low_src;
        const std::string& lora = use_high ? o.lora_high : o.lora_low;
        slot = load_expert(src, lora, o.lora_strength, *backend);
        load_seconds += since(t0);
        if (o.progress)
          std::fprintf(stderr, "%sloaded %s %s in %.1f s\n", isatty(fileno(stderr)) ? "\n" : "",
                       expert_name(two_experts, high).c_str(), src.checkpoint.path().c_str(),
                       since(t0));
      }
      return *slot;
    };
    Progress bar("denoise", o.steps, o.progress);
    stage_begin();
    double load_before_step = 0;  // load_seconds when the previous step ended
    const auto on_step = [&](const sched::StepInfo& s) {
      const std::string name = expert_name(two_experts, s.high_noise_expert);
      const bool sparse = s.fis_step_open && o.fis.enabled();
      // An expert loaded during this step is timed apart from the step's compute.
      const double step_load = load_seconds - load_before_step;
      load_before_step = load_seconds;
      steps.push_back({{"step", s.step + 1},
                       {"timestep", s.timestep},
                       {"sigma", s.sigma},
                       {"expert", name},
                       {"fis", sparse ? "sparse" : "dense"},
                       {"guidance", s.guidance},
                       {"cache_skipped_passes", s.skipped_passes},
                       {"seconds", s.seconds - step_load},
                       {"expert_load_seconds", step_load}});
      bar.update(s.step + 1, "t=" + std::to_string(static_cast<int>(s.timestep)) + " " + name +
                                 (sparse ? ", fis " + o.fis.name : ", dense") +
                                 sched::cache_note(s));
    };
    latent = sched::denoise(s.info, expert, two_experts, in, dopt, on_step);
    const double total = bar.finish();
    stage_end("denoise");
    if (!s.keep_loaded) {
      s.experts[0].reset();
      s.experts[1].reset();
    }
    stages["dit_load"] = load_seconds;
    stages["denoise"] = total - load_seconds;
  }
  summary["steps"] = steps;

  // ---- decode
  GenerateResult r;
  r.task = task;
  r.latent = latent;
  if (o.decode) {
    stage_begin();
    const auto t0 = Clock::now();
    r.video = decode(latent, o.progress);
    stages["vae_decode"] = since(t0);
    stage_end("vae_decode");
  }
  if (!peaks.empty()) summary["gpu_peak_gib"] = peaks;
  stages["total"] = since(t_total);
  summary["seconds"] = stages;
  r.summary = std::move(summary);
  return r;
}

}  // namespace fisdit::pipeline
