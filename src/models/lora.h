#pragma once
// LoRA files for a DiT (e.g. Wan's Lightning / lightx2v step-distillation LoRAs), merged into the
// weights while they are loaded: W += strength * (alpha / rank) * up @ down in fp32, before the
// weight is converted to the backend's dtype.
//
// Tensor names in a LoRA file are `<module>.<suffix>`:
//   lora_down.weight [r, in] + lora_up.weight [out, r] (+ optional alpha, a single value)
//       kohya / ComfyUI naming; without alpha the scale is 1 (alpha = r)
//   lora_A.weight [r, in] + lora_B.weight [out, r]
//       PEFT / diffusers naming (A = down, B = up); alpha likewise optional
//   diff       a full delta of `<module>.weight` (or of `<module>` itself for a bare parameter
//              such as blocks.N.modulation), added times strength
//   diff_b     a full delta of `<module>.bias`, added times strength
// For a weight of more than two dimensions (the patch embedding Conv3d [out, in, kt, kh, kw]),
// down is [r, in, kt, kh, kw] (or [r, in*kt*kh*kw]) and up [out, r, 1, 1, 1] (or [out, r]).
// `<module>` is an official DiT module path (Wan: `blocks.0.self_attn.q`) or a path in another
// layout the model family maps to official ones (Wan: diffusers' `blocks.0.attn1.to_q`,
// models/wan/keymap.h), optionally behind `diffusion_model.` or `model.diffusion_model.` (ComfyUI),
// `transformer.` (diffusers save_lora_weights) or `base_model.model.` (PEFT), or kohya /
// musubi-tuner's flattened official path `lora_unet_blocks_0_self_attn_q`.
//
// Every tensor of a LoRA file must change a parameter of the model with matching shapes; anything
// else (an unknown suffix, a module the model lacks, a pair with one half missing, mismatched
// shapes, a non-float tensor) throws fisdit::Error "<lora file>: LoRA does not match the model:
// ..." naming the key. A file without tensors is refused too. Several files (and several pairs
// for the same weight) add up.
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/checkpoint.h"

namespace fisdit {

class Backend;

struct LoraSpec {
  std::string path;  // safetensors (or torch.save .pth) file
  float strength = 1.0f;
};

// A model family's other module naming: the official module path of `module`, or nullopt.
using LoraModuleNames = std::function<std::optional<std::string>(std::string_view module)>;

class LoraMerge {
 public:
  LoraMerge() = default;
  // Opens every file and matches its tensors against `parameters` (canonical name -> shape, e.g.
  // wan::dit_parameter_shapes), reading module paths as official ones or through `other_names`.
  // Throws as described above.
  LoraMerge(const std::vector<LoraSpec>& loras,
            const std::vector<std::pair<std::string, Shape>>& parameters,
            const LoraModuleNames& other_names = {});

  bool empty() const { return patches_.empty(); }
  // The canonical parameter names the LoRAs change, sorted.
  std::vector<std::string> targets() const;
  bool touches(const std::string& canonical) const { return patches_.count(canonical) != 0; }
  // Number of parameters the file of `loras[index]` changes.
  size_t count_for(size_t index) const;

  // Adds every delta for `canonical` to `weight`, a writable host F32 tensor of the parameter's
  // shape. No-op for a parameter no LoRA changes.
  void apply(const std::string& canonical, Tensor& weight) const;
  // The same for an F32 `weight` that lives on `backend` (the GPU merges there, in fp32).
  void apply(const std::string& canonical, Tensor& weight, Backend& backend) const;

  struct Patch {
    size_t file = 0;  // index into the LoRA list
    std::string up;   // stored names in that file: up and down (low rank) ...
    std::string down;
    std::string delta;   // ... or a full delta (diff / diff_b)
    int64_t rank = 0;    // r of a low-rank pair
    float scale = 1.0f;  // strength * alpha / r, or strength for a full delta
  };

 private:
  std::vector<Checkpoint> files_;
  std::vector<std::string> paths_;
  std::map<std::string, std::vector<Patch>> patches_;
};

}  // namespace fisdit
