#pragma once
// The HunyuanVideo 1.5 DiT fixture (tests/data/hunyuan15/dit_tiny.safetensors) as the engine takes
// it: the inputs of a case with each text-side stream reduced to its valid tokens.
#include <algorithm>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "models/model.h"

namespace fisdit::test {

inline std::string fixture_path() {
  return std::string(FISDIT_TEST_DATA) + "/hunyuan15/dit_tiny.safetensors";
}

// The rows of `t` whose mask value is 1 (the fixture stores padded streams and their masks;
// the engine takes valid tokens only).
inline Tensor valid_rows(const Tensor& t, const Tensor& mask) {
  const std::vector<float> m = mask.to_vector();
  std::vector<int64_t> keep;
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i] != 0.0f) keep.push_back(static_cast<int64_t>(i));
  const int64_t w = t.dim(1);
  Tensor out = Tensor::zeros({static_cast<int64_t>(keep.size()), w});
  for (size_t r = 0; r < keep.size(); ++r)
    std::copy(t.f32() + keep[r] * w, t.f32() + (keep[r] + 1) * w, out.f32() + r * w);
  return out;
}

struct Case {
  Tensor x;
  models::Timestep time;
  models::TextContext text;
};

inline Case read_case(const SafetensorsFile& f, const std::string& name) {
  const std::string in = name + ".input.";
  Case c;
  c.x = f.tensor_f32(in + "x");
  c.time.t = f.tensor_f32(in + "t");
  if (f.contains(in + "r")) c.time.r = f.tensor_f32(in + "r").to_vector()[0];
  c.text.states = valid_rows(f.tensor_f32(in + "text"), f.tensor_f32(in + "text_mask"));
  const Tensor byt5 = valid_rows(f.tensor_f32(in + "byt5"), f.tensor_f32(in + "byt5_mask"));
  if (byt5.dim(0) > 0) c.text.extra["byt5"] = byt5;
  if (name == "i2v") c.text.extra["vision"] = f.tensor_f32(in + "vision");  // t2v: masked
  return c;
}

// Channels [begin, end) of a [C, F, H, W] tensor (the fixture's x is [latent ; condition ; mask]).
inline Tensor channels(const Tensor& x, int64_t begin, int64_t end) {
  const int64_t cells = x.numel() / x.dim(0);
  return x.reshape({x.dim(0), cells})
      .slice_rows(begin, end)
      .clone()
      .reshape({end - begin, x.dim(1), x.dim(2), x.dim(3)});
}

}  // namespace fisdit::test
