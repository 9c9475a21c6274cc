#pragma once
// The last stage of `fisdit generate`: writing what a run made (MP4, PNG frames, the final
// latent, the JSON summary), and the one-line reports of a run's times and memory.
#include <optional>
#include <string>
#include <vector>

#include "pipeline/generate.h"

namespace fisdit::pipeline {

struct OutputOptions {
  std::string output;         // H.264 MP4 file, or "" for none
  std::string frames_dir;     // PNG frames frame_0000.png ..., or ""
  std::string save_latent;    // safetensors with the final latent 'x', or ""
  std::string summary_json;   // the run's summary, or ""
  std::optional<double> fps;  // of the MP4; default: the release's (Wan 16, TI2V-5B 24)
  int crf = 18;               // H.264 quality, 0-51 (lower is better)
};

// Before any run: something to write, a directory for the MP4, crf and fps in range. Throws
// ParamError naming the parameter (output, crf, fps).
void check_outputs(const OutputOptions& out);

// Stage write: every output given, recorded in result.summary ("output", "frames_dir",
// "seconds.write"); returns a status line per file written. The summary JSON is written last,
// so it holds the write time.
std::vector<std::string> write_outputs(GenerateResult& result, const OutputOptions& out);

// "times: text 1.45 s, image encode ..., dit load ..., denoise ..., decode ..., write ...,
// total ... s": every stage the run had, in order; the total includes writing.
std::string times_line(const nlohmann::json& summary);
// "GPU memory peak per stage: text 0.3 GiB, ..."; "" when the backend tracks no memory.
std::string peaks_line(const nlohmann::json& summary);

// --compare-dense: the same request dense (FIS and cache off, same seed) on `generator`, and
// the accelerated result's fidelity to it (latent rel. L2, PSNR, SSIM, denoise times, MagCache's
// skipped passes), stored in accelerated.summary["fidelity_vs_dense"]; returns its status line.
// Throws ParamError (compare_dense) when the request is already dense (check_compare_with_dense).
void check_compare_with_dense(const GenerateOptions& request);
std::string compare_with_dense(Generator& generator, const GenerateOptions& request,
                               GenerateResult& accelerated);

}  // namespace fisdit::pipeline
