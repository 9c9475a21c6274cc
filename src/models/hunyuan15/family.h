#pragma once
// HunyuanVideo 1.5 as a model family (models/family.h): its configs, how a checkpoint is
// recognised and read (the official transformer/<version> layout: config.json + safetensors,
// official tensor names, optionally under a prefix), random weights for bench.
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "models/family.h"
#include "models/hunyuan15/dit.h"

namespace fisdit::hunyuan15 {

struct ModelSource {
  Checkpoint checkpoint;
  std::string prefix;  // before every official name ("model." in the fixtures)
  HunyuanConfig config;
  std::string config_origin;  // a config.json path, "file metadata" or "tensor shapes"
};

// Opens a checkpoint path, finds the official names and resolves the config: config.json (or
// a fixture's metadata) over what the tensor shapes say; values both give must agree. Throws
// naming what is not a HunyuanVideo 1.5 DiT.
ModelSource open_model(const std::string& path);
// Every tensor the config needs, checked against the checkpoint: one line per problem.
std::vector<std::string> check_model(const ModelSource& src);
std::unique_ptr<HunyuanDiT> load_dit(const ModelSource& src, Backend& backend);

models::Family family();

}  // namespace fisdit::hunyuan15
