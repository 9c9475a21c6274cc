// fisdit analyze: the paper's redundancy analysis (Eq. 1-6) as JSON and PNG figures.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "analysis/analyze.h"
#include "analysis/figures.h"
#include "analysis/plot.h"
#include "cli.h"
#include "core/random.h"
#include "fisdit/error.h"
#include "models/family.h"
#include "pipeline/model_defaults.h"
#include "sched/denoise.h"
#include "sched/flow_euler.h"

namespace fisdit::cli {

namespace {
// --prompts: one sample per non-empty line, each encoded with the umT5 encoder (CPU) and sampled
// from the same noise (--seed) at --size / --frames, as generate would for a t2v run.
struct PromptFlags {
  std::string file, text_encoder, tokenizer, negative, size = "1280x720";
  std::vector<std::string> list;  // used when no --prompts file: the model's held-out prompts
  int frames = 81;
  uint64_t seed = 0;
};

// Every prompt (and the negative one) through the release's text stage, all from one noise.
std::vector<analysis::AnalysisSample> prompt_samples(const PromptFlags& p, models::Release& release,
                                                     Backend& backend, bool guided) {
  const models::ModelInfo& info = release.info().model;
  if (info.task == models::Task::I2V)
    throw Error("--prompts: an i2v model needs a first frame; give --inputs with 'y' instead");
  std::vector<std::string> prompts = p.list;
  if (!p.file.empty()) {
    std::ifstream in(p.file);
    if (!in) throw Error("--prompts " + p.file + ": cannot open the file");
    for (std::string line; std::getline(in, line);)
      if (line.find_first_not_of(" \t\r") != std::string::npos) prompts.push_back(line);
    if (prompts.empty()) throw Error("--prompts " + p.file + ": no prompt in the file");
  }
  int width = 0, height = 0;
  parse_size(p.size, width, height);
  const models::LatentGrid g = info.latent_grid(width, height, p.frames);
  const Tensor x = randn({info.latent_channels, g.frames, g.height, g.width}, p.seed);
  std::vector<std::string> texts = prompts;
  if (guided) texts.push_back(p.negative);
  const std::vector<models::EncodedText> contexts = release.encode_text(texts, backend, nullptr);
  release.unload(models::Release::Part::TextEncoder);
  status("encoded " + std::to_string(prompts.size()) + " prompts with " +
         release.info().part("text_encoder") + "; latent " + shape_str(x.shape()));
  std::vector<analysis::AnalysisSample> samples;
  for (size_t i = 0; i < prompts.size(); ++i) {
    sched::DenoiseInputs di;
    di.x = x;
    di.context = contexts[i].context;
    if (guided) di.context_neg = contexts.back().context;
    samples.push_back({prompts[i], di});
  }
  return samples;
}
}  // namespace

void register_analyze(CLI::App& app) {
  struct Args {
    std::string model, model_low, output_dir, device = "cpu", solver = "euler";
    std::vector<std::string> inputs, fis;
    std::vector<int> strides;
    int steps = 4;
    double shift = 5.0;
    float guidance = 1.0f;
    std::optional<float> boundary;
    bool no_figures = false;
    PromptFlags prompts;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "analyze", "redundancy analysis of a dense run (CV, R_f, per-frame FIS error): JSON + PNG");
  cmd->add_option("--model", args->model,
                  "(high-noise) DiT file or release directory; default: the bundled model");
  cmd->add_option("--model-low", args->model_low, "low-noise expert (Wan 2.2 A14B)");
  cmd->add_option("--boundary", args->boundary, "expert switch (as denoise; default: the model's)");
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with x (noise), context (and context_neg, y, z_image) as denoise "
                  "takes them; repeatable: CV is averaged over the samples (Eq. 5)")
      ->allow_extra_args(false);
  cmd->add_option("--prompts", args->prompts.file,
                  "text file, one prompt per line: each a sample (t2v/ti2v), encoded with the "
                  "release's umT5 (or --text-encoder/--tokenizer), from one noise (--seed)");
  cmd->add_option("--text-encoder", args->prompts.text_encoder, "umT5 encoder (with --prompts)");
  cmd->add_option("--tokenizer", args->prompts.tokenizer, "umT5 tokenizer (with --prompts)");
  cmd->add_option("--negative", args->prompts.negative, "negative prompt (with --guidance)");
  cmd->add_option("--size", args->prompts.size, "WIDTHxHEIGHT of the video (with --prompts)")
      ->capture_default_str();
  cmd->add_option("--frames", args->prompts.frames, "video frames, 4n+1 (with --prompts)")
      ->capture_default_str();
  cmd->add_option("--seed", args->prompts.seed, "noise seed (with --prompts)")
      ->capture_default_str();
  cmd->add_option("--fis", args->fis,
                  "FIS settings whose per-frame error vs dense is measured (Eq. 6): presets or "
                  "preset files, comma-separated or repeated")
      ->allow_extra_args(false);
  cmd->add_option("--strides", args->strides,
                  "measure each --fis setting (default balanced) at these strides, e.g. 2,3,4")
      ->delimiter(',')
      ->allow_extra_args(false);
  cmd->add_option("--solver", args->solver, "euler, unipc or dpm++")->capture_default_str();
  cmd->add_option("--steps", args->steps, "denoising steps")->capture_default_str();
  cmd->add_option("--shift", args->shift, "flow shift")->capture_default_str();
  cmd->add_option("--guidance", args->guidance, "CFG scale (1 = none)")->capture_default_str();
  cmd->add_option("--output-dir", args->output_dir,
                  "directory for analysis.json and the PNG figures (created)")
      ->required();
  cmd->add_flag("--no-figures", args->no_figures, "write the JSON only");
  cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  cmd->callback([args, cmd] {
    // Without --model: the bundled model. A model with a fisdit.json gives the defaults of the
    // flags not given and, without --inputs/--prompts, its held-out prompts.
    args->model = model_or_bundled(args->model);
    const pipeline::ModelDefaults d = pipeline::read_model_defaults(args->model);
    apply_model_defaults(*cmd, d,
                         {args->prompts.size, args->prompts.frames, args->steps, args->shift,
                          args->solver, args->guidance});
    if (args->inputs.empty() && args->prompts.file.empty() && !d.held_out_prompts.empty()) {
      args->prompts.list = d.held_out_prompts;
      status("prompts: the " + std::to_string(d.held_out_prompts.size()) + " held-out prompts of " +
             d.path + "; size " + args->prompts.size + ", " + std::to_string(args->prompts.frames) +
             " frames");
    }
    analysis::AnalysisOptions opt;
    opt.denoise.solver = sched::parse_solver(args->solver);
    opt.denoise.steps = args->steps;
    opt.denoise.shift = args->shift;
    opt.denoise.guidance = args->guidance;
    opt.denoise.boundary = args->boundary;
    if (!std::isfinite(args->guidance)) throw Error("--guidance must be a finite number");
    if (args->boundary && !(*args->boundary >= 0.0f && *args->boundary <= 1.0f))
      throw Error("--boundary must be in [0, 1]");
    sched::flow_schedule(opt.denoise.solver, opt.denoise.steps, opt.denoise.shift);  // validates
    std::vector<std::string> fis_names;
    for (const std::string& f : args->fis)
      for (const std::string& item : split_commas(f)) fis_names.push_back(item);
    if (fis_names.empty() && !args->strides.empty()) fis_names.push_back("balanced");
    for (const std::string& name : fis_names) {
      accel::FisConfig c = accel::fis_preset(name);
      if (args->strides.empty()) {
        opt.plans.push_back(c);
        continue;
      }
      for (int s : args->strides) {
        if (s < 1) throw Error("--strides: a stride must be >= 1, got " + std::to_string(s));
        accel::FisConfig cs = c;
        cs.stride = s;
        cs.name = "custom";
        cs.validate();
        opt.plans.push_back(cs);
      }
    }

    const bool by_prompts = !args->prompts.file.empty() || !args->prompts.list.empty();
    if (args->inputs.empty() == !by_prompts)
      throw Error("give either --inputs (noise and context files) or --prompts (a text file)");
    std::vector<analysis::AnalysisSample> samples;
    for (const std::string& path : args->inputs) {
      const auto in = SafetensorsFile::open(path);
      samples.push_back({path,
                         {read_input(*in, "x", true), read_input(*in, "context", true),
                          read_input(*in, "context_neg", false), read_input(*in, "y", false),
                          read_input(*in, "z_image", false)}});
      if (args->guidance != 1.0f && !samples.back().inputs.context_neg.defined())
        throw Error("--guidance " + CLI::detail::to_string(args->guidance) + ": " + path +
                    " has no 'context_neg' for the unconditional pass (or use guidance 1)");
    }
    std::error_code ec;
    std::filesystem::create_directories(args->output_dir, ec);
    if (ec || !std::filesystem::is_directory(args->output_dir))
      throw Error("--output-dir " + args->output_dir + ": cannot create the directory");

    const PromptFlags& pf = args->prompts;
    if (by_prompts && !pf.file.empty() && !std::ifstream(pf.file))
      throw Error("--prompts " + pf.file + ": cannot open the file");
    auto backend = make_backend(args->device);
    // --prompts: the release's text stage and experts (explicit flags win over what it holds);
    // --inputs: the DiT(s) alone.
    std::unique_ptr<models::Release> release;
    std::unique_ptr<models::VelocityModel> high, low;
    if (by_prompts) {
      models::ReleaseOptions ro;
      ro.parts = {{"dit_low", args->model_low},
                  {"text_encoder", pf.text_encoder},
                  {"tokenizer", pf.tokenizer}};
      ro.vae = false;
      release = models::open_release(args->model, ro);
      if (!args->boundary && release->info().two_experts)
        opt.denoise.boundary = release->info().boundary;
      samples = prompt_samples(pf, *release, *backend, args->guidance != 1.0f);
    } else {
      high = models::load_model(args->model, *backend);
      if (!args->model_low.empty()) low = models::load_model(args->model_low, *backend);
    }
    const bool two = release ? release->info().two_experts : low != nullptr;
    const sched::ExpertFn expert = [&](bool use_high) -> models::VelocityModel& {
      if (release) return release->expert(use_high || !two, *backend);
      return use_high || !low ? *high : *low;
    };
    const models::ModelInfo& info = release ? release->info().model : high->info();
    status("model " + args->model + ": " + info.family + " " + models::task_name(info.task) + ", " +
           std::to_string(info.num_blocks) + " blocks" + (two ? ", two experts" : ""));
    for (const accel::FisConfig& c : opt.plans) status("measuring fis " + c.describe());
    opt.meta = {{"model", release ? release->info().part("dit") : args->model},
                {"model_low", release ? release->info().part("dit_low") : args->model_low},
                {"device", args->device}};
    const nlohmann::json result = analysis::analyze_redundancy(info, expert, two, samples, opt);

    const std::string json_path = (std::filesystem::path(args->output_dir) / "analysis.json");
    std::ofstream out(json_path);
    out << result.dump(1) << "\n";
    if (!out) throw Error("cannot write " + json_path);
    out.close();
    status("wrote " + json_path);
    if (!args->no_figures && !analysis::figures_available())
      status(
          "no figures: this build has no cairo (-DFISDIT_FIGURES=OFF); analysis.json has the data");
    else if (!args->no_figures)
      for (const std::string& p : analysis::write_analysis_figures(result, args->output_dir))
        status("wrote " + p);
  });
}

}  // namespace fisdit::cli
