#include "pipeline/output.h"

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "analysis/metrics.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "media/video.h"

namespace fisdit::pipeline {

void check_outputs(const OutputOptions& out) {
  if (out.output.empty() && out.frames_dir.empty() && out.save_latent.empty())
    throw ParamError("output",
                     ": nothing to write: give an MP4 file (output) and/or a directory for PNG "
                     "frames (frames_dir)");
  if (!out.output.empty()) {
    const std::filesystem::path parent = std::filesystem::path(out.output).parent_path();
    std::error_code ec;
    if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
      throw ParamError("output",
                       " " + out.output + ": directory " + parent.string() + " does not exist");
  }
  if (out.crf < 0 || out.crf > 51)
    throw ParamError("crf", " " + std::to_string(out.crf) + ": must be in 0..51");
  if (out.fps && !(*out.fps > 0 && *out.fps <= 240))
    throw ParamError("fps", ": must be in (0, 240]");
}

namespace {
// The encoder settings of --output (the CRF of --crf, the rest write_mp4's defaults).
Mp4Options mp4_options(const OutputOptions& out) {
  Mp4Options o;
  o.crf = out.crf;
  return o;
}
}  // namespace

struct StreamedMp4::Impl {
  struct Chunk {
    Tensor video;
    int64_t first = 0, count = 0;
  };
  OutputOptions out;
  double fps = 16;
  std::unique_ptr<Mp4Writer> writer;
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Chunk> queue;
  bool done = false;  // no more chunks (finish, or the run failed)
  std::exception_ptr error;
  std::thread thread;

  void run() {
    for (;;) {
      Chunk c;
      {
        std::unique_lock<std::mutex> lock(mutex);
        ready.wait(lock, [&] { return done || !queue.empty(); });
        if (queue.empty()) return;
        c = std::move(queue.front());
        queue.pop_front();
      }
      if (error) continue;  // drain: the first error is the one reported
      try {
        if (!writer)
          writer =
              std::make_unique<Mp4Writer>(out.output, static_cast<int>(c.video.dim(3)),
                                          static_cast<int>(c.video.dim(2)), fps, mp4_options(out));
        writer->write(c.video, c.first, c.count);
      } catch (...) {
        error = std::current_exception();
      }
    }
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
    }
    ready.notify_one();
    if (thread.joinable()) thread.join();
  }
};

StreamedMp4::StreamedMp4(const OutputOptions& out, double fps) : impl_(std::make_unique<Impl>()) {
  impl_->out = out;
  impl_->fps = fps;
  impl_->thread = std::thread([this] { impl_->run(); });
}

StreamedMp4::~StreamedMp4() { impl_->stop(); }  // an unclosed writer removes its file

models::Release::FrameSink StreamedMp4::sink() {
  return [this](const Tensor& video, int64_t first, int64_t count) {
    {
      std::lock_guard<std::mutex> lock(impl_->mutex);
      impl_->queue.push_back({video, first, count});
    }
    impl_->ready.notify_one();
  };
}

Mp4Result StreamedMp4::finish() {
  impl_->stop();
  if (impl_->error) std::rethrow_exception(impl_->error);
  if (!impl_->writer) throw Error(impl_->out.output + ": the run decoded no frame to write");
  return impl_->writer->close();
}

std::vector<std::string> write_outputs(GenerateResult& r, const OutputOptions& out,
                                       StreamedMp4* streamed) {
  std::vector<std::string> lines;
  nlohmann::json& summary = r.summary;
  const auto t0 = std::chrono::steady_clock::now();
  if (!out.output.empty()) {
    const double fps = out.fps.value_or(r.fps);
    const Mp4Result m =
        streamed ? streamed->finish() : write_mp4(out.output, r.video, fps, mp4_options(out));
    if (!m.warning.empty()) lines.push_back("warning: " + m.warning);
    summary["output"] = {{"mp4", out.output}, {"encoder", m.encoder}, {"fps", fps}};
    char line[512];
    std::snprintf(line, sizeof line, "wrote %s: %lld frames %dx%d at %.3g fps (%s)",
                  out.output.c_str(), static_cast<long long>(m.frames), m.width, m.height, fps,
                  m.encoder.c_str());
    lines.push_back(line);
  }
  if (!out.save_latent.empty()) {
    write_safetensors(out.save_latent, {{"x", r.latent}}, {{"producer", "fisdit generate"}});
    lines.push_back("wrote " + out.save_latent + " ('x' " + shape_str(r.latent.shape()) + ")");
  }
  if (!out.frames_dir.empty()) {
    const auto files = write_png_frames(out.frames_dir, r.video);
    summary["frames_dir"] = out.frames_dir;
    lines.push_back("wrote " + std::to_string(files.size()) + " PNG frames to " + out.frames_dir);
  }
  summary["seconds"]["write"] =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!out.summary_json.empty()) {
    std::ofstream f(out.summary_json);
    f << summary.dump(2) << "\n";
    if (!f) throw ParamError("summary_json", " " + out.summary_json + ": cannot write");
    lines.push_back("wrote " + out.summary_json);
  }
  return lines;
}

std::string times_line(const nlohmann::json& summary) {
  const nlohmann::json& s = summary.at("seconds");
  std::string line = "times:";
  const auto item = [&](const char* name, double seconds) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s %s %.2f s", line.size() > 6 ? "," : "", name, seconds);
    line += buf;
  };
  item("text", s.value("text_load", 0.0) + s.value("text_encode", 0.0));
  if (s.contains("image_encode")) item("image encode", s.value("image_encode", 0.0));
  item("dit load", s.value("dit_load", 0.0));
  if (const double ahead = s.value("dit_load_overlapped", 0.0); ahead > 0) {
    char buf[64];  // the expert's host side that ran beside the text and image stages
    std::snprintf(buf, sizeof buf, " (+%.2f s in the background)", ahead);
    line += buf;
  }
  item("denoise", s.value("denoise", 0.0));
  if (s.contains("vae_decode")) item("decode", s.value("vae_decode", 0.0));
  if (s.contains("write")) item("write", s.value("write", 0.0));
  item("total", s.value("total", 0.0) + s.value("write", 0.0));
  return line;
}

std::string making_time(const nlohmann::json& summary) {
  const nlohmann::json& s = summary.at("seconds");
  const bool image = s.contains("image_encode");
  char buf[96];
  std::snprintf(buf, sizeof buf, "text + %sdenoise + decode %.2f s", image ? "image + " : "",
                s.value("text_encode", 0.0) + s.value("image_encode", 0.0) +
                    s.value("denoise", 0.0) + s.value("vae_decode", 0.0));
  return buf;
}

std::string peaks_line(const nlohmann::json& summary) {
  if (!summary.contains("gpu_peak_gib")) return "";
  std::string peaks;
  const nlohmann::json& g = summary["gpu_peak_gib"];
  for (const char* stage : {"text", "image_encode", "denoise", "vae_decode"}) {
    if (!g.contains(stage)) continue;
    char item[96];
    std::snprintf(item, sizeof item, "%s%s %.1f GiB", peaks.empty() ? "" : ", ", stage,
                  g[stage].get<double>());
    peaks += item;
  }
  return "GPU memory peak per stage: " + peaks;
}

void check_compare_with_dense(const GenerateOptions& request) {
  if (!request.fis.enabled() && !request.cache.enabled && request.precision == "bf16")
    throw ParamError("compare_dense",
                     ": compares an accelerated run with the dense one: give FIS balanced, fast "
                     "or a preset, the MagCache step cache and/or --precision fp8 (this run is "
                     "already dense)");
}

std::string compare_with_dense(Generator& generator, const GenerateOptions& request,
                               GenerateResult& r) {
  check_compare_with_dense(request);
  GenerateOptions dense = request;
  dense.fis = accel::fis_preset("off");
  dense.cache = accel::MagCacheConfig{};
  dense.precision = "bf16";
  dense.on_frames = {};  // the accelerated run's frames only
  // The reference runs in the default precision: another generator when this one is fp8.
  const GenerateResult d =
      request.precision == "bf16" ? generator.run(dense) : Generator(dense, false).run(dense);
  const double latent_err = rel_l2(r.latent, d.latent);
  const double p = analysis::psnr(r.video, d.video), q = analysis::ssim(r.video, d.video);
  nlohmann::json& summary = r.summary;
  std::string accel_name;
  const auto with = [&](const std::string& part) {
    accel_name += (accel_name.empty() ? "" : " + ") + part;
  };
  if (request.precision != "bf16") with(request.precision);
  if (request.fis.enabled()) with("fis " + request.fis.name);
  if (request.cache.enabled) with("magcache");
  int skipped = 0, passes = 0;
  for (const auto& st : summary["steps"]) {
    skipped += st.value("cache_skipped_passes", 0);
    passes += st.value("guidance", 1.0) != 1.0 ? 2 : 1;
  }
  summary["fidelity_vs_dense"] = {
      {"latent_rel_l2", latent_err},
      {"psnr_db", std::isinf(p) ? nlohmann::json("inf") : nlohmann::json(p)},
      {"ssim", q},
      {"dense_seconds", d.summary.at("seconds")},
      {"accelerated", accel_name},
      {"cache_skipped_passes", skipped},
      {"passes", passes}};
  char line[384];
  std::snprintf(line, sizeof line,
                "fidelity vs dense: latent rel. L2 %.4g, PSNR %.2f dB, SSIM %.4f; denoise %.2f s "
                "with %s vs %.2f s dense%s",
                latent_err, p, q, summary["seconds"].value("denoise", 0.0), accel_name.c_str(),
                d.summary.at("seconds").value("denoise", 0.0),
                request.cache.enabled ? ("; MagCache skipped " + std::to_string(skipped) + " of " +
                                         std::to_string(passes) + " DiT passes")
                                            .c_str()
                                      : "");
  return line;
}

}  // namespace fisdit::pipeline
