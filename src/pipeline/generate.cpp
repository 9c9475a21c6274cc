#include "pipeline/generate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <stop_token>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "core/env.h"
#include "core/progress.h"
#include "core/random.h"
#include "fisdit/error.h"
#include "media/image.h"
#include "models/family.h"
#include "models/offload.h"
#include "sched/flow_euler.h"
#include "sched/flow_solvers.h"

namespace fisdit::pipeline {
namespace {

using Clock = std::chrono::steady_clock;
// Running out of GPU memory, or a --gpu-memory-limit too small for a model beside what is held.
bool out_of_gpu_memory(const Error& e) {
  if (const auto* p = dynamic_cast<const ParamError*>(&e); p && p->param() == "gpu-memory-limit")
    return true;
  return std::string(e.what()).find("out of GPU memory") != std::string::npos;
}

// The backend of a generator: --device, with --gpu-memory-limit and --vae-precision.
std::unique_ptr<Backend> make_run_backend(const GenerateOptions& o) {
  return make_backend(o.device, {o.gpu_memory_limit, o.vae_precision});
}

// GenerateOptions::on_progress, when set.
void notify(const GenerateOptions& o, const char* stage, int done, int total) {
  if (o.on_progress) o.on_progress(stage, done, total);
}
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string expert_name(bool two_experts, bool high) {
  if (!two_experts) return "model";
  return high ? "high-noise expert" : "low-noise expert";
}

models::ReleaseOptions release_options(const GenerateOptions& o, bool keep_loaded) {
  if (o.lora_strength != o.lora_strength) throw ParamError("lora_strength", ": must be a number");
  models::ReleaseOptions r;
  // Kept loaded without a memory limit: the text encoder's weights stay on the GPU too (freed
  // first when a stage runs out of memory, State::free_room).
  r.resident_text_encoder = keep_loaded && !(o.gpu_memory_limit > 0);
  const std::optional<models::Precision> precision = models::parse_precision(o.precision);
  if (!precision)
    throw ParamError("precision", ": must be bf16, fp8 or fp8-gemm, got '" + o.precision + "'");
  r.precision = *precision;
  r.parts = o.parts;
  r.task = o.image.empty() ? models::Task::T2V : models::Task::I2V;
  if (!o.lora_high.empty()) r.lora_high.push_back({o.lora_high, o.lora_strength});
  if (!o.lora_low.empty()) r.lora_low.push_back({o.lora_low, o.lora_strength});
  return r;
}

// GPU memory left free beside a stage's own while an expert goes up during it (the text stage,
// the first expert's steps): the libraries' workspaces and the stage's transient peaks.
constexpr int64_t kUploadMargin = int64_t{2} << 30;

// FISDIT_OVERLAP_LOAD: 0 loads each DiT expert when its first step comes, as a whole.
bool overlap_load_env() { return env_switch("FISDIT_OVERLAP_LOAD", true); }
// FISDIT_UPLOAD_FIRST_EXPERT: 1 also puts the first expert's weights on the GPU beside the text
// stage (opt-in until it has been measured on a GPU).
bool upload_first_expert_env() { return env_switch("FISDIT_UPLOAD_FIRST_EXPERT", false); }

// Per timestep of the request's schedule, whether it runs on the high-noise expert (the one
// expert, when there is one).
std::vector<bool> high_noise_steps(const CheckedRequest& r, const models::ReleaseInfo& info) {
  const auto solver = sched::make_flow_solver(r.denoise.solver, r.denoise.steps, r.denoise.shift);
  const float boundary = sched::expert_boundary(r.denoise, info.model);
  std::vector<bool> high;
  for (const auto t : solver->schedule().timesteps)
    high.push_back(!info.two_experts || sched::use_high_noise_expert(t, boundary));
  return high;
}

// Whether the first step runs on the high-noise expert (the one expert when there is one).
bool first_expert_high(const CheckedRequest& r, const models::ReleaseInfo& info) {
  return high_noise_steps(r, info).at(0);
}

// Whether the steps run on both experts of a two-expert release (the first steps on the high-noise
// one, the rest on the low-noise one).
bool uses_both_experts(const CheckedRequest& r, const models::ReleaseInfo& info) {
  const std::vector<bool> high = high_noise_steps(r, info);
  return std::find(high.begin(), high.end(), true) != high.end() &&
         std::find(high.begin(), high.end(), false) != high.end();
}

// The host side of loading a DiT expert (models::Release::prepare_expert) on a thread of its own,
// while the main thread runs the text encoder and the image encode (the first expert) or the
// first expert's steps (the second, which `upload` may also put on the GPU). Nothing else on the
// release touches that expert until join(); a run that stops earlier (an error, Cancelled) asks
// the thread to stop and waits for it here.
class ExpertPrep {
 public:
  ExpertPrep(models::Release& release, bool high, Device device,
             const models::UploadAhead& upload = {})
      : high_(high), thread_([this, &release, high, device, upload](std::stop_token stop) {
          const auto t0 = Clock::now();
          try {
            bytes_ = release.prepare_expert(high, device, std::move(stop), upload);
          } catch (...) {  // nothing prepared: the expert loads as usual, failing as it would
            failed_ = true;
          }
          seconds_ = since(t0);
        }) {}
  bool high() const { return high_; }
  // Waits for the thread (the first call); returns the seconds waited.
  double join() {
    if (!thread_.joinable()) return 0;
    const auto t0 = Clock::now();
    thread_.join();
    waited_ = since(t0);
    return waited_;
  }
  // After join(): the weight bytes prepared, the thread's seconds, and those of them that ran
  // beside the main thread's stages rather than while it waited.
  int64_t bytes() const { return bytes_; }
  double seconds() const { return seconds_; }
  double overlapped() const { return failed_ ? 0.0 : std::max(seconds_ - waited_, 0.0); }
  bool failed() const { return failed_; }

 private:
  bool high_;
  int64_t bytes_ = 0;
  double seconds_ = 0, waited_ = 0;
  bool failed_ = false;
  std::jthread thread_;  // last: stopped and joined before the fields it writes are gone
};

// Seconds and peak device memory of each stage of one run, for the summary.
struct StageLog {
  Backend* backend = nullptr;
  nlohmann::json seconds = nlohmann::json::object();
  nlohmann::json peaks = nlohmann::json::object();  // GiB; GPU backends only

  void begin() { backend->reset_memory_peak(); }
  void end(const char* stage) {
    const int64_t peak = backend->memory_peak();
    if (peak >= 0) peaks[stage] = static_cast<double>(peak) / 1073741824.0;
  }
};

nlohmann::json request_json(const CheckedRequest& r) {
  const GenerateOptions& o = r.options;
  return {{"prompt", o.prompt},
          {"negative", o.negative},
          {"image", o.image},
          {"width", o.width},
          {"height", o.height},
          {"frames", o.frames},
          {"steps", o.steps},
          {"shift", o.shift},
          {"solver", sched::solver_name(o.solver)},
          {"guidance_high", r.denoise.guidance_for(true)},
          {"guidance_low", r.denoise.guidance_for(false)},
          {"boundary", *r.denoise.boundary},
          {"seed", o.seed},
          {"fis", o.fis.describe()},
          {"cache", o.cache.describe()},
          {"device", o.device}};
}

}  // namespace

CheckedRequest check_request(const models::Release& release, const GenerateOptions& request) {
  const models::ReleaseInfo& info = release.info();
  const models::ModelInfo& model = info.model;
  CheckedRequest r;
  r.options = request;
  GenerateOptions& o = r.options;
  const std::string dit = info.part("dit");
  if (!o.image.empty() && !info.takes_image())
    throw ParamError("image", ": " + dit + " is a text-to-video model and takes no image");
  if (o.image.empty() && info.needs_image())
    throw ParamError("image", ": required: " + dit + " is an image-to-video model");
  if (!o.lora_low.empty() && !info.two_experts)
    throw ParamError("lora_low",
                     " " + o.lora_low + ": " + dit + " has one expert; give its LoRA as lora_high");
  for (const auto& [param, path] :
       {std::pair{"lora_high", o.lora_high}, std::pair{"lora_low", o.lora_low}}) {
    std::error_code ec;
    if (!path.empty() && !std::filesystem::is_regular_file(path, ec))
      throw ParamError(param, " " + path + ": no such file");
  }
  // The video size: the release may derive it from the image's aspect ratio (Wan I2V-A14B's
  // area, HunyuanVideo 1.5's size buckets) or from the requested one's (HunyuanVideo 1.5 T2V).
  int aspect_w = o.width, aspect_h = o.height;
  if (!o.image.empty()) {
    r.image = read_image(o.image);
    aspect_w = static_cast<int>(r.image.dim(2));
    aspect_h = static_cast<int>(r.image.dim(1));
  }
  if (o.width <= 0 || o.height <= 0)
    throw ParamError("size", ": width and height must be positive, got " + std::to_string(o.width) +
                                 "x" + std::to_string(o.height));
  const auto [w, h] = release.frame_size(o.width, o.height, aspect_w, aspect_h);
  if (w != o.width || h != o.height) {
    r.notes.push_back("size " + std::to_string(o.width) + "x" + std::to_string(o.height) +
                      ": the release's size for " +
                      (o.image.empty() ? std::string("this aspect ratio")
                                       : "the image's aspect ratio (" + std::to_string(aspect_w) +
                                             "x" + std::to_string(aspect_h) + ")") +
                      " is " + std::to_string(w) + "x" + std::to_string(h) +
                      " (as the official pipeline)");
    o.width = w;
    o.height = h;
  }
  r.grid = model.latent_grid(o.width, o.height, o.frames);

  sched::DenoiseOptions& d = r.denoise;
  d.steps = o.steps;
  d.shift = o.shift;
  d.solver = o.solver;
  d.guidance = o.guidance;
  d.guidance_high = o.guidance_high;
  d.guidance_low = o.guidance_low;
  d.boundary = o.boundary.value_or(info.boundary);
  sched::check_options(d);
  o.fis.validate();
  if (o.cache.enabled) o.cache.validate();
  d.fis = o.fis;
  d.cache = o.cache;
  d.on_forward = o.on_forward;
  r.needs_uncond = d.guidance_for(true) != 1.0f || d.guidance_for(false) != 1.0f;
  return r;
}

struct Generator::State {
  GenerateOptions model;  // the model fields
  bool keep_loaded = false;
  // Declared before the release whose models hold a reference to it, so it outlives them.
  std::unique_ptr<Backend> backend;
  std::unique_ptr<models::Release> release;
  // keep_loaded: the prompts encoded last (at most kKeptTexts), oldest first in text_order.
  static constexpr size_t kKeptTexts = 32;
  std::map<std::string, models::EncodedText> texts;
  std::deque<std::string> text_order;
  void keep_text(const std::string& text, models::EncodedText encoded);
  // keep_loaded: what is held, so running out of GPU memory can free what a stage does not need
  // (free_room) and run it again, rather than fail the request: first the text encoder's
  // resident weights (a new prompt uploads them again), then the DiT experts named.
  bool text_held = false;
  bool expert_held[2] = {false, false};  // high, low
  struct Room {
    bool text = false, high = false, low = false;
  };
  bool free_room(Room room, const std::string& why);
  // Runs `stage`; while it runs out of GPU memory and free_room frees something, runs it again.
  template <class F>
  decltype(auto) with_room(Room room, const std::string& why, F&& stage) {
    for (;;) {
      try {
        return stage();
      } catch (const Error& e) {
        if (!out_of_gpu_memory(e) || !free_room(room, why)) throw;
      }
    }
  }

  // The activations of a step over `grid` (models::activation_reserve).
  int64_t step_bytes(const models::LatentGrid& grid, bool fis, bool cache) const {
    return models::activation_reserve(release->info().model, *backend, grid, fis, cache);
  }
  // Whether expert `high` (not loaded) and a step of `step` bytes fit in the free memory, decided
  // before loading it (true when the backend or the family cannot tell); otherwise says so in
  // the log, naming `beside` (what holds the memory).
  bool expert_fits(bool high, int64_t step, const std::string& beside) const;

  // ---- the stages of run(); each records its seconds (and peak memory) in `log`
  void encode_text(const CheckedRequest& r, sched::DenoiseInputs& in, nlohmann::json& summary,
                   StageLog& log);
  void encode_image(const CheckedRequest& r, sched::DenoiseInputs& in, StageLog& log);
  // `prep` (optional): the first expert's host side, under way since before the text stage.
  // `overlap`: the second expert's host side runs beside the first expert's steps.
  Tensor sample(const CheckedRequest& r, const sched::DenoiseInputs& in, nlohmann::json& summary,
                StageLog& log, ExpertPrep* prep = nullptr, bool overlap = false);
  Tensor decode(const Tensor& latent, bool progress, const GenerateOptions* request = nullptr);
};

void Generator::State::encode_text(const CheckedRequest& r, sched::DenoiseInputs& in,
                                   nlohmann::json& summary, StageLog& log) {
  const GenerateOptions& o = r.options;
  Progress bar("text", r.needs_uncond ? 2 : 1, o.progress);
  notify(o, "text", 0, r.needs_uncond ? 2 : 1);
  log.begin();
  const auto t0 = Clock::now();
  // The prompt and (with CFG) the negative prompt in one pass over the encoder's weights; a
  // kept-loaded generator reuses the texts it has encoded before.
  std::vector<std::string> wanted = {o.prompt};
  if (r.needs_uncond) wanted.push_back(o.negative);
  std::vector<std::string> todo;
  for (const std::string& t : wanted)
    if (texts.count(t)) {  // used again: the newest, so adding the others cannot evict it
      text_order.erase(std::find(text_order.begin(), text_order.end(), t));
      text_order.push_back(t);
    } else if (std::find(todo.begin(), todo.end(), t) == todo.end()) {
      todo.push_back(t);
    }
  std::map<std::string, models::EncodedText> fresh;
  double load_seconds = 0;
  if (!todo.empty()) {
    // Kept loaded, the encoder's resident weights may not fit beside the experts: they go.
    std::vector<models::EncodedText> encoded =
        with_room({false, true, true}, "the text encoder",
                  [&] { return release->encode_text(todo, *backend, &load_seconds); });
    if (keep_loaded) text_held = true;
    for (size_t i = 0; i < todo.size(); ++i)
      if (keep_loaded)
        keep_text(todo[i], std::move(encoded[i]));
      else
        fresh.emplace(todo[i], std::move(encoded[i]));
  }
  const auto text_of = [&](const std::string& t) -> const models::EncodedText& {
    const auto it = fresh.find(t);
    return it != fresh.end() ? it->second : texts.at(t);
  };
  const models::EncodedText& prompt = text_of(o.prompt);
  in.context = prompt.context;
  summary["prompt_tokens"] = prompt.tokens;
  bar.update(1, std::to_string(prompt.tokens) + " tokens");
  notify(o, "text", 1, r.needs_uncond ? 2 : 1);
  if (r.needs_uncond) {
    in.context_neg = text_of(o.negative).context;
    bar.update(2, "negative prompt");
    notify(o, "text", 2, 2);
  }
  log.seconds["text_load"] = load_seconds;
  log.seconds["text_encode"] = since(t0) - load_seconds;
  if (!keep_loaded) release->unload(models::Release::Part::TextEncoder);
  log.end("text");
  bar.finish();
}

bool Generator::State::free_room(Room room, const std::string& why) {
  if (room.text && text_held) {
    release->unload(models::Release::Part::TextEncoder);
    text_held = false;
    std::fprintf(stderr,
                 "out of GPU memory: freed the resident text encoder weights for %s; they go up "
                 "again with the next new prompt\n",
                 why.c_str());
    return true;
  }
  const bool any = (room.high && expert_held[0]) || (room.low && expert_held[1]);
  if (!any) return false;
  if (room.high && expert_held[0]) release->unload(models::Release::Part::HighExpert);
  if (room.low && expert_held[1]) release->unload(models::Release::Part::LowExpert);
  if (room.high) expert_held[0] = false;
  if (room.low) expert_held[1] = false;
  // Said even without progress bars (fisdit serve logs it): the next request loads them again.
  std::fprintf(stderr,
               "out of GPU memory: freed the resident DiT expert(s) for %s; they load again "
               "when needed\n",
               why.c_str());
  return true;
}

bool Generator::State::expert_fits(bool high, int64_t step, const std::string& beside) const {
  const int64_t need = release->expert_bytes(high, *backend), free_now = backend->memory_free();
  if (need < 0 || free_now < 0 || free_now >= need + step) return true;
  const double gib = 1073741824.0;
  std::fprintf(stderr,
               "%.1f GiB of GPU memory free beside %s: the %s (%.1f GiB) and a step's "
               "activations (%.1f GiB) do not fit, so the experts take turns\n",
               free_now / gib, beside.c_str(), high ? "high-noise expert" : "low-noise expert",
               need / gib, step / gib);
  return false;
}

void Generator::State::keep_text(const std::string& text, models::EncodedText encoded) {
  // A server sees endless prompts: the oldest are forgotten (the wanted ones are just added).
  while (texts.size() >= kKeptTexts && !text_order.empty()) {
    texts.erase(text_order.front());
    text_order.pop_front();
  }
  texts.insert_or_assign(text, std::move(encoded));
  text_order.push_back(text);
}

void Generator::State::encode_image(const CheckedRequest& r, sched::DenoiseInputs& in,
                                    StageLog& log) {
  const GenerateOptions& o = r.options;
  if (!r.image.defined()) {  // the release's conditioning without a first frame, if any
    models::FirstFrame none = release->no_image(r.grid);
    in.y = std::move(none.y);
    return;
  }
  notify(o, "image", 0, 1);
  log.begin();
  const auto t0 = Clock::now();
  const models::ImageFit fit = release->info().image_fit;
  const Tensor image = fit == models::ImageFit::CoverCrop
                           ? resize_and_center_crop(r.image, o.width, o.height)
                       : fit == models::ImageFit::CoverCropRounded
                           ? resize_and_center_crop_rounded(r.image, o.width, o.height)
                           : resize_image(r.image, o.width, o.height, ResizeFilter::Bicubic);
  std::unique_ptr<Progress> bar;
  models::FirstFrame first =
      release->encode_image(image, o.frames, *backend, [&](int done, int total, const auto& what) {
        if (!bar) bar = std::make_unique<Progress>("image", total, o.progress);
        bar->update(done, what);
        notify(o, "image", done, total);
      });
  if (bar) bar->finish();
  in.y = std::move(first.y);
  in.z_image = std::move(first.z_image);
  // Streams the image adds to the text side (HunyuanVideo 1.5's SigLIP states) go with the
  // prompt and the negative prompt alike.
  for (const auto& [name, t] : first.text_extra) {
    in.context.extra[name] = t;
    if (in.context_neg.defined()) in.context_neg.extra[name] = t;
  }
  // The VAE is loaded for the image and again for the decode, so it never sits beside a DiT
  // expert in GPU memory.
  if (!keep_loaded) release->unload(models::Release::Part::Vae);
  log.seconds["image_encode"] = since(t0);
  log.end("image_encode");
}

Tensor Generator::State::sample(const CheckedRequest& r, const sched::DenoiseInputs& in,
                                nlohmann::json& summary, StageLog& log, ExpertPrep* prep,
                                bool overlap) {
  const GenerateOptions& o = r.options;
  const bool two = release->info().two_experts;
  // One-shot with two experts: once the first expert is up, the second one's host side is
  // prepared beside the first one's steps (when the steps reach it); nothing on the main thread
  // touches the second expert until the switch joins it.
  std::unique_ptr<ExpertPrep> ahead;
  const bool prepare_second =
      overlap && two && !keep_loaded && uses_both_experts(r, release->info());
  // Under a memory limit an expert loaded now leaves room for this request's activations.
  models::reserve_activations(*backend, release->info().model, r.grid, o.fis.enabled(),
                              o.cache.enabled);
  // One expert in memory at a time (unless keep_loaded): the high-noise expert serves the first
  // steps, then it is freed and the low-noise expert loaded (the steps never go back).
  double load_seconds = 0;
  const sched::ExpertFn expert = [&](bool high) -> models::VelocityModel& {
    const bool use_high = high || !two;
    // The switch is timed as loading: freeing the other expert (its page-locked host memory
    // under --gpu-memory-limit takes a while) and loading this one.
    const auto t0 = Clock::now();
    // The expert prepared in the background is finished here: what is left of its host side is
    // waited for (and timed as loading), before anything else touches the release's experts.
    if (prep) prep->join();
    // The second expert (from the switch on): its preparation is waited for (a no-op after the
    // switch), before the first expert goes.
    const bool second = ahead && ahead->high() == use_high;
    if (second) ahead->join();
    ExpertPrep* const used = second ? ahead.get() : prep;
    const bool prepared = used && used->high() == use_high && !used->failed();
    if (ahead && !second) {
      // The first expert's steps while the second one is prepared: nothing of it is loaded, and
      // unloading it would drop what the thread is making.
    } else if (!keep_loaded && two) {  // frees the other expert (once it is freed, a no-op)
      release->unload(use_high ? models::Release::Part::LowExpert
                               : models::Release::Part::HighExpert);
      expert_held[use_high ? 1 : 0] = false;
    } else if (two && expert_held[use_high ? 1 : 0] && !expert_held[use_high ? 0 : 1] &&
               !expert_fits(use_high, step_bytes(r.grid, o.fis.enabled(), o.cache.enabled),
                            use_high ? "the low-noise expert" : "the high-noise expert")) {
      // Kept loaded: both experts stay resident only while the free memory holds this one too.
      release->unload(use_high ? models::Release::Part::LowExpert
                               : models::Release::Part::HighExpert);
      expert_held[use_high ? 1 : 0] = false;
    }
    std::string report;
    // Both experts resident only while they fit: else the other one makes room.
    models::VelocityModel& m = with_room(
        {true, !use_high, use_high}, "loading the " + expert_name(two, high),
        [&]() -> models::VelocityModel& { return release->expert(use_high, *backend, &report); });
    expert_held[use_high ? 0 : 1] = true;
    if (!report.empty()) {
      load_seconds += since(t0);
      const std::string placed = m.placement();
      std::string before;  // what ran in the background before
      if (prepared && used->bytes() > 0) {
        char text[160];
        std::snprintf(text, sizeof text, " (%.2f GB prepared in the background, %.2f s of it %s)",
                      static_cast<double>(used->bytes()) / 1e9, used->overlapped(),
                      second ? "beside the steps before" : "beside the text and image stages");
        before = text;
      }
      if (o.progress || !placed.empty())  // where the weights went is said even without bars
        std::fprintf(stderr, "%sloaded %s %s in %.1f s%s%s\n", isatty(fileno(stderr)) ? "\n" : "",
                     expert_name(two, high).c_str(), report.c_str(), since(t0), before.c_str(),
                     placed.empty() ? "" : (": " + placed).c_str());
      if (!placed.empty()) summary["dit_placement"][expert_name(two, high)] = placed;
    }
    if (prepare_second && !ahead && !report.empty()) {  // the first expert is up: the second next
      // On a GPU its weights also go up beside the steps, as far as they leave a step's
      // activations (and a margin for the libraries' workspaces) free.
      models::UploadAhead upload;
      if (backend->device() != Device::CPU)
        upload = {backend.get(),
                  step_bytes(r.grid, o.fis.enabled(), o.cache.enabled) + kUploadMargin};
      ahead = std::make_unique<ExpertPrep>(*release, !use_high, backend->device(), upload);
    }
    return m;
  };
  nlohmann::json steps = nlohmann::json::array();
  Progress bar("denoise", o.steps, o.progress);
  notify(o, "denoise", 0, o.steps);
  const Backend::GraphCounts graphs_before = backend->graph_counts();
  log.begin();
  double load_before_step = 0;  // load_seconds when the previous step ended
  const auto on_step = [&](const sched::StepInfo& s) {
    const std::string name = expert_name(two, s.high_noise_expert);
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
                               (sparse ? ", fis " + o.fis.name : ", dense") + sched::cache_note(s));
    notify(o, "denoise", s.step + 1, o.steps);
  };
  Tensor latent = sched::denoise(release->info().model, expert, two, in, r.denoise, on_step);
  const double total = bar.finish();
  log.end("denoise");
  if (!keep_loaded) {
    release->unload(models::Release::Part::HighExpert);
    release->unload(models::Release::Part::LowExpert);
    expert_held[0] = expert_held[1] = false;
  }
  // dit_load: the main thread's loading, the wait for the background parts included;
  // dit_load_overlapped: the background parts that ran beside the text and image stages (the
  // first expert) and beside the first expert's steps (the second).
  log.seconds["dit_load"] = load_seconds;
  log.seconds["dit_load_overlapped"] =
      (prep ? prep->overlapped() : 0.0) + (ahead ? ahead->overlapped() : 0.0);
  log.seconds["denoise"] = total - load_seconds;
  summary["steps"] = steps;
  if (backend->graphs()) {  // FISDIT_CUDA_GRAPHS: the DiT forwards recorded and replayed
    const Backend::GraphCounts& now = backend->graph_counts();
    summary["dit_graphs"] = {{"recorded", now.recorded - graphs_before.recorded},
                             {"replayed", now.replayed - graphs_before.replayed}};
  }
  return latent;
}

Tensor Generator::State::decode(const Tensor& latent, bool progress,
                                const GenerateOptions* request) {
  std::unique_ptr<Progress> bar;
  if (request) notify(*request, "decode", 0, 1);
  Tensor video = release->decode(
      latent, *backend,
      [&](int done, int total, const std::string& what) {
        if (!bar) bar = std::make_unique<Progress>("decode", total, progress);
        bar->update(done, what);
        if (request) notify(*request, "decode", done, total);
      },
      request ? request->on_frames : models::Release::FrameSink{});
  if (bar) bar->finish();
  if (!keep_loaded) release->unload(models::Release::Part::Vae);
  return video;
}

Generator::Generator(const GenerateOptions& model, bool keep_loaded)
    : Generator(models::open_release(model.model, release_options(model, keep_loaded)), model,
                keep_loaded) {}

Generator::Generator(std::unique_ptr<models::Release> release, const GenerateOptions& model,
                     bool keep_loaded)
    : s_(std::make_unique<State>()) {
  s_->model = model;
  s_->model.on_forward = {};
  s_->keep_loaded = keep_loaded;
  s_->release = std::move(release);
}

Generator::~Generator() = default;

const models::ReleaseInfo& Generator::release() const { return s_->release->info(); }

GenerateResult generate(const GenerateOptions& options) {
  return Generator(options, false).run(options);
}

CheckedRequest Generator::check(const GenerateOptions& request) const {
  const GenerateOptions& m = s_->model;
  if (request.model != m.model || request.device != m.device || request.parts != m.parts ||
      request.lora_high != m.lora_high || request.lora_low != m.lora_low ||
      request.lora_strength != m.lora_strength || request.gpu_memory_limit != m.gpu_memory_limit ||
      request.precision != m.precision || request.vae_precision != m.vae_precision)
    throw Error("Generator: the request names model " + request.model + " on " + request.device +
                ", the generator holds " + m.model + " on " + m.device +
                " (with its parts and LoRAs)");
  return check_request(*s_->release, request);
}

double Generator::preload() {
  State& s = *s_;
  if (!s.keep_loaded) return 0;
  const auto t0 = Clock::now();
  if (!s.backend) s.backend = make_run_backend(s.model);
  // The empty prompt is the default negative prompt: encoding it loads the encoder.
  if (!s.texts.count(""))
    s.keep_text("", std::move(s.release->encode_text({""}, *s.backend, nullptr).at(0)));
  s.text_held = true;
  s.with_room({true, false, false}, "loading the DiT",
              [&]() -> models::VelocityModel& { return s.release->expert(true, *s.backend); });
  s.expert_held[0] = true;
  if (s.release->info().two_experts) {
    // Both experts resident when the free memory holds the second one and a step of the
    // generator's default size (said in the log either way).
    models::LatentGrid grid;
    try {
      grid = s.release->info().model.latent_grid(s.model.width, s.model.height, s.model.frames);
    } catch (const Error&) {
    }
    const int64_t step = s.step_bytes(grid, s.model.fis.enabled(), s.model.cache.enabled);
    if (s.expert_fits(false, step, "the high-noise expert")) {
      try {
        s.release->expert(false, *s.backend);
        s.expert_held[1] = true;
        const int64_t free_now = s.backend->memory_free();
        if (free_now >= 0)
          std::fprintf(stderr, "both DiT experts resident, %.1f GiB of GPU memory free\n",
                       free_now / 1073741824.0);
      } catch (const Error& e) {
        if (!out_of_gpu_memory(e)) throw;  // the low-noise expert loads at the switch instead
        std::fprintf(stderr, "both DiT experts do not fit in GPU memory: they take turns\n");
      }
    }
  }
  return since(t0);
}

void Generator::forget_texts() {
  s_->texts.clear();
  s_->text_order.clear();
}

Tensor Generator::decode(const Tensor& latent, bool progress) {
  if (!s_->backend) s_->backend = make_run_backend(s_->model);
  return s_->decode(latent, progress);
}

GenerateResult Generator::run(const GenerateOptions& request) {
  State& s = *s_;
  const CheckedRequest r = check(request);
  for (const std::string& note : r.notes)
    if (r.options.progress) std::fprintf(stderr, "%s\n", note.c_str());
  bool decoding_wan = false;  // the Wan VAE's decode runs: its chunk size is one more lever
  try {
    const auto t_total = Clock::now();
    const models::ReleaseInfo& info = s.release->info();
    nlohmann::json summary;
    summary["task"] = models::task_name(info.model.task);
    summary["family"] = info.family;
    summary["layout"] = info.layout;
    summary["paths"] = nlohmann::json::object();
    for (const auto& [role, path] : info.parts) summary["paths"][role] = path;
    summary["request"] = request_json(r);
    summary["latent"] = {info.model.latent_channels, r.grid.frames, r.grid.height, r.grid.width};
    if (s.model.gpu_memory_limit > 0) summary["gpu_memory_limit_gib"] = s.model.gpu_memory_limit;
    summary["precision"] = s.model.precision;

    if (!s.backend) s.backend = make_run_backend(s.model);
    summary["vae_precision"] = s.backend->video_dtype() == DType::BF16 ? "bf16" : "fp32";
    StageLog log{s.backend.get()};
    sched::DenoiseInputs in;
    // One-shot: the first expert's host side (reading its files, ...) runs beside the text and
    // image stages. Kept loaded (serve, --repeat, quality) the experts load once, on their own;
    // under a memory limit the stages keep their order.
    std::unique_ptr<ExpertPrep> prep;
    const bool overlap = !s.keep_loaded && r.options.overlap_load &&
                         !(s.model.gpu_memory_limit > 0) && s.release->prepares_experts() &&
                         overlap_load_env();
    if (overlap) {
      const bool high = first_expert_high(r, info);
      // With FISDIT_UPLOAD_FIRST_EXPERT=1, on a GPU its weights also go up beside the text
      // stage, as far as they leave that stage (Release::text_stage_bytes) and the margin free.
      // Not beside an image stage: the VAE encode's memory is not known ahead, so the upload
      // waits for the load then.
      models::UploadAhead upload;
      const bool upload_first = upload_first_expert_env();
      const int64_t text_bytes =
          upload_first && s.backend->device() != Device::CPU && !r.image.defined()
              ? s.release->text_stage_bytes(*s.backend)
              : -1;
      if (text_bytes >= 0) upload = {s.backend.get(), text_bytes + kUploadMargin};
      if (r.options.progress)
        std::fprintf(stderr,
                     "preparing the %s in the background (reading its weights%s) while the text "
                     "encoder runs\n",
                     expert_name(info.two_experts, high).c_str(),
                     upload.backend ? " and putting them on the GPU" : "");
      prep = std::make_unique<ExpertPrep>(*s.release, high, s.backend->device(), upload);
    }
    summary["overlap_load"] = prep != nullptr;
    s.encode_text(r, in, summary, log);
    s.encode_image(r, in, log);
    in.x = randn({info.model.latent_channels, r.grid.frames, r.grid.height, r.grid.width},
                 r.options.seed);
    GenerateResult result;
    result.task = info.model.task;
    result.fps = info.fps;
    result.latent = s.sample(r, in, summary, log, prep.get(), overlap);
    if (r.options.decode) {
      log.begin();
      const auto t0 = Clock::now();
      decoding_wan = info.family == "wan";
      result.video = s.with_room({true, true, true}, "the decode", [&] {
        return s.decode(result.latent, r.options.progress, &r.options);
      });
      decoding_wan = false;
      log.seconds["vae_decode"] = since(t0);
      log.end("vae_decode");
    }
    if (!log.peaks.empty()) summary["gpu_peak_gib"] = log.peaks;
    log.seconds["total"] = since(t_total);
    summary["seconds"] = log.seconds;
    result.summary = std::move(summary);
    return result;
  } catch (const Error& e) {
    // Running out of memory anywhere in the run: say what the run holds and what to change.
    const std::string what = e.what();
    if (what.find("out of GPU memory") != std::string::npos)
      throw Error(what +
                  ". generate holds one stage on the GPU at a time (the text encoder, then one "
                  "DiT expert and the activations of one step, then the VAE decode): free the "
                  "GPU of other jobs, lower the size / frames, " +
                  (decoding_wan ? std::string("set FISDIT_VAE_DECODE_CHUNK=1 (the decode one "
                                              "latent frame per call, its least memory), ")
                                : std::string()) +
                  "or " +
                  (s.model.gpu_memory_limit > 0
                       ? std::string("raise --gpu-memory-limit")
                       : std::string("pass --gpu-memory-limit to stream DiT blocks from host "
                                     "memory")));
    if (what.find("out of host memory") != std::string::npos)
      throw Error(what + ". lower the size / frames" +
                  (request.device == "cpu" ? ", or run on a GPU (device cuda)" : ""));
    throw;
  }
}

}  // namespace fisdit::pipeline
