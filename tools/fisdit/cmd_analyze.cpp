// fisdit analyze: the paper's redundancy analysis (Eq. 1-6) as JSON and PNG figures.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>

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
  std::string file, text_encoder, tokenizer, negative;
  std::optional<std::string> size;  // default: fisdit.json's, else kDefaultSize
  std::optional<int> frames;        // default: fisdit.json's, else kDefaultFrames
  std::vector<std::string> list;    // used when no --prompts file: the model's held-out prompts
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
  parse_size(p.size.value_or(kDefaultSize), width, height);
  const models::LatentGrid g = info.latent_grid(width, height, p.frames.value_or(kDefaultFrames));
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
struct AnalyzeArgs {
  std::string output_dir;
  std::vector<std::string> inputs, fis;
  std::vector<int> strides;
  bool no_figures = false;
  ExpertFlags experts;     // --model, --model-low
  SamplingFlags sampling;  // no --guidance-high / --guidance-low
  DeviceFlags device;
  PromptFlags prompts;
};

// The FIS settings whose per-frame error is measured: each --fis at each of --strides.
std::vector<accel::FisConfig> fis_plans(const AnalyzeArgs& a) {
  std::vector<std::string> names;
  for (const std::string& f : a.fis)
    for (const std::string& item : split_commas(f)) names.push_back(item);
  if (names.empty() && !a.strides.empty()) names.push_back("balanced");
  std::vector<accel::FisConfig> plans;
  for (const std::string& name : names) {
    const accel::FisConfig c = accel::fis_preset(name);
    if (a.strides.empty()) {
      plans.push_back(c);
      continue;
    }
    for (int s : a.strides) {
      if (s < 1) throw Error("--strides: a stride must be >= 1, got " + std::to_string(s));
      accel::FisConfig cs = c;
      cs.stride = s;
      cs.name = "custom";
      cs.validate();
      plans.push_back(cs);
    }
  }
  return plans;
}

// --inputs: one sample per file, as denoise reads it.
std::vector<analysis::AnalysisSample> input_samples(const std::vector<std::string>& paths,
                                                    float guidance) {
  std::vector<analysis::AnalysisSample> samples;
  for (const std::string& path : paths) {
    const auto in = SafetensorsFile::open(path);
    samples.push_back({path, read_denoise_inputs(*in)});
    if (guidance != 1.0f && !samples.back().inputs.context_neg.defined())
      throw Error("--guidance " + CLI::detail::to_string(guidance) + ": " + path +
                  " has no 'context_neg' for the unconditional pass (or use guidance 1)");
  }
  return samples;
}

// The DiT expert(s): from the release with --prompts (explicit flags win over what it holds),
// else the DiT file(s) alone.
struct Experts {
  std::unique_ptr<models::Release> release;
  std::unique_ptr<models::VelocityModel> high, low;
  bool two() const { return release ? release->info().two_experts : low != nullptr; }
  const models::ModelInfo& info() const { return release ? release->info().model : high->info(); }
};

void write_analysis(const nlohmann::json& result, const std::string& dir, bool no_figures) {
  const std::string json_path = (std::filesystem::path(dir) / "analysis.json");
  std::ofstream out(json_path);
  out << result.dump(1) << "\n";
  if (!out) throw Error("cannot write " + json_path);
  out.close();
  status("wrote " + json_path);
  if (!no_figures && !analysis::figures_available())
    status(
        "no figures: this build has no cairo (-DFISDIT_FIGURES=OFF); analysis.json has the data");
  else if (!no_figures)
    for (const std::string& p : analysis::write_analysis_figures(result, dir)) status("wrote " + p);
}

void run_analyze(const AnalyzeArgs& args) {
  // Without --model: the bundled model. A model with a fisdit.json gives the defaults of the
  // flags not given and, without --inputs/--prompts, its held-out prompts.
  const std::string model = model_or_bundled(args.experts.model);
  const pipeline::ModelDefaults d = pipeline::read_model_defaults(model);
  PromptFlags pf = args.prompts;
  SamplingFlags sampling = args.sampling;
  apply_model_defaults(d, pf.size, pf.frames, sampling);
  if (args.inputs.empty() && pf.file.empty() && !d.held_out_prompts.empty()) {
    pf.list = d.held_out_prompts;
    status("prompts: the " + std::to_string(d.held_out_prompts.size()) + " held-out prompts of " +
           d.path + "; size " + pf.size.value_or(kDefaultSize) + ", " +
           std::to_string(pf.frames.value_or(kDefaultFrames)) + " frames");
  }
  analysis::AnalysisOptions opt;
  opt.denoise = sampling.resolve();
  opt.plans = fis_plans(args);
  const bool by_prompts = !pf.file.empty() || !pf.list.empty();
  if (args.inputs.empty() == !by_prompts)
    throw Error("give either --inputs (noise and context files) or --prompts (a text file)");
  std::vector<analysis::AnalysisSample> samples = input_samples(args.inputs, opt.denoise.guidance);
  std::error_code ec;
  std::filesystem::create_directories(args.output_dir, ec);
  if (ec || !std::filesystem::is_directory(args.output_dir))
    throw Error("--output-dir " + args.output_dir + ": cannot create the directory");
  if (by_prompts && !pf.file.empty() && !std::ifstream(pf.file))
    throw Error("--prompts " + pf.file + ": cannot open the file");
  auto backend = args.device.backend();
  Experts e;
  if (by_prompts) {
    models::ReleaseOptions ro;
    ro.parts = {{"dit_low", args.experts.model_low},
                {"text_encoder", pf.text_encoder},
                {"tokenizer", pf.tokenizer}};
    ro.vae = false;
    e.release = models::open_release(model, ro);
    if (!opt.denoise.boundary && e.release->info().two_experts)
      opt.denoise.boundary = e.release->info().boundary;
    samples = prompt_samples(pf, *e.release, *backend, opt.denoise.guidance != 1.0f);
  } else {
    e.high = models::load_model(model, *backend);
    if (!args.experts.model_low.empty())
      e.low = models::load_model(args.experts.model_low, *backend);
  }
  const bool two = e.two();
  const sched::ExpertFn expert = [&](bool use_high) -> models::VelocityModel& {
    if (e.release) return e.release->expert(use_high || !two, *backend);
    return use_high || !e.low ? *e.high : *e.low;
  };
  const models::ModelInfo& info = e.info();
  status("model " + model + ": " + info.family + " " + models::task_name(info.task) + ", " +
         std::to_string(info.num_blocks) + " blocks" + (two ? ", two experts" : ""));
  for (const accel::FisConfig& c : opt.plans) status("measuring fis " + c.describe());
  opt.meta = {{"model", e.release ? e.release->info().part("dit") : model},
              {"model_low", e.release ? e.release->info().part("dit_low") : args.experts.model_low},
              {"device", args.device.device}};
  write_analysis(analysis::analyze_redundancy(info, expert, two, samples, opt), args.output_dir,
                 args.no_figures);
}

}  // namespace

void register_analyze(CLI::App& app) {
  auto args = std::make_shared<AnalyzeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "analyze", "redundancy analysis of a dense run (CV, R_f, per-frame FIS error): JSON + PNG");
  add_expert_flags(
      cmd, args->experts,
      {.model_help = "(high-noise) DiT file or release directory; default: the bundled model",
       .model_low_help = "low-noise expert (Wan 2.2 A14B)"});
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
      ->default_str(kDefaultSize);
  cmd->add_option("--frames", args->prompts.frames, "video frames, 4n+1 (with --prompts)")
      ->default_str(std::to_string(kDefaultFrames));
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
  add_sampling_flags(cmd, args->sampling, {.guidance_per_expert = false});
  cmd->add_option("--output-dir", args->output_dir,
                  "directory for analysis.json and the PNG figures (created)")
      ->required();
  cmd->add_flag("--no-figures", args->no_figures, "write the JSON only");
  add_device_flags(cmd, args->device, "cpu");
  cmd->callback([args] { run_analyze(*args); });
}

}  // namespace fisdit::cli
