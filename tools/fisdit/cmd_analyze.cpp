// fisdit analyze: the paper's redundancy analysis (Eq. 1-6) as JSON and PNG figures.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "analysis/analyze.h"
#include "analysis/figures.h"
#include "cli.h"
#include "fisdit/error.h"
#include "models/wan/loader.h"
#include "sched/flow_euler.h"

namespace fisdit::cli {

namespace {
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}
}  // namespace

void register_analyze(CLI::App& app) {
  struct Args {
    std::string model, model_low, output_dir, device = "cpu", solver = "euler";
    std::vector<std::string> inputs, fis;
    std::vector<int> strides;
    int steps = 4;
    double shift = 5.0;
    float guidance = 1.0f, boundary = 0.875f;
    bool no_figures = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "analyze", "redundancy analysis of a dense run (CV, R_f, per-frame FIS error): JSON + PNG");
  cmd->add_option("--model", args->model, "(high-noise) DiT file or directory")->required();
  cmd->add_option("--model-low", args->model_low, "low-noise expert (Wan 2.2 A14B)");
  cmd->add_option("--boundary", args->boundary, "expert switch (as denoise)")
      ->capture_default_str();
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with x (noise), context (and context_neg, y, z_image) as denoise "
                  "takes them; repeatable: CV is averaged over the samples (Eq. 5)")
      ->required()
      ->allow_extra_args(false);
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
  cmd->callback([args] {
    analysis::AnalysisOptions opt;
    opt.denoise.solver = sched::parse_solver(args->solver);
    opt.denoise.steps = args->steps;
    opt.denoise.shift = args->shift;
    opt.denoise.guidance = args->guidance;
    opt.denoise.boundary = args->boundary;
    if (!std::isfinite(args->guidance)) throw Error("--guidance must be a finite number");
    if (!(args->boundary >= 0.0f && args->boundary <= 1.0f))
      throw Error("--boundary must be in [0, 1]");
    sched::flow_schedule(opt.denoise.solver, opt.denoise.steps, opt.denoise.shift);  // validates
    std::vector<std::string> fis_names;
    for (const std::string& f : args->fis)
      for (const std::string& item : split_list(f)) fis_names.push_back(item);
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

    auto backend = make_backend(args->device);
    const wan::ModelSource src = wan::open_model(args->model);
    std::unique_ptr<wan::WanDiT> high = wan::load_dit(src, *backend), low;
    status("loaded " + args->model + ": " + src.config.model_type + ", " +
           std::to_string(src.config.num_layers) + " blocks");
    if (!args->model_low.empty()) {
      low = wan::load_dit(wan::open_model(args->model_low), *backend);
      status("loaded low-noise expert " + args->model_low);
    }
    for (const accel::FisConfig& c : opt.plans) status("measuring fis " + c.describe());
    opt.meta = {{"model", args->model}, {"model_low", args->model_low}, {"device", args->device}};
    const sched::ExpertFn expert = [&](bool use_high) -> wan::WanDiT& {
      return use_high || !low ? *high : *low;
    };
    const nlohmann::json result =
        analysis::analyze_redundancy(src.config, expert, low != nullptr, samples, opt);

    const std::string json_path = (std::filesystem::path(args->output_dir) / "analysis.json");
    std::ofstream out(json_path);
    out << result.dump(1) << "\n";
    if (!out) throw Error("cannot write " + json_path);
    out.close();
    status("wrote " + json_path);
    if (!args->no_figures)
      for (const std::string& p : analysis::write_analysis_figures(result, args->output_dir))
        status("wrote " + p);
  });
}

}  // namespace fisdit::cli
