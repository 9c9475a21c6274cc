#pragma once
// HunyuanVideo 1.5 as a model family (models/family.h): its configs, how a checkpoint is
// recognised and read (the official transformer/<version> directory or diffusers' transformer/
// directory: config.json + safetensors, official or diffusers tensor names, optionally under a
// prefix), random weights for bench.
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/family.h"
#include "models/hunyuan15/dit.h"

namespace fisdit::hunyuan15 {

// How a checkpoint names the DiT's tensors: the official code's names, or diffusers'
// HunyuanVideo15Transformer3DModel (scripts/convert_hunyuan_video1_5_to_diffusers.py: the
// refiner's fused qkv split into to_q/to_k/to_v, the final layer's (shift, scale) stored as
// (scale, shift)).
enum class Layout { Official, Diffusers };

// The diffusers name of an official parameter name ("" for the refiner's fused qkv, which
// diffusers stores as three tensors).
std::string diffusers_name(const std::string& official);

struct ModelSource {
  Checkpoint checkpoint;
  Layout layout = Layout::Official;
  std::string prefix;  // before every stored name ("model." in the fixtures)
  HunyuanConfig config;
  std::string config_origin;  // a config.json path, "file metadata" or "tensor shapes"
};

// Opens a checkpoint path, finds the official names and resolves the config: config.json (or
// a fixture's metadata) over what the tensor shapes say; values both give must agree. Throws
// naming what is not a HunyuanVideo 1.5 DiT.
ModelSource open_model(const std::string& path);
// The stored name of an official parameter name (the prefix and the layout's name).
std::string stored_name(const ModelSource& src, const std::string& official);
// Every tensor the config needs, checked against the checkpoint: one line per problem.
std::vector<std::string> check_model(const ModelSource& src);
std::unique_ptr<HunyuanDiT> load_dit(const ModelSource& src, Backend& backend,
                                     models::Precision precision = models::Precision::Default);

models::Family family();

}  // namespace fisdit::hunyuan15
