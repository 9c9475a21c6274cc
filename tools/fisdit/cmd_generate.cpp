// fisdit generate: prompt (and image) -> MP4 and/or PNG frames with a release (Wan 2.2 / 2.1,
// HunyuanVideo 1.5).
#include <cstdio>
#include <optional>

#include "backend/backend.h"
#include "bench_util.h"
#include "cli.h"
#include "fisdit/error.h"
#include "models/release.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"
#include "pipeline/output.h"

namespace fisdit::cli {

namespace {

struct GenerateArgs {
  // The request's own fields (prompt, negative, image, seed, parts by role, the release's LoRA
  // flags --lora-high / --lora-low / --lora-strength, named as GenerateOptions names them).
  pipeline::GenerateOptions opt;
  pipeline::OutputOptions out;
  std::optional<std::string> size;
  std::optional<int> frames;
  ExpertFlags experts;  // --model, --model-low
  SamplingFlags sampling;
  DeviceFlags device;
  FisFlags fis;
  CacheFlags cache;
  bool quiet = false, compare_dense = false;
  int repeat = 1;  // --repeat: runs of the request on models kept loaded
};

// The model fields of the request (which release, on what, with which parts) and the image,
// which picks the version of a release holding several.
pipeline::GenerateOptions model_request(const GenerateArgs& a) {
  pipeline::GenerateOptions o = a.opt;
  o.model = model_or_bundled(a.experts.model);
  o.parts["dit_low"] = a.experts.model_low;
  o.device = a.device.device;
  o.gpu_memory_limit = a.device.gpu_memory_limit;
  o.vae_precision = a.device.vae_precision;
  return o;
}

// The request from the flags; the flags not given come from the model's fisdit.json, else from
// the release's own settings (HunyuanVideo 1.5's official ones), else the built-in defaults.
pipeline::GenerateOptions generate_request(const GenerateArgs& a,
                                           const models::ReleaseInfo& release) {
  pipeline::GenerateOptions o = model_request(a);
  pipeline::ModelDefaults d = pipeline::read_model_defaults(o.model);
  const models::RequestDefaults& rd = release.defaults;
  const bool from_release =
      d.path.empty() && (rd.steps || rd.shift || rd.guidance || rd.frames || rd.size);
  if (from_release) {
    d.size = rd.size;
    d.frames = rd.frames;
    d.steps = rd.steps;
    d.shift = rd.shift;
    d.guidance = rd.guidance;
  }
  std::optional<std::string> size = a.size;
  std::optional<int> frames = a.frames;
  SamplingFlags sampling = a.sampling;
  apply_model_defaults(d, size, frames, sampling);
  o.frames = frames.value_or(kDefaultFrames);
  const std::string size_text = size.value_or(kDefaultSize);
  if (d.frames && a.frames && o.frames != *d.frames && !from_release)
    status("note: " + (d.name.empty() ? o.model : d.name) + " was trained on " +
           std::to_string(*d.frames) + "-frame clips; --frames " + std::to_string(o.frames) +
           " is outside what it learned and looks worse");
  const sched::DenoiseOptions builtin;
  if (!d.path.empty())
    status("defaults from " + d.path + ": --size " + size_text + " --frames " +
           std::to_string(o.frames) + " --steps " +
           std::to_string(sampling.steps.value_or(builtin.steps)) + " --solver " +
           sampling.solver.value_or(sched::solver_name(builtin.solver)) +
           " (flags given override them)");
  if (from_release) {
    char line[256];
    std::snprintf(line, sizeof line, "--size %s --frames %d --steps %d --shift %g --guidance %g",
                  size_text.c_str(), o.frames, sampling.steps.value_or(builtin.steps),
                  sampling.shift.value_or(builtin.shift),
                  static_cast<double>(sampling.guidance.value_or(builtin.guidance)));
    status("settings of " + rd.source + ": " + line + " (flags given override them)");
  }
  pipeline::check_outputs(a.out);
  parse_size(size_text, o.width, o.height);
  set_sampling(o, sampling.resolve());
  o.fis = a.fis.resolve();
  o.cache = a.cache.resolve();
  note_ratio_resampling(o.cache, o.steps);
  o.progress = !a.quiet;
  if (a.compare_dense) pipeline::check_compare_with_dense(o);  // before anything runs
  return o;
}

// Stages: check (no weight read), text, image, sample, decode; then write. With --repeat N the
// models are loaded once (timed apart) and kept, the request runs N times, and the last run is
// written: the later runs show the latency of a process that has its models loaded (as fisdit
// serve has), each still encoding its prompt.
void run_generate(const GenerateArgs& a) {
  const bool warm = a.repeat > 1;
  // The release is opened first (no weight is read): its settings fill the flags not given.
  pipeline::Generator generator(model_request(a), /*keep_loaded=*/warm);
  pipeline::GenerateOptions o = generate_request(a, generator.release());
  // The MP4 is encoded on a thread of its own as the decode makes frames final.
  std::unique_ptr<pipeline::StreamedMp4> mp4;
  if (!a.out.output.empty())
    mp4 =
        std::make_unique<pipeline::StreamedMp4>(a.out, a.out.fps.value_or(generator.release().fps));
  nlohmann::json runs = nlohmann::json::array();
  double load_seconds = 0;
  if (warm) {
    status("--repeat " + std::to_string(a.repeat) +
           ": loading the text encoder and the DiT to keep them loaded");
    load_seconds = generator.preload();
    char line[96];
    std::snprintf(line, sizeof line, "models loaded in %.2f s", load_seconds);
    status(line);
  }
  pipeline::GenerateResult r;
  for (int i = 0; i < a.repeat; ++i) {
    const bool last = i + 1 == a.repeat;
    pipeline::GenerateOptions request = o;
    if (last && mp4) request.on_frames = mp4->sink();
    generator.forget_texts();  // each run encodes its prompt (a no-op without --repeat)
    r = generator.run(request);
    // FISDIT_CUDA_PROFILE=1: where this run's GPU time went, op by op (every op synchronized).
    if (const std::string profile = take_op_profile(); !profile.empty())
      status("run " + std::to_string(i + 1) + " " + profile);
    if (!warm) break;
    const nlohmann::json& s = r.summary;
    runs.push_back({{"run", i + 1},
                    {"seconds", s.at("seconds")},
                    {"gpu_peak_gib", s.value("gpu_peak_gib", nlohmann::json::object())}});
    std::string graphs;
    if (s.contains("dit_graphs"))
      graphs = "; DiT graphs: " + std::to_string(s["dit_graphs"].value("replayed", 0)) +
               " forwards replayed, " + std::to_string(s["dit_graphs"].value("recorded", 0)) +
               " recorded";
    status("run " + std::to_string(i + 1) + "/" + std::to_string(a.repeat) + ": " +
           pipeline::times_line(s) + " (" + pipeline::making_time(s) + ")" + graphs);
  }
  if (warm) {
    r.summary["repeat"] = a.repeat;
    r.summary["load_seconds"] = load_seconds;
    r.summary["runs"] = runs;
  }
  if (a.compare_dense) {
    status("dense reference run (FIS and cache off, same seed) for --compare-dense");
    status(pipeline::compare_with_dense(generator, o, r));
  }
  for (const std::string& line : pipeline::write_outputs(r, a.out, mp4.get())) status(line);
  status(pipeline::times_line(r.summary));
  if (const std::string peaks = pipeline::peaks_line(r.summary); !peaks.empty()) status(peaks);
}

}  // namespace

void register_generate(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  pipeline::GenerateOptions& o = args->opt;
  args->fis.preset = "balanced";
  CLI::App* cmd = app.add_subcommand(
      "generate",
      "text (and image) to video with a Wan 2.2 / 2.1 or HunyuanVideo 1.5 release: MP4 and/or PNG "
      "frames");
  add_expert_flags(cmd, args->experts,
                   {.model_help = "release directory (official or diffusers layout; HunyuanVideo "
                                  "1.5: the download root or one of its transformer/<version> "
                                  "folders) or a DiT .safetensors file; default: the bundled "
                                  "model (models/fisdit-shapes, or $FISDIT_MODEL)",
                    .model_low_help = "low-noise expert (A14B), if not in --model"});
  // Parts of the release by role (a std::map's elements stay where they are).
  cmd->add_option("--text-encoder", o.parts["text_encoder"],
                  "text encoder, if not in --model (Wan: umT5; HunyuanVideo 1.5: Qwen2.5-VL)");
  cmd->add_option("--tokenizer", o.parts["tokenizer"],
                  "Wan: spiece.model; HunyuanVideo 1.5: tokenizer.json (or a folder holding it)");
  cmd->add_option("--vae", o.parts["vae"], "VAE, if not in --model");
  cmd->add_option("--transformer-version", o.parts["version"],
                  "HunyuanVideo 1.5: the transformer/<version> of the download root to run "
                  "(default: 480p_i2v_step_distilled with --image, else 480p_t2v_distilled or "
                  "480p_t2v, as present)");
  cmd->add_option("--glyph", o.parts["glyph"],
                  "HunyuanVideo 1.5: the folder holding Glyph-SDXL-v2/ (byT5 for quoted text), "
                  "if not in --model");
  cmd->add_option("--vision-encoder", o.parts["vision_encoder"],
                  "HunyuanVideo 1.5 I2V: the SigLIP folder (vision_encoder/siglip), if not in "
                  "--model");
  cmd->add_option("--lora-high", o.lora_high, "LoRA for the high-noise expert (or the only one)");
  cmd->add_option("--lora-low", o.lora_low, "LoRA for the low-noise expert");
  cmd->add_option("--lora-strength", o.lora_strength, "LoRA scale")->capture_default_str();
  cmd->add_option("--prompt", o.prompt, "what the video shows")->required();
  cmd->add_option("--negative", o.negative, "negative prompt (used when guidance != 1)");
  cmd->add_option("--image", o.image,
                  "first frame, PNG or JPEG (i2v; optional for ti2v; HunyuanVideo 1.5: picks an "
                  "i2v version)");
  // The model's fisdit.json (fisdit's own models) overrides these defaults; a flag overrides both.
  cmd->add_option("--size", args->size,
                  std::string("WxH (default: the model's fisdit.json, else the release's, else ") +
                      kDefaultSize +
                      "; HunyuanVideo 1.5 takes its aspect ratio and the version's size bucket)");
  cmd->add_option("--frames", args->frames,
                  "video frames, 4k+1 (default: fisdit.json, else the release's (HunyuanVideo "
                  "1.5: 121), else " +
                      std::to_string(kDefaultFrames) + ")");
  add_sampling_flags(cmd, args->sampling, {.defaults_from_model = true});
  cmd->add_option("--seed", o.seed, "noise seed")->capture_default_str();
  add_precision_flag(cmd, o.precision);
  add_device_flags(cmd, args->device, default_device(),
                   "cuda or cpu: where the text encoder, DiT and VAE run (default: cuda when "
                   "this build has it and a GPU is present)");
  add_memory_limit_flag(cmd, args->device);
  add_vae_precision_flag(cmd, args->device);
  cmd->add_option("--output", args->out.output, "MP4 file to write");
  cmd->add_option("--frames-dir", args->out.frames_dir, "directory for PNG frames");
  cmd->add_option("--fps", args->out.fps,
                  "MP4 frame rate (default: the model's: 16; 24 for ti2v and HunyuanVideo 1.5)");
  cmd->add_option("--crf", args->out.crf, "H.264 quality, 0-51 (lower is better)")
      ->capture_default_str();
  cmd->add_option("--summary-json", args->out.summary_json,
                  "write per-stage times and settings as JSON here");
  cmd->add_option("--save-latent", args->out.save_latent,
                  "also write the final latent 'x' [z, F', h, w] (F32 safetensors) here");
  cmd->add_flag("--compare-dense", args->compare_dense,
                "also run dense (FIS and cache off, same seed) and report latent rel. L2, PSNR "
                "and SSIM");
  cmd->add_flag("--quiet", args->quiet, "no progress bars");
  cmd->add_option("--repeat", args->repeat,
                  "run the request N times in one process: the models load once (timed apart) "
                  "and stay loaded, each run encodes its prompt, each run's times are printed "
                  "and kept in --summary-json (runs); the outputs are the last run's")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  add_fis_flags(cmd, args->fis);
  add_cache_flags(cmd, args->cache);
  cmd->callback([args] { run_generate(*args); });
}

}  // namespace fisdit::cli
