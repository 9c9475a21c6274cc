#pragma once
// `fisdit quality`: the fidelity of FIS settings and their ablations (the paper's Tables 2-3)
// against the dense run on a fixed set of prompts and seeds, with one loaded model. For every
// prompt x seed the dense reference runs once (its redundancy recorded: the CV heat map), then
// every variant from the same noise; each is compared with the reference: latent rel. L2, PSNR and
// SSIM of the decoded frames, the DiT's analytic FLOPs and the measured denoise time.
// Report layout: docs/QUALITY.md.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "accel/fis.h"
#include "pipeline/generate.h"

namespace fisdit::pipeline {

struct QualityVariant {
  std::string name;  // as --variants spells it
  accel::FisConfig fis;
  std::string ablation;  // what it takes away from its preset ("" for dense and the presets)
  std::string precision = "bf16";  // "fp8" / "fp8-gemm" (GenerateOptions::precision)
};

// dense, and balanced / fast, each alone or with one of the suffixes -no-interleave (o_l = 0),
// -no-block-protection (head = tail = 0), -no-step-protection (dense_last_steps = 0) and
// -no-protection (all three zero). Each of them, and a preset file, also with the prefix fp8- or
// fp8-gemm- (--precision fp8 / fp8-gemm; "fp8" or "fp8-gemm" alone is dense in that precision):
// compared with the same bf16 dense reference.
std::vector<std::string> quality_variant_names();
// dense, balanced, fast, balanced-no-interleave, fast-no-interleave,
// balanced-no-block-protection, balanced-no-step-protection, balanced-no-protection.
std::vector<std::string> default_quality_variants();
// A name above, or the path of a FIS preset JSON file (`fisdit calibrate --output`, or as
// FisConfig::to_json writes it; the variant is named by the path). Throws fisdit::Error naming
// --variants and listing the valid names, or naming the file when it is not a valid preset.
QualityVariant quality_variant(const std::string& name);

struct QualityOptions {
  // The model and the request every run shares (size, frames, sampling, negative prompt, device).
  // Its prompt, seed, fis, cache, progress and on_forward are set per run.
  GenerateOptions base;
  std::vector<std::string> prompts;
  std::vector<uint64_t> seeds{0};
  std::vector<std::string> variants = default_quality_variants();
  std::string model_name;  // for the report's title (fisdit.json's "name"); optional
  std::string command;     // the command line that reproduces the report
  bool progress = true;    // one status line per run on stderr
};

struct QualityReport {
  nlohmann::json quality;   // quality.json (docs/QUALITY.md)
  nlohmann::json analysis;  // analysis.json: the dense runs' redundancy (docs/ANALYSIS.md, no fis)
};

// Loads the model once and runs prompts x seeds x (reference + variants). "dense" as a variant is
// a second dense sampling, timed without the redundancy recording and compared with the
// reference: its latent must equal the reference's bit for bit, and is then not decoded again
// (the reference's video stands for it); a latent that differs is decoded. Throws fisdit::Error for
// an empty prompt list, an unknown variant or a request the model does not take (the flag named).
QualityReport run_quality(const QualityOptions& options);

// quality.md: settings, the reproducing command, one row per variant, PSNR per prompt, the CV of
// the dense runs; `figures` names the PNG files written beside it (linked when present).
std::string quality_markdown(const QualityReport& report, const std::vector<std::string>& figures);

// cv_heatmap.png, rel_change.png and frame_psnr.png (per-frame PSNR of each variant) in `dir`;
// returns their paths. Throws when this build has no figures (analysis::figures_available()).
std::vector<std::string> write_quality_figures(const QualityReport& report, const std::string& dir);

}  // namespace fisdit::pipeline
