#pragma once
// The generation defaults a model directory may carry in fisdit.json (fisdit's own small models,
// tools/train): {"name", "size": "128x128", "frames", "steps", "shift", "guidance", "solver",
// "held_out_prompts": [...], "training": {...}}. Commands take a value from it when its flag is
// not given, and their built-in default when neither is.
#include <optional>
#include <string>
#include <vector>

namespace fisdit::pipeline {

struct ModelDefaults {
  std::string path;  // the fisdit.json read; empty when the model has none
  std::string name;
  std::optional<std::string> size;  // "WxH"
  std::optional<int> frames, steps;
  std::optional<double> shift;
  std::optional<float> guidance;
  std::optional<std::string> solver;
  std::vector<std::string> held_out_prompts;
};

// MODEL/fisdit.json when `model` is a directory that holds one, else an empty ModelDefaults.
// Throws fisdit::Error naming the file when it is not JSON or a field has the wrong type;
// unknown fields (such as "training") are ignored.
ModelDefaults read_model_defaults(const std::string& model);

// The bundled model (models/fisdit-shapes, trained by tools/train), used when a command gets no
// --model. Looked for, in order: $FISDIT_MODEL (any model directory), models/fisdit-shapes beside
// or one level above the running binary (a build directory in the source tree), share/fisdit/
// models/fisdit-shapes above the binary (an install), and the source tree fisdit was built from.
// Throws fisdit::Error listing where it looked when none exists.
std::string bundled_model_dir();

}  // namespace fisdit::pipeline
