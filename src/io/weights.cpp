#include "io/weights.h"

#include <string_view>
#include <utility>

#include "core/dtype.h"
#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit {

WeightSource::WeightSource(Checkpoint checkpoint, StoredNameFn stored_name)
    : checkpoint_(std::move(checkpoint)), stored_name_(std::move(stored_name)) {}

WeightSource::WeightSource(std::shared_ptr<SafetensorsFile> file, StoredNameFn stored_name)
    : checkpoint_(Checkpoint::from_file(std::move(file))), stored_name_(std::move(stored_name)) {}

std::string WeightSource::stored_name(const std::string& canonical) const {
  return stored_name_ ? stored_name_(canonical) : canonical;
}

bool WeightSource::has(const std::string& canonical) const {
  return checkpoint_.contains(stored_name(canonical));
}

const TensorInfo* WeightSource::info(const std::string& canonical) const {
  return checkpoint_.find(stored_name(canonical));
}

const TensorInfo& WeightSource::require(const std::string& canonical,
                                        const std::string& stored) const {
  const TensorInfo* info = checkpoint_.find(stored);
  if (!info)
    throw Error(checkpoint_.path() + ": tensor " + squoted(stored) + " (" + printable(canonical) +
                ") is missing");
  return *info;
}

Tensor WeightSource::get(const std::string& canonical, const Shape& expected) const {
  const std::string stored = stored_name(canonical);
  const TensorInfo& info = require(canonical, stored);
  if (info.shape != expected)
    throw Error(checkpoint_.file_of(stored) + ": tensor " + squoted(stored) + " (" +
                printable(canonical) + ") has shape " + shape_str(info.shape) + ", expected " +
                shape_str(expected));
  return get(canonical);
}

Tensor WeightSource::get_stored(const std::string& canonical, const Shape& expected,
                                float& scale) const {
  scale = 1.0f;
  const std::string stored = stored_name(canonical);
  const TensorInfo& info = require(canonical, stored);
  if (info.shape != expected) return get(canonical, expected);  // throws naming the tensor
  if (info.dtype == DType::BF16 || info.dtype == DType::F16 || info.dtype == DType::F32)
    return checkpoint_.tensor(stored);
  if (!is_fp8(info.dtype)) return get(canonical, expected);
  scale = fp8_scale(canonical, stored);
  return checkpoint_.tensor(stored);
}

float WeightSource::fp8_scale(const std::string& canonical, const std::string& stored) const {
  constexpr std::string_view kWeight = ".weight";
  if (stored.size() <= kWeight.size() ||
      std::string_view(stored).substr(stored.size() - kWeight.size()) != kWeight)
    return 1.0f;
  const std::string scale_name = stored.substr(0, stored.size() - kWeight.size()) + ".scale_weight";
  const TensorInfo* scale_info = checkpoint_.find(scale_name);
  if (!scale_info) return 1.0f;
  if (scale_info->numel() != 1)
    throw Error(checkpoint_.file_of(scale_name) + ": tensor " + squoted(scale_name) +
                " (scale of " + printable(canonical) + ") has shape " +
                shape_str(scale_info->shape) + ", expected a single value");
  return checkpoint_.tensor_f32(scale_name).f32()[0];
}

Tensor WeightSource::get(const std::string& canonical) const {
  const std::string stored = stored_name(canonical);
  const TensorInfo& info = require(canonical, stored);
  const float scale = is_fp8(info.dtype) ? fp8_scale(canonical, stored) : 1.0f;
  if (scale == 1.0f) return checkpoint_.tensor_f32(stored);
  const Tensor raw = checkpoint_.tensor(stored);
  Tensor t = Tensor::zeros(info.shape);
  convert_to_f32_scaled(info.dtype, raw.raw(), scale, t.f32(), static_cast<size_t>(info.numel()));
  return t;
}

}  // namespace fisdit
