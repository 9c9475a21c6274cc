#pragma once
// A model checkpoint as a user names it with --model: one or more safetensors files seen as one
// set of uniquely named tensors, plus the model's config.json when there is one.
//
// Accepted paths:
//   (a) a single `*.safetensors` file, or a PyTorch zip checkpoint by extension (`.pth`, `.pt`,
//       `.bin`, `.ckpt`: torch.save's format since torch 1.6, read without running its pickle;
//       see SafetensorsFile::open_pth). Any other regular file is tried as safetensors, except
//       plain `.pkl` pickles and GGUF, which are refused by extension with a clear message;
//   (b) a directory holding exactly one `*.safetensors.index.json` (its weight_map names the
//       shard of every tensor), or else plain `*.safetensors` files (all of them are loaded);
//       `config.json` in the directory is the config;
//   (c) a `*.safetensors.index.json` file itself (config.json is looked for beside it).
// Every file is opened and validated by open(); a sharded checkpoint also checks that every
// shard exists and holds each tensor the index assigns to it. Tensors a shard holds but the
// index does not list are ignored. Copies of a Checkpoint share the open files.
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"

namespace fisdit {

class Checkpoint {
 public:
  static Checkpoint open(const std::string& path);
  // A checkpoint made of one already open file (no config).
  static Checkpoint from_file(std::shared_ptr<SafetensorsFile> file);

  // The path open() was given.
  const std::string& path() const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  size_t size() const;
  // nullptr when no file holds that tensor.
  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  // As SafetensorsFile::tensor / tensor_f32 of the file holding `name`; throws naming the
  // checkpoint and the tensor when absent.
  Tensor tensor(std::string_view name) const;
  Tensor tensor_f32(std::string_view name) const;
  // The path of the file holding `name`; throws when absent.
  const std::string& file_of(std::string_view name) const;
  // The open files (for a sharded checkpoint, in the order of their first mention).
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const;

  // config.json of a directory checkpoint (or beside an index file), when present.
  const std::optional<std::string>& config_path() const;
  // Parses config.json on each call; nullopt without one; throws naming it when it is not JSON.
  std::optional<nlohmann::json> config_json() const;

  struct State;  // implementation detail (defined in checkpoint.cpp)

 private:
  explicit Checkpoint(std::shared_ptr<const State> state) : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// The shortest prefix (empty or ending in '.') under which a tensor named `anchor` exists among
// `names`, e.g. "model." for "model.encoder.conv1.weight"; nullopt when none does.
std::optional<std::string> shortest_prefix(const std::vector<std::string>& names,
                                           std::string_view anchor);

// The description fisdit and its fixture generator write into a file's metadata: "config", a
// JSON object holding "constructor" (the model's constructor arguments) and maybe "real_model",
// ... (tests/data/wan/README.md). That of the first file of `ck` that has one; nullopt when none
// has (or the metadata is other JSON).
std::optional<nlohmann::json> metadata_config(const Checkpoint& ck);

}  // namespace fisdit
