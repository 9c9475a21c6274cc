// fisdit generate: prompt (and image) -> MP4 and/or PNG frames with a release (Wan 2.2 / 2.1).
#include "backend/backend.h"
#include "cli.h"
#include "fisdit/error.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"
#include "pipeline/output.h"
#include "sched/flow_solvers.h"

namespace fisdit::cli {

void register_generate(CLI::App& app) {
  struct Args {
    pipeline::GenerateOptions opt;
    pipeline::OutputOptions out;
    std::string size = "1280x720", solver = "euler";
    std::optional<float> boundary, guidance_high, guidance_low;
    bool quiet = false, compare_dense = false;
    FisFlags fis;
    CacheFlags cache;
  };
  auto args = std::make_shared<Args>();
  pipeline::GenerateOptions& o = args->opt;
  o.device = default_device();
  o.fis = accel::fis_preset("balanced");
  args->fis.preset = "balanced";
  CLI::App* cmd = app.add_subcommand(
      "generate", "text (and image) to video with a Wan 2.2 / 2.1 release: MP4 and/or PNG frames");
  cmd->add_option("--model", o.model,
                  "release directory (official or diffusers layout) or a DiT .safetensors file; "
                  "default: the bundled model (models/fisdit-shapes, or $FISDIT_MODEL)");
  // Parts of the release by role (a std::map's elements stay where they are).
  cmd->add_option("--model-low", o.parts["dit_low"], "low-noise expert (A14B), if not in --model");
  cmd->add_option("--text-encoder", o.parts["text_encoder"], "umT5 encoder, if not in --model");
  cmd->add_option("--tokenizer", o.parts["tokenizer"], "spiece.model or a directory holding it");
  cmd->add_option("--vae", o.parts["vae"], "Wan VAE, if not in --model");
  cmd->add_option("--lora-high", o.lora_high, "LoRA for the high-noise expert (or the only one)");
  cmd->add_option("--lora-low", o.lora_low, "LoRA for the low-noise expert");
  cmd->add_option("--lora-strength", o.lora_strength, "LoRA scale")->capture_default_str();
  cmd->add_option("--prompt", o.prompt, "what the video shows")->required();
  cmd->add_option("--negative", o.negative, "negative prompt (used when guidance != 1)");
  cmd->add_option("--image", o.image, "first frame, PNG or JPEG (i2v; optional for ti2v)");
  // The model's fisdit.json (fisdit's own models) overrides these defaults; a flag overrides both.
  cmd->add_option("--size", args->size, "WxH (default: the model's fisdit.json, else 1280x720)");
  cmd->add_option("--frames", o.frames, "video frames, 4k+1 (default: fisdit.json, else 81)");
  cmd->add_option("--steps", o.steps, "sampling steps (default: fisdit.json, else 4)");
  cmd->add_option("--shift", o.shift, "flow shift (default: fisdit.json, else 5)");
  cmd->add_option("--solver", args->solver,
                  "euler (Lightning 4-step), unipc or dpm++ (default: fisdit.json, else euler)");
  cmd->add_option("--guidance", o.guidance, "CFG scale, 1 = off (default: fisdit.json, else 1)");
  cmd->add_option("--guidance-high", args->guidance_high, "CFG scale of the high-noise steps");
  cmd->add_option("--guidance-low", args->guidance_low, "CFG scale of the low-noise steps");
  cmd->add_option("--boundary", args->boundary,
                  "expert switch: high-noise while t >= boundary*1000 (default: the release's, "
                  "else Wan t2v 0.875, i2v 0.9)");
  cmd->add_option("--seed", o.seed, "noise seed")->capture_default_str();
  cmd->add_option("--device", o.device,
                  "cuda or cpu: where the text encoder, DiT and VAE run (default: cuda when "
                  "this build has it and a GPU is present)")
      ->capture_default_str();
  cmd->add_option("--output", args->out.output, "MP4 file to write");
  cmd->add_option("--frames-dir", args->out.frames_dir, "directory for PNG frames");
  cmd->add_option("--fps", args->out.fps, "MP4 frame rate (default: the model's, 16; 24 for ti2v)");
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
  add_fis_flags(cmd, args->fis);
  add_cache_flags(cmd, args->cache);
  cmd->callback([args, cmd] {
    pipeline::GenerateOptions& o = args->opt;
    o.model = model_or_bundled(o.model);
    // Defaults the model carries (fisdit.json) for the flags not given.
    const pipeline::ModelDefaults d = pipeline::read_model_defaults(o.model);
    apply_model_defaults(*cmd, d,
                         {args->size, o.frames, o.steps, o.shift, args->solver, o.guidance});
    if (d.frames && cmd->count("--frames") && o.frames != *d.frames)
      status("note: " + (d.name.empty() ? o.model : d.name) + " was trained on " +
             std::to_string(*d.frames) + "-frame clips; --frames " + std::to_string(o.frames) +
             " is outside what it learned and looks worse");
    if (!d.path.empty())
      status("defaults from " + d.path + ": --size " + args->size + " --frames " +
             std::to_string(o.frames) + " --steps " + std::to_string(o.steps) + " --solver " +
             args->solver + " (flags given override them)");
    pipeline::check_outputs(args->out);
    parse_size(args->size, o.width, o.height);
    o.solver = sched::parse_solver(args->solver);
    o.fis = args->fis.resolve();
    o.cache = args->cache.resolve();
    note_ratio_resampling(o.cache, o.steps);
    o.boundary = args->boundary;
    o.guidance_high = args->guidance_high;
    o.guidance_low = args->guidance_low;
    o.progress = !args->quiet;
    if (args->compare_dense && !o.fis.enabled() && !o.cache.enabled)
      throw ParamError("compare_dense",
                       ": compares an accelerated run with the dense one: give --fis balanced, "
                       "fast or a preset, and/or --cache magcache (this run is already dense)");

    // Stages: check (no weight read), text, image, sample, decode; then write.
    pipeline::Generator generator(o, /*keep_loaded=*/false);
    pipeline::GenerateResult r = generator.run(o);
    if (args->compare_dense) {
      status("dense reference run (FIS and cache off, same seed) for --compare-dense");
      status(pipeline::compare_with_dense(generator, o, r));
    }
    for (const std::string& line : pipeline::write_outputs(r, args->out)) status(line);
    status(pipeline::times_line(r.summary));
    if (const std::string peaks = pipeline::peaks_line(r.summary); !peaks.empty()) status(peaks);
  });
}

}  // namespace fisdit::cli
