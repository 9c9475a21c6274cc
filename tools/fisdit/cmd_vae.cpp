// fisdit vae encode|decode: the Wan 2.1 / 2.2 or HunyuanVideo 1.5 VAE on the CPU or the GPU
// (--vae-precision), tensors from safetensors.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "backend/backend.h"
#include "cli.h"
#include "fisdit/error.h"
#include "models/hunyuan15/vae.h"
#include "models/wan/vae.h"

namespace fisdit::cli {

namespace {
// A [1, C, F, H, W] tensor as [C, F, H, W]; anything else but [C, F, H, W] is refused.
Tensor drop_batch(const Tensor& t, const std::string& file, const std::string& name,
                  const std::string& expected) {
  if (t.ndim() == 5 && t.dim(0) == 1) return t.reshape({t.dim(1), t.dim(2), t.dim(3), t.dim(4)});
  if (t.ndim() == 4) return t;
  throw Error(file + ": '" + name + "' must be " + expected +
              " (or with a leading batch of 1), got " + shape_str(t.shape()));
}

// Latent statistics for --normalize: 'scale_mean' / 'scale_std' of the inputs file when it has
// them (the fixtures), else those of the VAE (its metadata, or Wan2_1_VAE's constants).
wan::LatentStats normalize_stats(const SafetensorsFile& in, const wan::VaeSource& src) {
  const Tensor mean = read_input(in, "scale_mean", false), std = read_input(in, "scale_std", false);
  if (mean.defined() != std.defined())
    throw Error(in.path() + ": 'scale_mean' and 'scale_std' must be given together");
  if (mean.defined()) {
    if (mean.numel() != src.config.z_dim || std.numel() != src.config.z_dim)
      throw Error(in.path() + ": 'scale_mean'/'scale_std' need " +
                  std::to_string(src.config.z_dim) + " values each");
    return {mean.to_vector(), std.to_vector()};
  }
  if (!src.stats.defined())
    throw Error("--normalize: no latent mean/std for a " + std::to_string(src.config.z_dim) +
                "-channel VAE (give 'scale_mean' and 'scale_std' in --inputs)");
  return src.stats;
}
struct VaeArgs {
  std::string mode, vae, inputs, output;
  DeviceFlags device;
  bool normalize = false, clamp = false, no_tiling = false;
};

// The encoder or decoder on `x`, with a status line per chunk; --normalize and --clamp applied.
Tensor run_vae_op(const VaeArgs& a, wan::WanVae& vae, const Tensor& x,
                  const wan::LatentStats& stats) {
  const bool encode = a.mode == "encode";
  auto chunk_start = std::chrono::steady_clock::now();
  const wan::VaeProgressFn progress = [&](int i, int n, int64_t fin, int64_t fout) {
    char line[256];
    std::snprintf(line, sizeof line, "%s chunk %d/%d: %lld frame(s) -> %lld  %.3f s",
                  a.mode.c_str(), i + 1, n, static_cast<long long>(fin),
                  static_cast<long long>(fout), seconds_since(chunk_start));
    status(line);
    chunk_start = std::chrono::steady_clock::now();
  };
  if (encode) {
    Tensor z = vae.encode(x, nullptr, progress);
    if (a.normalize) wan::normalize_latent(z, stats);
    return z;
  }
  Tensor z = x.clone();
  if (a.normalize) wan::denormalize_latent(z, stats);
  Tensor video = vae.decode(z, nullptr, progress);
  if (a.clamp) {
    float* p = video.f32();
    for (int64_t i = 0; i < video.numel(); ++i) p[i] = std::clamp(p[i], -1.0f, 1.0f);
  }
  return video;
}

// HunyuanVideo 1.5's VAE: the whole clip at once; --normalize multiplies (encode) or divides
// (decode) by its scaling factor; decode in the pipeline's 256-pixel tiles unless --no-tiling.
void run_hunyuan_vae(const VaeArgs& a, const Tensor& x) {
  const bool encode = a.mode == "encode";
  auto start = std::chrono::steady_clock::now();
  const hunyuan15::VaeSource src = hunyuan15::open_vae(a.vae);
  const hunyuan15::VaeConfig& c = src.config;
  if (!encode && x.dim(0) != c.latent_channels)
    throw Error(a.inputs + ": 'z' has " + std::to_string(x.dim(0)) + " channels, the VAE expects " +
                std::to_string(c.latent_channels));
  auto backend = a.device.backend();
  hunyuan15::HunyuanVae vae(c, src.weights, *backend);
  char line[512];
  std::snprintf(line, sizeof line,
                "loaded HunyuanVideo 1.5 VAE %s (%s names): %d latent channels, widths up to %d "
                "(config from %s) on %s in %.2f s",
                a.vae.c_str(), src.diffusers ? "diffusers" : "official", c.latent_channels,
                c.block_out_channels.back(), src.config_origin.c_str(), backend->name().c_str(),
                seconds_since(start));
  status(line);
  start = std::chrono::steady_clock::now();
  const float s = static_cast<float>(c.scaling_factor);
  Tensor out;
  if (encode) {
    out = vae.encode(x);
    if (a.normalize)
      for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] *= s;
  } else {
    Tensor z = x.to_f32().clone();
    if (a.normalize)
      for (int64_t i = 0; i < z.numel(); ++i) z.f32()[i] /= s;
    out = vae.decode(z, hunyuan15::VaeTiling{!a.no_tiling, 256, 0.125});
    if (a.clamp)
      for (int64_t i = 0; i < out.numel(); ++i)
        out.f32()[i] = std::clamp(out.f32()[i], -1.0f, 1.0f);
  }
  std::snprintf(line, sizeof line, "%s done in %.3f s", a.mode.c_str(), seconds_since(start));
  status(line);
  write_tensor(a.output, encode ? "z" : "video", out);
}

void run_vae(const VaeArgs& a) {
  const bool encode = a.mode == "encode";
  if (encode && a.clamp) throw Error("--clamp only applies to 'vae decode'");
  const auto in = SafetensorsFile::open(a.inputs);
  const std::string name = encode ? "video" : "z";
  const Tensor x = drop_batch(read_input(*in, name, true), a.inputs, name,
                              encode ? "[3, T, H, W]" : "[z_dim, F, h, w]");
  if (encode && x.dim(0) != 3)
    throw Error(a.inputs + ": 'video' has " + std::to_string(x.dim(0)) +
                " channels, expected 3 (RGB)");
  if (hunyuan15::is_hunyuan_vae(a.vae)) return run_hunyuan_vae(a, x);
  if (a.no_tiling) throw Error("--no-tiling applies to the HunyuanVideo 1.5 VAE only");
  auto start = std::chrono::steady_clock::now();
  const wan::VaeSource src = wan::open_vae(a.vae);
  if (!encode && x.dim(0) != src.config.z_dim)
    throw Error(a.inputs + ": 'z' has " + std::to_string(x.dim(0)) + " channels, the VAE expects " +
                std::to_string(src.config.z_dim));
  const wan::LatentStats stats = a.normalize ? normalize_stats(*in, src) : wan::LatentStats{};
  auto backend = a.device.backend();
  auto vae = wan::load_vae(src, backend.get());
  const wan::VaeConfig& c = src.config;
  char line[512];
  std::snprintf(line, sizeof line,
                "loaded VAE %s: dim %d, z_dim %d, %d res blocks (config from %s) on %s in %.2f s",
                a.vae.c_str(), c.dim, c.z_dim, c.num_res_blocks, src.config_origin.c_str(),
                backend->name().c_str(), seconds_since(start));
  status(line);
  start = std::chrono::steady_clock::now();
  const Tensor out = run_vae_op(a, *vae, x, stats);
  std::snprintf(line, sizeof line, "%s done in %.3f s", a.mode.c_str(), seconds_since(start));
  status(line);
  write_tensor(a.output, encode ? "z" : "video", out);
}

}  // namespace

void register_vae(CLI::App& app) {
  auto args = std::make_shared<VaeArgs>();
  CLI::App* cmd =
      app.add_subcommand("vae",
                         "Wan 2.1 / 2.2 or HunyuanVideo 1.5 VAE encode or decode (--device cpu "
                         "or cuda, --vae-precision)");
  cmd->add_option("mode", args->mode, "encode or decode")
      ->required()
      ->check(CLI::IsMember({"encode", "decode"}));
  cmd->add_option("--vae", args->vae,
                  "VAE .safetensors, torch.save .pth or directory (official WanVAE_ or "
                  "HunyuanVideo 1.5 AutoencoderKLConv3D keys, or diffusers', any prefix)")
      ->required();
  cmd->add_option("--inputs", args->inputs,
                  "safetensors with 'video' [3, T, H, W] in [-1, 1] (encode) or 'z' [z_dim, F, h, "
                  "w] (decode); optional 'scale_mean'/'scale_std'")
      ->required();
  cmd->add_option("--output", args->output,
                  "safetensors to write 'z' (encode) or 'video' (decode) to")
      ->required();
  cmd->add_flag("--normalize", args->normalize,
                "encode: (mu - mean) / std; decode: z * std + mean first (mean/std from --inputs "
                "'scale_mean'/'scale_std', else from the VAE; HunyuanVideo 1.5: times / divided "
                "by its scaling factor)");
  add_device_flags(cmd, args->device, "cpu",
                   "cpu (fp32 reference) or cuda (bf16 activations and conv weights with fp32 "
                   "accumulation, or --vae-precision fp32)");
  add_vae_precision_flag(cmd, args->device);
  cmd->add_flag("--clamp", args->clamp, "decode: clamp the video to [-1, 1] (as Wan2_1_VAE does)");
  cmd->add_flag("--no-tiling", args->no_tiling,
                "HunyuanVideo 1.5 decode: the whole frame at once instead of the pipeline's "
                "256-pixel tiles (more memory)");
  cmd->callback([args] { run_vae(*args); });
}

}  // namespace fisdit::cli
