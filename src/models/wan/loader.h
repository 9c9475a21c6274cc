#pragma once
// From what a user passes as --model to a WanDiT: the checkpoint, its key layout, the resolved
// config (config.json, the file's own metadata, or the tensor shapes) and the weights.
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/lora.h"
#include "models/wan/dit.h"
#include "models/wan/keymap.h"

namespace fisdit::wan {

struct ModelSource {
  Checkpoint checkpoint;
  KeyMap keys;
  WanConfig config;
  std::string config_origin;  // "config.json", "file metadata", "tensor shapes"
};

// Opens a .safetensors file, a directory with config.json (+ shards), or an index.json, detects
// the key layout and resolves the config. Values config.json omits (text_dim, patch_size) come
// from the tensor shapes; values it carries must agree with them.
ModelSource open_model(const std::string& path);

// Every tensor the config needs, checked against the checkpoint: one line per problem
// ("missing blocks.3.ffn.0.weight", "blocks.0.modulation has shape [..], expected [..]").
std::vector<std::string> check_model(const ModelSource& src);

// The LoRA files matched against this config's parameters, module paths in the official or the
// diffusers naming (models/lora.h); throws naming the file and tensor that does not fit.
LoraMerge dit_lora(const std::vector<LoraSpec>& loras, const WanConfig& config);

// Loads the weights onto `backend` (throws naming the first missing or misshaped tensor). `loras`
// are merged into the fp32 weights before they go to the backend (models/lora.h); every LoRA tensor
// must match a parameter of this model, else the load throws before any weight is read. `precision`
// Fp8 quantizes the block matrices as they load, LoRAs merged first (WanDiT).
std::unique_ptr<WanDiT> load_dit(const ModelSource& src, Backend& backend,
                                 const std::vector<LoraSpec>& loras = {},
                                 models::Precision precision = models::Precision::Default);

}  // namespace fisdit::wan
