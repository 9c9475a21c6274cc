#pragma once
// Weights of one model fetched by their canonical (the official code's) names from a checkpoint
// whose stored names may differ (another layout, a prefix). The family's name map
// (models/<family>/) says how a canonical name is stored; this only reads and checks.
#include <functional>
#include <memory>
#include <string>

#include "io/checkpoint.h"

namespace fisdit {

// canonical name -> the name stored in the checkpoint.
using StoredNameFn = std::function<std::string(const std::string& canonical)>;

// Copies share the checkpoint.
class WeightSource {
 public:
  // `stored_name` empty: names are stored as they are.
  WeightSource(Checkpoint checkpoint, StoredNameFn stored_name = {});
  WeightSource(std::shared_ptr<SafetensorsFile> file, StoredNameFn stored_name = {});

  const Checkpoint& checkpoint() const { return checkpoint_; }
  std::string stored_name(const std::string& canonical) const;

  bool has(const std::string& canonical) const;
  // nullptr when absent.
  const TensorInfo* info(const std::string& canonical) const;
  // The tensor converted to host F32. Throws
  //   "<file>: tensor '<stored>' (<canonical>) is missing"
  //   "<file>: tensor '<stored>' (<canonical>) has shape [a, b], expected [c, d]".
  // FP8 weights with a ComfyUI "scaled fp8" companion `<name minus .weight>.scale_weight`
  // (a single value) come back multiplied by it.
  Tensor get(const std::string& canonical, const Shape& expected) const;
  // The same without a shape check.
  Tensor get(const std::string& canonical) const;
  // As get(canonical, expected), but as stored: a read-only view of the file (no copy) for BF16,
  // F16, F32 and FP8 tensors, with `scale` set to the factor get() would apply (an fp8 tensor's
  // scale_weight, else 1); other dtypes come as get()'s host F32 copy (scale 1). For uploading
  // straight to a backend that converts as it copies (Backend::upload, Backend::dequantize).
  Tensor get_stored(const std::string& canonical, const Shape& expected, float& scale) const;

 private:
  const TensorInfo& require(const std::string& canonical, const std::string& stored) const;
  // The ComfyUI per-tensor scale of an fp8 `<name>.weight` (its `<name>.scale_weight`), else 1.
  float fp8_scale(const std::string& canonical, const std::string& stored) const;
  Checkpoint checkpoint_;
  StoredNameFn stored_name_;
};

}  // namespace fisdit
