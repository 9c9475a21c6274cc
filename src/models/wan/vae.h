#pragma once
// The Wan video VAEs on a Backend, channels-last activations in the backend's video dtype (BF16
// on CUDA by default; the CPU backend is the fp32 reference): Wan 2.1 (wan/modules/vae2_1.py,
// WanVAE_) and Wan 2.2 (vae2_2.py: 2x2 patchify, AvgDown3D/DupUp3D shortcuts around each stage,
// decoder width dec_dim).
//
// The official code runs the encoder on frame chunks 1, 4, 4, ... and the decoder on one latent
// frame at a time, with per-conv caches of the last CACHE_T = 2 input frames. This class keeps
// that streaming structure (bounded memory: one chunk of activations at a time) and its exact
// semantics:
//   * every CausalConv3d keeps a history of the last 2*pad_t frames of its (front zero padded)
//     input, so it equals a causal conv over the whole sequence;
//   * downsample3d lets the first chunk through and afterwards runs its stride-2 time conv over
//     [last frame of the previous chunk, chunk];
//   * upsample3d passes the first chunk (latent frame 0: 1 -> 1 frame) and runs its causal time
//     conv from chunk 1 on with a fresh zero history (it never sees chunk 0), interleaving the two
//     output halves in time (1 -> 2 frames).
// Weights use the official state_dict keys ("encoder.conv1.weight", ...), optionally under a
// prefix ("model.", "vae.", ...); open_vae also reads diffusers' AutoencoderKLWan names through
// diffusers_vae_key.
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/checkpoint.h"

namespace fisdit {
class Backend;
}

namespace fisdit::wan {

struct VaeConfig {
  int version = 21;  // 21: vae2_1.py, 22: vae2_2.py
  int dim = 96;
  int dec_dim = 0;  // Wan 2.2 decoder width (0: same as dim; Wan 2.1 always uses dim)
  int z_dim = 16;
  std::vector<int> dim_mult = {1, 2, 4, 4};
  int num_res_blocks = 2;
  std::vector<double> attn_scales;                              // empty in every released Wan VAE
  std::vector<bool> temperal_downsample = {false, true, true};  // official spelling
  // Throws fisdit::Error prefixed with `where` when the values cannot describe a WanVAE_.
  void validate(const std::string& where) const;
  int decoder_dim() const { return version == 22 && dec_dim > 0 ? dec_dim : dim; }
  // 8 for Wan 2.1; 16 for Wan 2.2 (2x2 patchify, then three 2x downsamples).
  int64_t spatial_stride() const {
    return (int64_t{1} << (dim_mult.size() - 1)) * (version == 22 ? 2 : 1);
  }
  int64_t temporal_stride() const;
};

// Per-channel latent statistics; the official wrappers pass scale = [mean, 1/std].
struct LatentStats {
  std::vector<float> mean, std;
  bool defined() const { return !mean.empty(); }
};
// Wan2_1_VAE's (16 channels) and Wan2_2_VAE's (48 channels) hard-coded statistics.
LatentStats wan21_latent_stats();
LatentStats wan22_latent_stats();
// encode: (mu - mean) * (1/std), in place on [z, F, H, W].
void normalize_latent(Tensor& mu, const LatentStats& stats);
// decode input: z / (1/std) + mean, in place on [z, F, H, W].
void denormalize_latent(Tensor& z, const LatentStats& stats);

// Called after each encoder/decoder chunk: chunk index, chunk count, frames in, frames out.
using VaeProgressFn =
    std::function<void(int chunk, int chunks, int64_t in_frames, int64_t out_frames)>;
// Decoded frames as they become final: frames [first, first + count) of `video` (host, [3, F, H,
// W], unclamped; the same tensor decode returns, its later frames still to come).
using VaePartFn = std::function<void(const Tensor& video, int64_t first, int64_t count)>;
// Returns the tensor stored under the official key (without prefix); shape is the expected one.
using VaeWeightFn = std::function<Tensor(const std::string& key, const Shape& shape)>;

class WanVae {
 public:
  // Weights go to `backend` (conv weights channels-last in its video dtype, biases and gammas
  // F32) and every op runs there; null: an own CPU backend. The
  // backend must outlive the VAE. encode/decode take and return host tensors.
  WanVae(VaeConfig cfg, const VaeWeightFn& weights, Backend* backend = nullptr);
  ~WanVae();
  WanVae(const WanVae&) = delete;
  WanVae& operator=(const WanVae&) = delete;

  const VaeConfig& config() const { return cfg_; }
  Backend& backend() const;

  // video [3, T, H, W] (values in [-1, 1]; H, W multiples of spatial_stride() s) -> raw mu
  // [z, 1 + (T-1)/4, H/s, W/s] (not normalised). Frames after the last 4k+1 are dropped, as
  // upstream. `enc_raw`, when given, receives the encoder output before the 1x1x1 conv1 ([2z,
  // ...]).
  Tensor encode(const Tensor& video, Tensor* enc_raw = nullptr, const VaeProgressFn& progress = {});
  // Raw (denormalised) latent [z, F, h, w] -> video [3, 1 + 4(F-1), s*h, s*w], unclamped.
  // `conv2_out`, when given, receives conv2(z) as fed to the decoder; `on_part` each chunk's
  // frames as they are final.
  Tensor decode(const Tensor& z, Tensor* conv2_out = nullptr, const VaeProgressFn& progress = {},
                const VaePartFn& on_part = {});

  // Latent frames per decode chunk after the first (which is latent frame 0 alone, as upstream):
  // n > 0 fixes n (1: the official code's frame at a time), 0 (the default) picks them from the
  // frame size (decode_chunk_frames). The output does not depend on it beyond rounding: the causal
  // caches carry across chunks of any length. FISDIT_VAE_DECODE_CHUNK=N|auto sets the default.
  void set_decode_chunk(int64_t latent_frames);
  // The latent frames per chunk a decode of latent frames of h x w uses.
  int64_t decode_chunk(int64_t h, int64_t w) const;

  struct Impl;

 private:
  VaeConfig cfg_;
  std::unique_ptr<Impl> impl_;
  int64_t decode_chunk_ = 0;
};

// Latent frames per decode chunk for output frames of width x height when the temporal stride is
// `stride`: as many as keep a chunk's output within 8M pixel-frames, at least 1 and at most 4.
// Larger chunks run larger convolutions, and fewer of them, for the same work. On an H100 (bench
// --vae, bf16): 720p and 1280x704 take 2 (2.62 s vs 2.78 s for 81 frames at 720p, the decode
// peaking at 10-11 GiB vs 7-8), 480p 4 (1.08 s vs 1.62 s; 2-6 all within 5%), 512x512 4.
int64_t decode_chunk_frames(int64_t width, int64_t height, int64_t stride);

// The VAE behind --vae: a safetensors file, a torch.save .pth (as the released Wan2.1_VAE.pth and
// Wan2.2_VAE.pth) or a checkpoint directory, holding WanVAE_'s state_dict keys, possibly under a
// prefix. The config comes from the file's metadata (`config` JSON with a `constructor` object,
// as the fixtures store it) or else the released layout (Wan 2.1 when encoder.conv1 takes 3
// channels, Wan 2.2 when it takes 12) with the widths, z_dim and the res-block count read from
// the tensor shapes.
//
// diffusers' AutoencoderKLWan (a vae/ directory or a .safetensors file, names such as
// "encoder.conv_in.weight") is read too: the config from its config.json (in the directory or
// beside the file; else from the tensor shapes as above) and latents_mean / latents_std from it;
// every official key is read under its diffusers name (diffusers_vae_key) and a tensor that no
// official key maps to is an error.
struct VaeSource {
  Checkpoint checkpoint;
  std::string prefix;
  VaeConfig config;
  std::string config_origin;  // "file metadata", "config.json" or "tensor shapes"
  LatentStats stats;  // metadata real_model / config.json, else the wrapper's constants (z 16 / 48)
  bool diffusers = false;  // AutoencoderKLWan names
};
// The diffusers AutoencoderKLWan name of an official WanVAE_ key (scripts/convert_wan_to_diffusers
// .py, convert_vae / convert_vae_22, for any num_res_blocks); throws for a key it does not know.
std::string diffusers_vae_key(const std::string& key, const VaeConfig& cfg);
// A diffusers AutoencoderKLWan config.json (base_dim, decoder_base_dim, z_dim, dim_mult,
// num_res_blocks, attn_scales, temperal_downsample, is_residual, in/out_channels, patch_size,
// latents_mean, latents_std) as a VaeConfig and its latent statistics (empty when absent).
// Throws naming `where` and the field for what the VAE here cannot run.
void diffusers_vae_config(const nlohmann::json& j, const std::string& where, VaeConfig& cfg,
                          LatentStats& stats);
VaeSource open_vae(const std::string& path);
// Loads the weights (throws naming the first missing or misshaped tensor).
std::unique_ptr<WanVae> load_vae(const VaeSource& src, Backend* backend = nullptr);

}  // namespace fisdit::wan
