#pragma once
// A weight as ComfyUI's "scaled fp8" files store it, for the tests that build such files.
#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "io/safetensors.h"

namespace fisdit::fp8test {

// Appends `w` (host F32, name ending in ".weight") to `out`: `name` holds the F8_E4M3 codes of
// W / s with s = max|W| / 448, `<name minus .weight>.scale_weight` holds s. Returns the values
// the file stands for (code * s in fp32).
inline Tensor append_scaled(NamedTensors& out, const std::string& name, const Tensor& w) {
  float max_abs = 0;
  for (int64_t i = 0; i < w.numel(); ++i) max_abs = std::max(max_abs, std::fabs(w.f32()[i]));
  const float scale = max_abs / 448.0f;
  Tensor f8 = Tensor::zeros(w.shape(), DType::F8_E4M3);
  Tensor deq = Tensor::zeros(w.shape());
  for (int64_t i = 0; i < w.numel(); ++i) {
    const uint8_t code = float_to_f8e4m3(w.f32()[i] / scale);
    f8.data_as<uint8_t>()[i] = code;
    deq.f32()[i] = f8e4m3_to_float(code) * scale;
  }
  out.push_back({name, f8});
  out.push_back(
      {name.substr(0, name.size() - 7) + ".scale_weight", Tensor::from_vector({scale}, {})});
  return deq;
}

// The DiT fixture `fixture` rewritten as a ComfyUI scaled-fp8 file at `out`: model.diffusion_model.
// keys, every 2-D block matrix F8_E4M3 with its scale_weight (append_scaled), the rest as they
// are, the fixture's config in the metadata.
inline void write_scaled_dit(const std::string& fixture, const std::string& out) {
  const auto f = SafetensorsFile::open(fixture);
  NamedTensors q = {{"scaled_fp8", Tensor::zeros({0}, DType::F8_E4M3)}};
  for (const TensorInfo& info : f->tensors()) {
    if (info.name.rfind("model.", 0) != 0) continue;
    const std::string name = "model.diffusion_model." + info.name.substr(6);
    const Tensor w = f->tensor_f32(info.name);
    if (w.ndim() == 2 && name.find(".blocks.") != std::string::npos)
      append_scaled(q, name, w);
    else
      q.push_back({name, w});
  }
  write_safetensors(out, q, f->metadata());
}

}  // namespace fisdit::fp8test
