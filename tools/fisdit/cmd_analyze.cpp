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
#include "models/wan/loader.h"
#include "models/wan/t5.h"
#include "models/wan/t5_tokenizer.h"
#include "pipeline/model_defaults.h"
#include "pipeline/release.h"
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

std::vector<analysis::AnalysisSample> prompt_samples(const PromptFlags& p,
                                                     const wan::WanConfig& cfg, bool guided) {
  if (cfg.task == models::Task::I2V)
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
  // The VAE's strides: 4 in time; 8 in space (Wan 2.1 VAE, z_dim 16) or 16 (Wan 2.2 VAE, 48).
  const int spatial = cfg.out_dim == 48 ? 16 : 8;
  const int ph = spatial * cfg.patch_size[1], pw = spatial * cfg.patch_size[2];
  if (width % pw || height % ph || width <= 0 || height <= 0)
    throw Error("--size " + p.size + ": width must be a multiple of " + std::to_string(pw) +
                " and height of " + std::to_string(ph) + " for this model");
  if (p.frames < 1 || (p.frames - 1) % 4)
    throw Error("--frames must be 4n+1 (1, 5, ..., 81), got " + std::to_string(p.frames));
  const std::string &encoder_path = p.text_encoder, &tokenizer_path = p.tokenizer;
  std::unique_ptr<wan::T5Tokenizer> tokenizer;
  try {
    tokenizer = std::make_unique<wan::T5Tokenizer>(tokenizer_path);
  } catch (const Error& e) {
    throw Error(std::string("--tokenizer: ") + e.what());
  }
  const wan::T5Source t5_src = wan::open_t5(encoder_path);
  wan::check_tokenizer_fits(*tokenizer, t5_src.config, encoder_path);
  if (t5_src.config.dim != cfg.text_dim)
    throw Error("--text-encoder " + encoder_path + " gives " + std::to_string(t5_src.config.dim) +
                "-channel contexts, the DiT takes text_dim " + std::to_string(cfg.text_dim));
  auto cpu = make_backend("cpu");
  auto t5 = wan::load_t5(t5_src, *cpu);
  status("loaded text encoder " + encoder_path + ", tokenizer " + tokenizer->model_path());
  const Tensor x =
      randn({cfg.out_dim, (p.frames - 1) / 4 + 1, height / spatial, width / spatial}, p.seed);
  // Every prompt (and the negative one) in one pass over the encoder's weights.
  std::vector<std::string> texts = prompts;
  if (guided) texts.push_back(p.negative);
  const std::vector<wan::PromptContext> contexts =
      wan::encode_prompts(*tokenizer, *t5, texts, cfg.text_len);
  std::vector<analysis::AnalysisSample> samples;
  for (size_t i = 0; i < prompts.size(); ++i) {
    sched::DenoiseInputs di;
    di.x = x;
    di.context = contexts[i].context;
    if (guided) di.context_neg = contexts.back().context;
    samples.push_back({prompts[i], di});
  }
  status("encoded " + std::to_string(samples.size()) + " prompts; latent " + shape_str(x.shape()));
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

    // --prompts with a release directory: the experts, text encoder and tokenizer found in it
    // (explicit flags win), as generate finds them.
    std::string dit_path = args->model, dit_low_path = args->model_low;
    PromptFlags& pf = args->prompts;
    if (!pf.file.empty() && !std::ifstream(pf.file))
      throw Error("--prompts " + pf.file + ": cannot open the file");
    if (by_prompts && (pf.text_encoder.empty() || pf.tokenizer.empty())) {
      pipeline::ReleaseOverrides o{args->model_low, pf.text_encoder, pf.tokenizer,
                                   /*vae: not used here*/ "-"};
      const pipeline::ReleasePaths paths = pipeline::resolve_release(args->model, o);
      dit_path = paths.dit;
      dit_low_path = paths.dit_low;
      pf.text_encoder = paths.text_encoder;
      pf.tokenizer = paths.tokenizer;
      if (!paths.dit_low.empty() && !args->boundary && paths.boundary)
        opt.denoise.boundary = static_cast<float>(*paths.boundary);
    }
    auto backend = make_backend(args->device);
    const wan::ModelSource src = wan::open_model(dit_path);
    std::unique_ptr<wan::WanDiT> high = wan::load_dit(src, *backend), low;
    status("loaded " + dit_path + ": " + models::task_name(src.config.task) + ", " +
           std::to_string(src.config.num_layers) + " blocks");
    if (!dit_low_path.empty()) {
      low = wan::load_dit(wan::open_model(dit_low_path), *backend);
      status("loaded low-noise expert " + dit_low_path);
    }
    if (by_prompts) samples = prompt_samples(pf, src.config, args->guidance != 1.0f);
    for (const accel::FisConfig& c : opt.plans) status("measuring fis " + c.describe());
    opt.meta = {{"model", dit_path}, {"model_low", dit_low_path}, {"device", args->device}};
    const sched::ExpertFn expert = [&](bool use_high) -> models::VelocityModel& {
      return use_high || !low ? *high : *low;
    };
    const nlohmann::json result =
        analysis::analyze_redundancy(high->info(), expert, low != nullptr, samples, opt);

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
