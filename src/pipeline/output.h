#pragma once
// The last stage of `fisdit generate`: writing what a run made (MP4, PNG frames, the final
// latent, the JSON summary), and the one-line reports of a run's times and memory.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "media/video.h"
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

// The MP4 written while the run decodes: sink() goes into GenerateOptions::on_frames, and a
// thread of its own encodes each chunk of frames as the VAE makes it final, so the encoding
// overlaps the decode of the next chunk. finish() waits for the last frames and closes the file,
// or rethrows the encoder's error. Destroyed unfinished (the run failed), it stops the thread
// and removes the partial file.
class StreamedMp4 {
 public:
  StreamedMp4(const OutputOptions& out, double fps);
  ~StreamedMp4();
  StreamedMp4(const StreamedMp4&) = delete;
  StreamedMp4& operator=(const StreamedMp4&) = delete;
  models::Release::FrameSink sink();
  Mp4Result finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Stage write: every output given, recorded in result.summary ("output", "frames_dir",
// "seconds.write"); returns a status line per file written. The summary JSON is written last,
// so it holds the write time. `streamed` (optional): the MP4 was written during the decode; it
// is finished here (its remaining time counted as writing) instead of encoded again.
std::vector<std::string> write_outputs(GenerateResult& result, const OutputOptions& out,
                                       StreamedMp4* streamed = nullptr);

// "times: text 1.45 s, image encode ..., dit load ... (+... s in the background), denoise ...,
// decode ..., write ..., total ... s": every stage the run had, in order (the part of the DiT load
// that ran beside the text and image stages in parentheses); the total includes writing.
std::string times_line(const nlohmann::json& summary);
// "text + denoise + decode X.XX s" of a summary (with "image + " when the run has one): the
// stages that make the video, without loading or writing.
std::string making_time(const nlohmann::json& summary);
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
