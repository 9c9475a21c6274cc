// fisdit generate: prompt (and image) -> MP4 and/or PNG frames with a Wan release.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "analysis/metrics.h"
#include "backend/backend.h"
#include "cli.h"
#include "fisdit/error.h"
#include "media/image.h"
#include "media/video.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"
#include "sched/flow_solvers.h"

namespace fisdit::cli {

void register_generate(CLI::App& app) {
  struct Args {
    pipeline::GenerateOptions opt;
    std::string size = "1280x720", solver = "euler", output, frames_dir, summary_json, save_latent;
    std::optional<float> boundary, guidance_high, guidance_low;
    std::optional<double> fps;
    int crf = 18;
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
  cmd->add_option("--model-low", o.parts.dit_low, "low-noise expert (A14B), if not in --model");
  cmd->add_option("--text-encoder", o.parts.text_encoder, "umT5 encoder, if not in --model");
  cmd->add_option("--tokenizer", o.parts.tokenizer, "spiece.model or a directory holding it");
  cmd->add_option("--vae", o.parts.vae, "Wan VAE, if not in --model");
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
                  "expert switch: high-noise while t >= boundary*1000 (t2v 0.875, i2v 0.9)");
  cmd->add_option("--seed", o.seed, "noise seed")->capture_default_str();
  cmd->add_option("--device", o.device,
                  "cuda or cpu: where the text encoder, DiT and VAE run (default: cuda when "
                  "this build has it and a GPU is present)")
      ->capture_default_str();
  cmd->add_option("--output", args->output, "MP4 file to write");
  cmd->add_option("--frames-dir", args->frames_dir, "directory for PNG frames");
  cmd->add_option("--fps", args->fps, "MP4 frame rate (default 16; 24 for ti2v)");
  cmd->add_option("--crf", args->crf, "H.264 quality, 0-51 (lower is better)")
      ->capture_default_str();
  cmd->add_option("--summary-json", args->summary_json,
                  "write per-stage times and settings as JSON here");
  cmd->add_option("--save-latent", args->save_latent,
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
    if (args->output.empty() && args->frames_dir.empty() && args->save_latent.empty())
      throw Error("nothing to write: give --output OUT.mp4 and/or --frames-dir DIR");
    if (!args->output.empty()) {
      const std::filesystem::path parent = std::filesystem::path(args->output).parent_path();
      std::error_code ec;
      if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
        throw Error("--output " + args->output + ": directory " + parent.string() +
                    " does not exist");
    }
    if (args->crf < 0 || args->crf > 51) throw Error("--crf must be in 0..51");
    if (args->fps && !(*args->fps > 0 && *args->fps <= 240))
      throw Error("--fps must be in (0, 240]");
    parse_size(args->size, o.width, o.height);
    o.solver = sched::parse_solver(args->solver);
    o.fis = args->fis.resolve();
    o.cache = args->cache.resolve();
    note_ratio_resampling(o.cache, o.steps);
    o.boundary = args->boundary;
    o.guidance_high = args->guidance_high;
    o.guidance_low = args->guidance_low;
    o.progress = !args->quiet;
    if (o.lora_strength != o.lora_strength) throw Error("--lora-strength must be a number");

    if (args->compare_dense && !o.fis.enabled() && !o.cache.enabled)
      throw Error(
          "--compare-dense compares an accelerated run with the dense one: give --fis "
          "balanced, fast or a preset, and/or --cache magcache (this run is already dense)");
    pipeline::GenerateResult r = pipeline::generate(o);
    nlohmann::json& summary = r.summary;
    if (args->compare_dense) {
      status("dense reference run (FIS and cache off, same seed) for --compare-dense");
      pipeline::GenerateOptions dense = o;
      dense.fis = accel::fis_preset("off");
      dense.cache = accel::MagCacheConfig{};
      const pipeline::GenerateResult d = pipeline::generate(dense);
      const double latent_err = rel_l2(r.latent, d.latent);
      const double p = analysis::psnr(r.video, d.video), q = analysis::ssim(r.video, d.video);
      summary["fidelity_vs_dense"] = {
          {"latent_rel_l2", latent_err},
          {"psnr_db", std::isinf(p) ? nlohmann::json("inf") : nlohmann::json(p)},
          {"ssim", q},
          {"dense_seconds", d.summary.at("seconds")}};
      const std::string accel_name =
          o.fis.enabled() && o.cache.enabled
              ? "fis " + o.fis.name + " + magcache"
              : (o.fis.enabled() ? "fis " + o.fis.name : std::string("magcache"));
      int skipped = 0, passes = 0;
      for (const auto& st : summary["steps"]) skipped += st.value("cache_skipped_passes", 0);
      for (const auto& st : summary["steps"]) passes += st.value("guidance", 1.0) != 1.0 ? 2 : 1;
      summary["fidelity_vs_dense"]["accelerated"] = accel_name;
      summary["fidelity_vs_dense"]["cache_skipped_passes"] = skipped;
      summary["fidelity_vs_dense"]["passes"] = passes;
      char line[384];
      std::snprintf(line, sizeof line,
                    "fidelity vs dense: latent rel. L2 %.4g, PSNR %.2f dB, SSIM %.4f; denoise "
                    "%.2f s with %s vs %.2f s dense%s",
                    latent_err, p, q, summary["seconds"].value("denoise", 0.0), accel_name.c_str(),
                    d.summary.at("seconds").value("denoise", 0.0),
                    o.cache.enabled ? ("; MagCache skipped " + std::to_string(skipped) + " of " +
                                       std::to_string(passes) + " DiT passes")
                                          .c_str()
                                    : "");
      status(line);
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (!args->output.empty()) {
      const double fps = args->fps.value_or(r.task == "ti2v" ? 24.0 : 16.0);
      Mp4Options mo;
      mo.crf = args->crf;
      const Mp4Result m = write_mp4(args->output, r.video, fps, mo);
      if (!m.warning.empty()) status("warning: " + m.warning);
      summary["output"] = {{"mp4", args->output}, {"encoder", m.encoder}, {"fps", fps}};
      char line[512];
      std::snprintf(line, sizeof line, "wrote %s: %lld frames %dx%d at %.3g fps (%s)",
                    args->output.c_str(), static_cast<long long>(m.frames), m.width, m.height, fps,
                    m.encoder.c_str());
      status(line);
    }
    if (!args->save_latent.empty()) {
      write_safetensors(args->save_latent, {{"x", r.latent}}, {{"producer", "fisdit generate"}});
      status("wrote " + args->save_latent + " ('x' " + shape_str(r.latent.shape()) + ")");
    }
    if (!args->frames_dir.empty()) {
      const auto files = write_png_frames(args->frames_dir, r.video);
      summary["frames_dir"] = args->frames_dir;
      status("wrote " + std::to_string(files.size()) + " PNG frames to " + args->frames_dir);
    }
    summary["seconds"]["write"] =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const nlohmann::json& s = summary["seconds"];
    // Every stage the run had, in order; the total includes writing the output.
    std::string line = "times:";
    const auto item = [&](const char* name, double seconds) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%s %s %.2f s", line.size() > 6 ? "," : "", name, seconds);
      line += buf;
    };
    item("text", s.value("text_load", 0.0) + s.value("text_encode", 0.0));
    if (s.contains("image_encode")) item("image encode", s.value("image_encode", 0.0));
    item("dit load", s.value("dit_load", 0.0));
    item("denoise", s.value("denoise", 0.0));
    item("decode", s.value("vae_decode", 0.0));
    item("write", s.value("write", 0.0));
    item("total", s.value("total", 0.0) + s.value("write", 0.0));
    status(line);
    if (summary.contains("gpu_peak_gib")) {
      std::string peaks;
      const nlohmann::json& g = summary["gpu_peak_gib"];
      for (const char* stage : {"text", "image_encode", "denoise", "vae_decode"}) {
        if (!g.contains(stage)) continue;
        char item[96];
        std::snprintf(item, sizeof item, "%s%s %.1f GiB", peaks.empty() ? "" : ", ", stage,
                      g[stage].get<double>());
        peaks += item;
      }
      status("GPU memory peak per stage: " + peaks);
    }
    if (!args->summary_json.empty()) {
      std::ofstream out(args->summary_json);
      out << summary.dump(2) << "\n";
      if (!out) throw Error("--summary-json " + args->summary_json + ": cannot write");
      status("wrote " + args->summary_json);
    }
  });
}

}  // namespace fisdit::cli
