// fisdit bench --vae wan2.1|wan2.2|hunyuan15 [--vae-op encode]: VAE decode of a random latent of
// the real size (or encode of a random video) with random weights of the released VAE's shapes
// (made on the device): ms per latent frame and peak memory.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "bench_util.h"
#include "cli.h"
#include "fisdit/error.h"
#include "models/hunyuan15/vae.h"
#include "models/wan/vae.h"

namespace fisdit::cli {

namespace {

wan::VaeConfig vae_config(const VaeBenchOptions& o) {
  wan::VaeConfig cfg;  // Wan2.1_VAE.pth: dim 96, z 16, dim_mult 1,2,4,4, 2 res blocks
  if (o.vae == "wan2.2") {
    cfg.version = 22;  // Wan2.2_VAE.pth: dim 160, decoder 256, z 48
    cfg.dim = 160;
    cfg.dec_dim = 256;
    cfg.z_dim = 48;
  } else if (o.vae != "wan2.1") {
    throw Error("--vae must be wan2.1, wan2.2 or hunyuan15, got '" + o.vae + "'");
  }
  const int64_t s = cfg.spatial_stride();
  if (o.width % s || o.height % s || o.frames < 1 || (o.frames - 1) % 4)
    throw Error("--size must be a multiple of " + std::to_string(s) +
                " and --frames 4k+1 for the " + o.vae + " VAE");
  return cfg;
}

// Random weights of the real shapes, made on the device: norms' gammas near 1, vectors small,
// matrices scaled by 1/sqrt(fan-in).
wan::VaeWeightFn random_weights(Backend& backend) {
  return [&backend](const std::string& key, const Shape& shape) -> Tensor {
    const uint64_t seed = std::hash<std::string>{}(key);
    if (key.size() > 5 && key.compare(key.size() - 5, 5, "gamma") == 0)
      return backend.random_normal(shape, DType::F32, 1.0f, 0.1f, seed);
    if (shape.size() == 1) return backend.random_normal(shape, DType::F32, 0.0f, 0.1f, seed);
    const double fan_in = static_cast<double>(shape_numel(shape) / shape[0]);
    return backend.random_normal(shape, DType::F32, 0.0f,
                                 static_cast<float>(1.0 / std::sqrt(fan_in)), seed);
  };
}

// Uniform random values (decode: unit variance; encode: in [-1, 1]); they do not change the time.
Tensor random_input(const Shape& shape, bool encode) {
  Tensor input = Tensor::zeros(shape);
  uint64_t r = 12345;
  const float spread = encode ? 2.0f : 3.4641f;
  for (int64_t i = 0; i < input.numel(); ++i) {
    r = r * 6364136223846793005ULL + 1442695040888963407ULL;
    input.f32()[i] = (static_cast<float>(r >> 40) / 16777216.0f - 0.5f) * spread;
  }
  return input;
}

// The first `frames` frames of a [C, T, H, W] tensor.
Tensor leading_frames(const Tensor& input, int64_t frames) {
  const Shape& s = input.shape();
  Tensor out = Tensor::zeros({s[0], frames, s[2], s[3]});
  const int64_t plane = s[2] * s[3];
  for (int64_t c = 0; c < s[0]; ++c)
    std::copy(input.f32() + c * s[1] * plane, input.f32() + (c * s[1] + frames) * plane,
              out.f32() + c * frames * plane);
  return out;
}

using VaeRun = std::function<Tensor(const Tensor&, const wan::VaeProgressFn&)>;

// Per timed run: the total, the first chunk and the mean of the later chunks, in ms; and the
// FLOPs of one run (the backend's counter: convolutions, attention and matrix products).
struct VaeTimes {
  std::vector<double> totals, firsts, rests;
  double flops = 0;
};

VaeTimes time_vae_runs(Backend& backend, const VaeRun& run, const Tensor& input, int repeats) {
  VaeTimes times;
  char line[256];
  const double flops_before = backend.flops().total();
  for (int i = 0; i < repeats; ++i) {
    std::vector<double> chunk_ms;
    auto t = std::chrono::steady_clock::now();
    const auto t0 = t;
    run(input, [&](int k, int n, int64_t in_frames, int64_t out_frames) {
      const auto now = std::chrono::steady_clock::now();
      chunk_ms.push_back(std::chrono::duration<double, std::milli>(now - t).count());
      t = now;
      std::snprintf(line, sizeof line, "  chunk %d/%d: %lld -> %lld frame(s): %.1f ms", k + 1, n,
                    static_cast<long long>(in_frames), static_cast<long long>(out_frames),
                    chunk_ms.back());
      status(line);
    });
    times.totals.push_back(since_ms(t0));
    times.firsts.push_back(chunk_ms.front());
    if (chunk_ms.size() > 1) {
      double sum = 0;
      for (size_t k = 1; k < chunk_ms.size(); ++k) sum += chunk_ms[k];
      times.rests.push_back(sum / static_cast<double>(chunk_ms.size() - 1));
    }
  }
  if (repeats > 0) times.flops = (backend.flops().total() - flops_before) / repeats;
  return times;
}

void print_vae_result(const VaeBenchOptions& o, const std::string& label, const Shape& latent,
                      const Backend& backend, const VaeTimes& times, const Memory& mem,
                      const Memory& weights_mem) {
  const std::string op = o.encode ? "encode" : "decode";
  const int64_t lat_f = latent[1];
  const double total = median(times.totals);
  const char* tf32 = std::getenv("FISDIT_VAE_TF32");
  const char* precision = backend.device() == Device::CPU        ? "fp32"
                          : backend.video_dtype() == DType::BF16 ? "bf16, fp32 accumulation"
                          : tf32 && std::string(tf32) == "0"     ? "fp32 tensors, fp32 convs"
                                                                 : "fp32 tensors, TF32 convs";
  std::printf(
      "\nfisdit bench --vae: %s, %s, latent %s <-> %dx%d, %d frames, random weights, device "
      "%s (%s), warmup %d, repeats %d (median)\n",
      label.c_str(), op.c_str(), shape_str(latent).c_str(), o.width, o.height, o.frames,
      backend.name().c_str(), precision, o.warmup, o.repeats);
  std::printf("%12s %14s %16s %16s %9s %12s %8s %8s\n", (op + " ms").c_str(), "ms/lat.frame",
              "first chunk ms", "later chunk ms", "peak GiB", "weights GiB", "TFLOP", "TFLOP/s");
  const std::string peak = gib_text(mem.known, mem.peak_gib);
  const std::string weights = gib_text(mem.known, weights_mem.in_use_gib);
  std::printf("%12.1f %14.1f %16.1f %16.1f %9s %12s %8.2f %8.1f\n", total, total / lat_f,
              median(times.firsts), times.rests.empty() ? 0.0 : median(times.rests), peak.c_str(),
              weights.c_str(), times.flops / 1e12, total > 0 ? times.flops / 1e9 / total : 0.0);
  std::printf("RESULT|%s|%dx%d|%d|vae-%s|%.1f|%.1f|%s\n", label.c_str(), o.width, o.height,
              o.frames, op.c_str(), total, total / lat_f, peak.c_str());
  std::fflush(stdout);
}

}  // namespace

// HunyuanVideo 1.5's VAE (the released 32-channel shapes): one whole encode or decode per run
// (it has no time chunks); decode in the pipeline's 256-pixel tiles (overlap 0.125) unless
// FISDIT_HY15_VAE_TILING=0.
void run_hunyuan_vae_bench(const VaeBenchOptions& o) {
  const hunyuan15::VaeConfig cfg;
  const int s = cfg.ffactor_spatial;
  if (o.width % s || o.height % s || o.frames < 1 || (o.frames - 1) % cfg.ffactor_temporal)
    throw Error("--size must be a multiple of 16 and --frames 4k+1 for the hunyuan15 VAE");
  auto backend = o.device.backend();
  const wan::VaeWeightFn weights = random_weights(*backend);
  hunyuan15::HunyuanVae vae(cfg, weights, *backend);
  backend->synchronize();
  const Memory weights_mem = memory(*backend);
  const Shape latent{cfg.latent_channels, 1 + (o.frames - 1) / cfg.ffactor_temporal, o.height / s,
                     o.width / s};
  const Tensor input =
      random_input(o.encode ? Shape{3, o.frames, o.height, o.width} : latent, o.encode);
  const char* env = std::getenv("FISDIT_HY15_VAE_TILING");
  const hunyuan15::VaeTiling tiling{!(env && std::string(env) == "0"), 256, 0.125};
  const std::string op = o.encode ? "encode" : "decode";
  const std::string label =
      o.label.value_or("hunyuan15-vae-" + op + (o.encode || !tiling.enabled ? "" : "-tiled"));
  status("bench " + label + ": " + op + " " + shape_str(input.shape()) + " on " + backend->name());
  const VaeRun run = [&](const Tensor& x, const wan::VaeProgressFn& progress) {
    Tensor out = o.encode ? vae.encode(x) : vae.decode(x, tiling);
    if (progress) progress(0, 1, x.dim(1), out.dim(1));
    return out;
  };
  char line[256];
  for (int i = 0; i < o.warmup; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run(input, {});
    std::snprintf(line, sizeof line, "  warmup %s %.1f s (the first picks the conv algorithms)",
                  op.c_str(), seconds_since(t0));
    status(line);
  }
  backend->reset_memory_peak();
  const VaeTimes times = time_vae_runs(*backend, run, input, o.repeats);
  print_vae_result(o, label, latent, *backend, times, memory(*backend), weights_mem);
}

void run_vae_bench(const VaeBenchOptions& o) {
  if (o.vae == "hunyuan15") return run_hunyuan_vae_bench(o);
  const wan::VaeConfig cfg = vae_config(o);
  const int64_t s = cfg.spatial_stride();
  auto backend = o.device.backend();
  wan::WanVae vae(cfg, random_weights(*backend), backend.get());
  backend->synchronize();
  const Memory weights_mem = memory(*backend);
  const Shape latent{cfg.z_dim, 1 + (o.frames - 1) / 4, o.height / s, o.width / s};
  // The input: a latent [z, F', h, w] (decode) or a video [3, T, H, W] (encode).
  const Shape in_shape = o.encode ? Shape{3, o.frames, o.height, o.width} : latent;
  const Tensor input = random_input(in_shape, o.encode);
  const VaeRun run = [&](const Tensor& x, const wan::VaeProgressFn& progress) {
    return o.encode ? vae.encode(x, nullptr, progress) : vae.decode(x, nullptr, progress);
  };
  const std::string op = o.encode ? "encode" : "decode";
  const std::string label = o.label.value_or(o.vae + "-vae-" + op);
  char line[512];
  const std::string chunking = o.encode
                                   ? ""
                                   : ", " + std::to_string(vae.decode_chunk(latent[2], latent[3])) +
                                         " latent frame(s) per chunk after the first";
  std::snprintf(line, sizeof line, "bench %s: %s %s %s on %s%s", label.c_str(), op.c_str(),
                o.encode ? "video" : "latent", shape_str(input.shape()).c_str(),
                backend->name().c_str(), chunking.c_str());
  status(line);
  // Warm-up (it picks every conv shape's cuDNN algorithm): encode on its first two chunks (video
  // frames 0-4; every later chunk has the second's shapes); decode on the whole latent, whose
  // 1x1x1 conv2 runs over all frames at once and whose last chunk may be shorter than the others.
  const int64_t warm_frames = o.encode ? std::min<int64_t>(5, in_shape[1]) : in_shape[1];
  const Tensor warm = leading_frames(input, warm_frames);
  for (int i = 0; i < o.warmup; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run(warm, {});
    std::snprintf(line, sizeof line,
                  "  warmup %s of %lld frame(s) %.1f s (the first picks the conv algorithms)",
                  op.c_str(), static_cast<long long>(warm_frames), seconds_since(t0));
    status(line);
  }
  backend->reset_memory_peak();
  take_op_profile();  // FISDIT_CUDA_PROFILE: count the timed runs only
  const VaeTimes times = time_vae_runs(*backend, run, input, o.repeats);
  const Memory mem = memory(*backend);
  if (const std::string profile = take_op_profile(); !profile.empty())
    std::fprintf(stderr, "%s", profile.c_str());
  print_vae_result(o, label, latent, *backend, times, mem, weights_mem);
}

}  // namespace fisdit::cli
