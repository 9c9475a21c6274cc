#include "pipeline/quality.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>

#include "analysis/analyze.h"
#include "analysis/metrics.h"
#include "fisdit/error.h"
#include "models/flops.h"
#include "sched/flow_solvers.h"

namespace fisdit::pipeline {
namespace {

const char* const kPresets[] = {"balanced", "fast"};
const char* const kSuffixes[] = {"no-interleave", "no-block-protection", "no-step-protection",
                                 "no-protection"};

// JSON has no infinity: +inf (equal videos) is written as "inf", NaN as null.
nlohmann::json number(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const std::string& item : items) out += (out.empty() ? "" : sep) + item;
  return out;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// What one variant collected over the prompts and seeds.
struct Collected {
  std::vector<double> rel_l2, psnr, ssim, seconds;
  std::vector<size_t> prompt;
  std::vector<uint64_t> seed;
  std::vector<double> frame_mse_sum;
};

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;  // an infinite PSNR makes the mean infinite: not all runs differ
  return v.empty() ? std::numeric_limits<double>::quiet_NaN() : s / static_cast<double>(v.size());
}

// Timings: the median, so that one run slowed by the machine does not move the row.
double median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

std::vector<std::string> quality_variant_names() {
  std::vector<std::string> names{"dense"};
  for (const char* preset : kPresets) {
    names.emplace_back(preset);
    for (const char* suffix : kSuffixes) names.push_back(std::string(preset) + "-" + suffix);
  }
  return names;
}

std::vector<std::string> default_quality_variants() {
  return {"dense",
          "balanced",
          "fast",
          "balanced-no-interleave",
          "fast-no-interleave",
          "balanced-no-block-protection",
          "balanced-no-step-protection",
          "balanced-no-protection"};
}

QualityVariant quality_variant(const std::string& name) {
  if (name == "dense") return {name, accel::fis_preset("off"), ""};
  // <precision>-<variant> (the prefix once), or an fp8 precision alone for its dense run.
  for (const char* prefix : {"fp8-gemm", "fp8"}) {
    const std::string p = prefix;
    const bool alone = name == p;
    if (!alone && !(name.rfind(p + "-", 0) == 0 && name.size() > p.size() + 1)) continue;
    const std::string rest = alone ? "dense" : name.substr(p.size() + 1);
    if (rest.rfind("fp8", 0) == 0) break;  // a second precision prefix
    QualityVariant v = quality_variant(rest);
    v.name = name;
    if (v.fis.enabled()) v.fis.name = name;
    v.precision = p;
    return v;
  }
  for (const char* preset : kPresets) {
    const std::string base = preset;
    if (name == base) return {name, accel::fis_preset(base), ""};
    if (name.rfind(base + "-", 0) != 0) continue;
    const std::string suffix = name.substr(base.size() + 1);
    QualityVariant v{name, accel::fis_preset(base), ""};
    v.fis.name = name;
    if (suffix == "no-interleave") {
      v.fis.interleave = false;
      v.ablation = "interleaving: the same anchor offset (o_l = 0) in every sparse block (Table 2)";
    } else if (suffix == "no-block-protection") {
      v.fis.head = v.fis.tail = 0;
      v.ablation = "block protection: head = tail = 0 (Table 3)";
    } else if (suffix == "no-step-protection") {
      v.fis.dense_last_steps = 0;
      v.ablation = "step protection: dense_last_steps = 0 (Table 3)";
    } else if (suffix == "no-protection") {
      v.fis.head = v.fis.tail = v.fis.dense_last_steps = 0;
      v.ablation = "block and step protection: head = tail = dense_last_steps = 0 (Table 3)";
    } else {
      break;
    }
    return v;
  }
  // A preset file (fisdit calibrate's output, or written by hand): its row is named by the path.
  std::error_code ec;
  if (std::filesystem::is_regular_file(name, ec)) {
    QualityVariant v{name, accel::fis_preset(name), ""};
    v.fis.name = name;
    return v;
  }
  throw ParamError("variants", ": unknown variant '" + name +
                                   "'; valid: " + join(quality_variant_names(), ", ") +
                                   ", or a FIS preset JSON file; each also as fp8-<variant> "
                                   "(fp8 alone: dense in fp8)");
}

namespace {

// Everything the runs of a report collect.
struct QualityRuns {
  explicit QualityRuns(int steps, int blocks, size_t variants)
      : recorder(steps, blocks), collected(variants) {}
  analysis::RedundancyRecorder recorder;  // the dense references' redundancy
  std::vector<Collected> collected;       // per variant
  nlohmann::json runs = nlohmann::json::array(), reference = nlohmann::json::array();
  std::vector<std::string> sample_names;
  Shape latent;
  std::string task, layout;
};

// The checks of a report before anything runs: prompts, seeds, the variants (resolved), and the
// shared request against the release (no weight is read).
std::vector<QualityVariant> check_quality(const QualityOptions& options,
                                          const Generator& generator) {
  if (options.prompts.empty())
    throw Error(
        "no prompts: give --prompts FILE (one prompt per line), or a model whose "
        "fisdit.json lists held_out_prompts");
  if (options.seeds.empty()) throw ParamError("seeds", ": give at least one seed");
  if (options.variants.empty()) throw ParamError("variants", ": give at least one variant");
  std::vector<QualityVariant> variants;
  for (const std::string& name : options.variants) {
    for (const QualityVariant& v : variants)
      if (v.name == name) throw ParamError("variants", ": '" + name + "' is listed twice");
    variants.push_back(quality_variant(name));
  }
  GenerateOptions o = options.base;
  o.prompt = options.prompts.front();
  generator.check(o);
  return variants;
}

// One prompt and seed: the dense reference (its redundancy recorded), then every variant from
// the same noise, each compared with the reference.
void run_sample(Generator& generator,
                const std::function<Generator&(const std::string&)>& generator_for,
                const QualityOptions& options, const std::vector<QualityVariant>& variants,
                size_t p, uint64_t seed, QualityRuns& q,
                const std::function<void(const std::string&)>& status) {
  const size_t samples = options.prompts.size() * options.seeds.size();
  GenerateOptions o = options.base;
  o.prompt = options.prompts[p];
  o.seed = seed;
  o.fis = accel::fis_preset("off");
  o.cache = accel::MagCacheConfig{};
  o.progress = false;
  // The reference: dense, with every block output of the conditional forward observed.
  o.on_forward = q.recorder.hook(1.0 / static_cast<double>(samples));
  const GenerateResult ref = generator.run(o);
  o.on_forward = {};
  q.latent = ref.latent.shape();
  q.task = models::task_name(ref.task);
  q.layout = ref.summary.value("layout", "");
  const double ref_seconds = ref.summary.at("seconds").value("denoise", 0.0);
  q.sample_names.push_back(o.prompt + " (seed " + std::to_string(seed) + ")");
  q.reference.push_back({{"prompt_index", p},
                         {"seed", seed},
                         {"prompt_tokens", ref.summary.value("prompt_tokens", 0)},
                         {"denoise_seconds", ref_seconds}});
  char line[256];
  std::snprintf(line, sizeof line, "dense reference (redundancy recorded), denoise %.2f s",
                ref_seconds);
  status(line);

  for (size_t vi = 0; vi < variants.size(); ++vi) {
    o.fis = variants[vi].fis;
    o.precision = variants[vi].precision;
    Generator& g = generator_for(o.precision);
    // The dense row repeats the reference's sampling; a latent equal to the reference's bit for
    // bit decodes to the reference's video (the decode is deterministic), so it is only decoded
    // again when it differs.
    const bool dense = !o.fis.enabled() && o.precision == options.base.precision;
    o.decode = !dense;
    const GenerateResult r = g.run(o);
    o.decode = true;
    const bool identical = r.latent.shape() == ref.latent.shape() &&
                           std::memcmp(r.latent.raw(), ref.latent.raw(), r.latent.nbytes()) == 0;
    const Tensor video = r.video.defined() ? r.video : identical ? ref.video : g.decode(r.latent);
    const double rel = rel_l2(r.latent, ref.latent);
    const double ps = analysis::psnr(video, ref.video);
    const double ss = analysis::ssim(video, ref.video);
    const std::vector<double> fm = analysis::frame_mse(video, ref.video);
    const double seconds = r.summary.at("seconds").value("denoise", 0.0);
    Collected& c = q.collected[vi];
    c.rel_l2.push_back(rel);
    c.psnr.push_back(ps);
    c.ssim.push_back(ss);
    c.seconds.push_back(seconds);
    c.prompt.push_back(p);
    c.seed.push_back(seed);
    c.frame_mse_sum.resize(fm.size());
    for (size_t f = 0; f < fm.size(); ++f) c.frame_mse_sum[f] += fm[f];
    q.runs.push_back({{"prompt_index", p},
                      {"seed", seed},
                      {"variant", variants[vi].name},
                      {"latent_identical", identical},
                      {"latent_rel_l2", rel},
                      {"psnr_db", number(ps)},
                      {"ssim", number(ss)},
                      {"denoise_seconds", seconds}});
    std::snprintf(line, sizeof line,
                  "%s: latent rel. L2 %.4g, PSNR %.2f dB, SSIM %.4f, denoise %.2f s",
                  variants[vi].name.c_str(), rel, ps, ss, seconds);
    status(line);
  }
}

// A variant's row: its fidelity over every run, its FLOPs and its denoise time.
nlohmann::json variant_row(const QualityVariant& v, const Collected& c,
                           const models::ModelInfo& info, const GenerateOptions& base, int passes,
                           double dense_seconds) {
  const models::RunFlops flops =
      models::run_flops(info, base.width, base.height, base.frames, base.steps, v.fis, passes);
  const size_t worst =
      static_cast<size_t>(std::min_element(c.psnr.begin(), c.psnr.end()) - c.psnr.begin());
  nlohmann::json frame_psnr = nlohmann::json::array();
  for (double sum : c.frame_mse_sum) {
    const double mse = sum / static_cast<double>(c.psnr.size());
    frame_psnr.push_back(
        number(mse == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(1.0 / mse)));
  }
  const double seconds = median(c.seconds);
  return {
      {"name", v.name},
      {"fis", v.fis.to_json()},
      {"fis_description", v.fis.describe()},
      {"ablation", v.ablation},
      {"precision", v.precision},
      {"runs", c.psnr.size()},
      {"latent_rel_l2",
       {{"mean", mean(c.rel_l2)}, {"max", *std::max_element(c.rel_l2.begin(), c.rel_l2.end())}}},
      {"psnr_db",
       {{"mean", number(mean(c.psnr))},
        {"min", number(c.psnr[worst])},
        {"min_prompt_index", c.prompt[worst]},
        {"min_seed", c.seed[worst]}}},
      {"ssim", {{"mean", mean(c.ssim)}, {"min", *std::min_element(c.ssim.begin(), c.ssim.end())}}},
      {"flops",
       {{"dense", flops.dense},
        {"planned", flops.planned},
        {"ratio", flops.dense > 0 ? flops.planned / flops.dense : 1.0}}},
      {"denoise_seconds", {{"median", seconds}, {"mean", mean(c.seconds)}}},
      {"speedup_vs_dense", number(dense_seconds / seconds)},
      {"frame_psnr_db", frame_psnr}};
}

}  // namespace

QualityReport run_quality(const QualityOptions& options) {
  const GenerateOptions& base = options.base;
  // ---- check: everything but the weights
  Generator generator(base, /*keep_loaded=*/true);
  const std::vector<QualityVariant> variants = check_quality(options, generator);
  const models::ModelInfo& info = generator.model_info();

  // ---- run: per prompt and seed, the reference and every variant
  QualityRuns q(base.steps, info.num_blocks, variants.size());
  const size_t samples = options.prompts.size() * options.seeds.size();
  const int total = static_cast<int>(samples * (1 + variants.size()));
  int done = 0;
  // Variants in another precision: a generator per precision, its DiT quantized as it loads;
  // made on first use.
  std::map<std::string, std::unique_ptr<Generator>> others;
  const std::function<Generator&(const std::string&)> generator_for =
      [&](const std::string& precision) -> Generator& {
    if (precision == base.precision) return generator;
    std::unique_ptr<Generator>& g = others[precision];
    if (!g) {
      GenerateOptions o = base;
      o.precision = precision;
      g = std::make_unique<Generator>(o, /*keep_loaded=*/true);
    }
    return *g;
  };
  for (size_t p = 0; p < options.prompts.size(); ++p)
    for (const uint64_t seed : options.seeds)
      run_sample(generator, generator_for, options, variants, p, seed, q,
                 [&](const std::string& what) {
                   if (!options.progress) return;
                   std::fprintf(stderr, "[%d/%d] prompt %zu/%zu, seed %llu: %s\n", ++done, total,
                                p + 1, options.prompts.size(),
                                static_cast<unsigned long long>(seed), what.c_str());
                   std::fflush(stderr);
                 });

  // ---- per variant
  const int passes = base.guidance != 1.0f || base.guidance_high.value_or(base.guidance) != 1.0f ||
                             base.guidance_low.value_or(base.guidance) != 1.0f
                         ? 2
                         : 1;
  double dense_seconds = std::numeric_limits<double>::quiet_NaN();
  for (size_t vi = 0; vi < variants.size(); ++vi)
    if (variants[vi].name == "dense") dense_seconds = median(q.collected[vi].seconds);
  nlohmann::json per_variant = nlohmann::json::array();
  for (size_t vi = 0; vi < variants.size(); ++vi)
    per_variant.push_back(
        variant_row(variants[vi], q.collected[vi], info, base, passes, dense_seconds));

  // ---- the report
  QualityReport report;
  sched::DenoiseOptions denoise;
  denoise.steps = base.steps;
  denoise.shift = base.shift;
  denoise.solver = base.solver;
  const models::ReleaseInfo& release = generator.release();
  report.analysis = q.recorder.to_json(info, q.latent, denoise, q.sample_names,
                                       {{"model", release.part("dit")},
                                        {"model_low", release.part("dit_low")},
                                        {"device", base.device},
                                        {"producer", "fisdit quality: the dense reference runs"}});
  report.analysis["fis"] = nlohmann::json::array();

  const auto& patch = info.patch;
  const Shape& latent = q.latent;
  const int64_t grid_f = latent.size() == 4 ? latent[1] / patch[0] : 0;
  const int64_t tokens =
      latent.size() == 4 ? grid_f * (latent[2] / patch[1]) * (latent[3] / patch[2]) : 0;
  nlohmann::json& j = report.quality;
  j["format"] = "fisdit-quality";
  j["version"] = 1;
  j["date"] = utc_now();
  j["command"] = options.command;
  j["model"] = {{"path", base.model},
                {"name", options.model_name},
                {"task", q.task},
                {"layout", q.layout},
                {"dit", release.part("dit")},
                {"two_experts", generator.two_experts()},
                {"num_blocks", info.num_blocks},
                {"dim", info.dim}};
  j["settings"] = {{"width", base.width},
                   {"height", base.height},
                   {"frames", base.frames},
                   {"latent", latent},
                   {"latent_frames", grid_f},
                   {"dit_tokens", tokens},
                   {"steps", base.steps},
                   {"shift", base.shift},
                   {"solver", sched::solver_name(base.solver)},
                   {"guidance", base.guidance},
                   {"negative", base.negative},
                   {"device", base.device},
                   {"threads", omp_get_max_threads()},
                   {"seeds", options.seeds},
                   {"prompts", options.prompts}};
  j["reference"] = {{"fis", "off"},
                    {"note",
                     "dense run of every prompt and seed; its redundancy (CV of R_f) is "
                     "recorded, so its denoise time includes the recording"},
                    {"runs", q.reference}};
  j["variants"] = per_variant;
  j["runs"] = q.runs;
  j["cv"] = report.analysis["cv"];
  return report;
}

}  // namespace fisdit::pipeline
