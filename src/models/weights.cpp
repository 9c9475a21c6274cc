#include "models/weights.h"

#include "backend/backend.h"
#include "core/dtype.h"
#include "fisdit/error.h"

namespace fisdit::models {

Tensor widen_to_f32(const Tensor& stored, float scale) {
  if (scale == 1.0f) return stored.dtype() == DType::F32 ? stored : stored.to_f32();
  Tensor t = Tensor::zeros(stored.shape());
  convert_to_f32_scaled(stored.dtype(), stored.raw(), scale, t.f32(),
                        static_cast<size_t>(stored.numel()));
  return t;
}

Tensor upload_weight(const Tensor& stored, float scale, Backend& backend, DType dtype) {
  if (stored.device() != Device::CPU)
    throw Error("upload_weight: the stored weight " + shape_str(stored.shape()) +
                " is not a host tensor");
  if (backend.device() == Device::CPU) {
    const Tensor w = widen_to_f32(stored, scale);
    return dtype == DType::F32 ? w : backend.upload(w, dtype);
  }
  if (is_fp8(stored.dtype())) return backend.dequantize(stored, scale, dtype);
  if (scale == 1.0f) return backend.upload(stored, dtype);
  return backend.upload(widen_to_f32(stored, scale), dtype);
}

Tensor host_weight(const WeightSource& weights, const std::string& canonical, const Shape& shape,
                   const LoraMerge* lora) {
  Tensor w = weights.get(canonical, shape);  // a fresh copy: safe to change
  if (lora) lora->apply(canonical, w);
  return w;
}

Tensor load_weight(const WeightSource& weights, const std::string& canonical, const Shape& shape,
                   Backend& backend, DType dtype, const LoraMerge* lora) {
  if (backend.device() == Device::CPU) {
    const Tensor w = host_weight(weights, canonical, shape, lora);
    return dtype == DType::F32 ? w : backend.upload(w, dtype);
  }
  float scale = 1.0f;
  const Tensor stored = weights.get_stored(canonical, shape, scale);
  if (!lora || !lora->touches(canonical)) return upload_weight(stored, scale, backend, dtype);
  // Merged in fp32 on the device: bf16 / f32 bytes go up as stored; f16 is widened on the host
  // (the CUDA backend keeps F32 and BF16 only).
  Tensor w =
      is_fp8(stored.dtype())
          ? backend.dequantize(stored, scale, DType::F32)
          : backend.upload(stored, stored.dtype() == DType::F16 ? DType::F32 : stored.dtype());
  if (w.dtype() != DType::F32) w = backend.upload(w, DType::F32);  // converted on the device
  lora->apply(canonical, w, backend);
  return dtype == DType::F32 ? w : backend.upload(w, dtype);
}

}  // namespace fisdit::models
