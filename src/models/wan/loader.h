#pragma once
// From what a user passes as --model to a WanDiT: the checkpoint, its key layout, the resolved
// config (config.json, the file's own metadata, or the tensor shapes) and the weights.
#include <cstdint>
#include <map>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/lora.h"
#include "models/wan/dit.h"
#include "models/wan/keymap.h"
#include "models/weights.h"

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

// The host side of load_dit done ahead (stage_dit), for load_dit to finish on a backend of
// `device`.
struct StagedDit {
  Device device = Device::CPU;
  LoraMerge lora;  // the LoRA files opened and matched against the config
  // Weights as load_dit makes them on the host before the backend takes them (host_weight: F32,
  // LoRAs merged), by canonical name: every one a CPU backend gets (while they fit the budget), on
  // a GPU only head.modulation (WanDiT uploads it). load_dit takes each out as it uses it.
  std::map<std::string, Tensor> host;
  // On a GPU with an upload: weights as the files store them (WeightSource::get_stored) already on
  // the device, with their fp8 scale, by canonical name; load_dit takes each out as it uses it.
  struct OnDevice {
    Tensor stored;
    float scale = 1.0f;
  };
  std::map<std::string, OnDevice> on_device;
  int64_t bytes = 0;         // weights made on the host, read from the files or put on the GPU
  int64_t device_bytes = 0;  // of them, put on the GPU
};

// What load_dit(src, <a backend of `device`>, loras, precision) does first that needs no backend,
// in load order (fisdit generate runs it on a thread of its own while the text encoder runs): the
// LoRAs matched; on the CPU every weight made on the host; on a GPU the stored bytes read from the
// files (the upload then copies from memory), or with `upload` put on the GPU as stored (F32,
// BF16 or fp8 of the parameter's shape; each while `upload.reserve` bytes stay free after it, the
// rest read). At most `budget` bytes are made or read on the host; when `stop` is requested it
// returns what it has. Throws as load_dit would for a LoRA that does not match, or on the CPU for
// a tensor that is missing or misshaped.
StagedDit stage_dit(const ModelSource& src, Device device, const std::vector<LoraSpec>& loras,
                    models::Precision precision, int64_t budget, std::stop_token stop = {},
                    const models::UploadAhead& upload = {});

// Loads the weights onto `backend` (throws naming the first missing or misshaped tensor). `loras`
// are merged into the fp32 weights before they go to the backend (models/lora.h); every LoRA tensor
// must match a parameter of this model, else the load throws before any weight is read. `precision`
// Fp8 quantizes the block matrices as they load, LoRAs merged first (WanDiT). `staged` (optional,
// stage_dit's of the same src, loras and precision for this backend's device): its LoRA match,
// host weights and weights on the device are used (and taken out) instead of being made again;
// the weights are the same, bit for bit.
std::unique_ptr<WanDiT> load_dit(const ModelSource& src, Backend& backend,
                                 const std::vector<LoraSpec>& loras = {},
                                 models::Precision precision = models::Precision::Default,
                                 StagedDit* staged = nullptr);

}  // namespace fisdit::wan
