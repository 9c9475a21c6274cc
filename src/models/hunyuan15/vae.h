#pragma once
// The HunyuanVideo 1.5 VAE (hyvideo/models/autoencoders/hunyuanvideo_15_vae.py AutoencoderKLConv3D)
// on a Backend, channels-last activations in the backend's video dtype (BF16 on CUDA by default;
// the CPU backend is the fp32 reference): causal 3x3x3 convolutions
// with replicate padding, channel RMS norms, res blocks, space-to-channel downsampling (2x2, or
// 2x2x2 with frame 0 kept alone) with a channel-averaged shortcut and its mirror for upsampling
// with a channel-repeated shortcut, and a single-head frame-causal attention in the middle.
// Unlike Wan's VAE it processes the whole clip at once (the official code has no time chunks).
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/tensor.h"

namespace fisdit {
class Backend;
}

namespace fisdit::hunyuan15 {

struct VaeConfig {
  int in_channels = 3, out_channels = 3, latent_channels = 32;
  std::vector<int> block_out_channels = {128, 256, 512, 1024, 1024};
  int layers_per_block = 2;
  int ffactor_spatial = 16, ffactor_temporal = 4;
  double scaling_factor = 1.03682;  // the pipeline's: latent = mode * s, decode(z / s)
  // Throws fisdit::Error naming `source` when the values cannot describe an AutoencoderKLConv3D.
  void validate(const std::string& source) const;
};
// The constructor arguments of a config.json object (or a fixture's metadata) over the defaults.
VaeConfig vae_config_from_json(const nlohmann::json& j, const std::string& source);

// Every parameter, official name -> shape.
std::vector<std::pair<std::string, Shape>> vae_parameter_shapes(const VaeConfig& cfg);

// Supplies a weight by its official name as a host tensor of exactly `shape`; throws naming it.
using VaeWeightFn = std::function<Tensor(const std::string& name, const Shape& shape)>;

// Spatial tiling of decode (AutoencoderKLConv3D.spatial_tiled_decode, which the pipeline runs
// under memory_efficient_context): latent tiles of sample_size / 16 cells every
// (1 - overlap) of that, each decoded alone, blended linearly with the tile above and the one to
// the left over sample_size * overlap pixels, cropped to sample_size * (1 - overlap). The
// pipeline's setting on GPUs with more than 21 GB: 256 pixels, 0.125.
struct VaeTiling {
  bool enabled = true;
  int sample_size = 256;
  double overlap = 0.125;
};

// The VAE behind --vae: a safetensors file or a directory (vae/ of the release: config.json and
// diffusion_pytorch_model.safetensors) with the official AutoencoderKLConv3D names or diffusers'
// AutoencoderKLHunyuanVideo15 names, under any prefix. The config: config.json, else the file's
// metadata 'config' constructor (io/checkpoint.h metadata_config), else the released defaults
// with the widths read from the tensor shapes.
struct VaeSource {
  std::shared_ptr<const void> checkpoint;  // io::Checkpoint, kept alive for the weights
  std::string path, prefix, config_origin;
  bool diffusers = false;
  VaeConfig config;
  // The weights by official name, read from the checkpoint.
  VaeWeightFn weights;
};
// Whether `path` holds a HunyuanVideo 1.5 VAE (without reading weights); throws nothing.
bool is_hunyuan_vae(const std::string& path);
// Throws fisdit::Error naming the path when it holds no HunyuanVideo 1.5 VAE.
VaeSource open_vae(const std::string& path);
// The diffusers name of an official VAE parameter name.
std::string vae_diffusers_name(const std::string& official);

class HunyuanVae {
 public:
  HunyuanVae(VaeConfig cfg, const VaeWeightFn& weights, Backend& backend);
  ~HunyuanVae();
  HunyuanVae(const HunyuanVae&) = delete;
  HunyuanVae& operator=(const HunyuanVae&) = delete;
  const VaeConfig& config() const { return cfg_; }

  // video [3, F, H, W] in [-1, 1] (F = 4k + 1; H, W multiples of ffactor_spatial), host ->
  // the posterior's mode (its mean) [latent, 1 + (F - 1) / 4, H / 16, W / 16], host, unscaled.
  // `moments`, when given, gets the encoder's output [2 latent, ...].
  Tensor encode(const Tensor& video, Tensor* moments = nullptr);
  // Latent [latent, T, h, w] (unscaled), host -> video [3, 1 + 4 (T - 1), 16 h, 16 w], host,
  // unclamped; in tiles when `tiling` is enabled and the latent is larger than one tile.
  // `tile_done` (optional) is called after each tile (done, total; one tile without tiling).
  Tensor decode(const Tensor& z, const VaeTiling& tiling = {false},
                const std::function<void(int done, int total)>& tile_done = {});

  struct Impl;

 private:
  Tensor decode_whole(const Tensor& z);
  VaeConfig cfg_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fisdit::hunyuan15
