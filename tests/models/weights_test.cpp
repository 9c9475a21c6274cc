// models/weights.h, the one way a stored weight reaches a backend: on the CPU every stored dtype
// (f32, bf16, f16, f64, fp8 with and without a ComfyUI scale) gives the host fp32 values the
// earlier per-model code gave (WeightSource::get, plus LoraMerge::apply for a LoRA), bit for bit;
// errors name the tensor. The GPU side of the same calls runs in tests/cuda (dit_test, t5_test).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../io/io_test_util.h"
#include "backend/backend.h"
#include "core/dtype.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/lora.h"
#include "models/weights.h"
#include "random_tensor.h"

namespace fisdit {
namespace {

const Shape kShape = {8, 6};

using modeltest::random_tensor;

using iotest::error_of;

// Same shape and the same bits in every element.
::testing::AssertionResult same_bits(const Tensor& got, const Tensor& want) {
  if (got.shape() != want.shape() || got.dtype() != DType::F32 || want.dtype() != DType::F32)
    return ::testing::AssertionFailure()
           << shape_str(got.shape()) << " " << dtype_name(got.dtype()) << " vs "
           << shape_str(want.shape()) << " " << dtype_name(want.dtype());
  if (std::memcmp(got.raw(), want.raw(), static_cast<size_t>(got.numel()) * sizeof(float)) != 0)
    return ::testing::AssertionFailure() << "values differ";
  return ::testing::AssertionSuccess();
}

// One weight stored in each dtype, and the fp32 values each stands for.
struct Stored {
  std::string name;
  Tensor values;  // what the stored tensor means, host F32
};

class Weights : public ::testing::Test {
 protected:
  void SetUp() override {
    const Tensor w = random_tensor(kShape, 1, 0.5f);
    NamedTensors file;
    auto add = [&](const std::string& name, const Tensor& stored, const Tensor& values) {
      file.push_back({name, stored});
      stored_.push_back({name, values});
    };
    add("f32.weight", w, w);
    Tensor bf16 = Tensor::zeros(kShape, DType::BF16), f16 = Tensor::zeros(kShape, DType::F16),
           f64 = Tensor::zeros(kShape, DType::F64), e4m3 = Tensor::zeros(kShape, DType::F8_E4M3);
    Tensor bf16_v = Tensor::zeros(kShape), f16_v = Tensor::zeros(kShape),
           f64_v = Tensor::zeros(kShape), e4m3_v = Tensor::zeros(kShape),
           scaled_v = Tensor::zeros(kShape);
    const float scale = 0.0137f;
    for (int64_t i = 0; i < w.numel(); ++i) {
      const float x = w.f32()[i];
      bf16.data_as<uint16_t>()[i] = float_to_bf16(x);
      bf16_v.f32()[i] = bf16_to_float(float_to_bf16(x));
      f16.data_as<uint16_t>()[i] = float_to_f16(x);
      f16_v.f32()[i] = f16_to_float(float_to_f16(x));
      f64.data_as<double>()[i] = static_cast<double>(x) / 3.0;
      f64_v.f32()[i] = static_cast<float>(static_cast<double>(x) / 3.0);
      const uint8_t code = float_to_f8e4m3(x / scale);
      e4m3.data_as<uint8_t>()[i] = code;
      e4m3_v.f32()[i] = f8e4m3_to_float(code);
      scaled_v.f32()[i] = f8e4m3_to_float(code) * scale;
    }
    add("bf16.weight", bf16, bf16_v);
    add("f16.weight", f16, f16_v);
    add("f64.weight", f64, f64_v);
    add("fp8.weight", e4m3, e4m3_v);  // no scale_weight: the codes' values
    add("fp8_scaled.weight", e4m3, scaled_v);
    file.push_back({"fp8_scaled.scale_weight", Tensor::from_vector({scale}, {})});
    file.push_back({"fp8_bad.weight", e4m3});
    file.push_back({"fp8_bad.scale_weight", Tensor::from_vector({1, 2}, {2})});
    path_ = ::testing::TempDir() + "/fisdit_weights_test.safetensors";
    write_safetensors(path_, file);
  }

  WeightSource source() const { return WeightSource(Checkpoint::open(path_)); }

  std::string path_;
  std::vector<Stored> stored_;
  std::unique_ptr<Backend> cpu_ = make_cpu_backend();
};

TEST_F(Weights, EveryStoredDtypeGivesItsHostF32Values) {
  const WeightSource ws = source();
  for (const Stored& s : stored_) {
    SCOPED_TRACE(s.name);
    const Tensor host = models::host_weight(ws, s.name, kShape);
    EXPECT_TRUE(same_bits(host, s.values));
    EXPECT_TRUE(same_bits(host, ws.get(s.name, kShape)));  // the DiT's earlier CPU path
    const Tensor loaded = models::load_weight(ws, s.name, kShape, *cpu_, DType::F32);
    EXPECT_EQ(loaded.device(), Device::CPU);
    EXPECT_TRUE(same_bits(loaded, s.values));
    // From the stored tensor and its scale (umT5's per-block path): the same values.
    float scale = 1.0f;
    const Tensor raw = ws.get_stored(s.name, kShape, scale);
    EXPECT_TRUE(same_bits(models::upload_weight(raw, scale, *cpu_, DType::F32), s.values));
    EXPECT_TRUE(same_bits(models::widen_to_f32(raw, scale), s.values));
  }
}

TEST_F(Weights, HostWeightsAreCopiesButAnUnscaledF32UploadSharesTheStoredTensor) {
  const WeightSource ws = source();
  Tensor w = models::host_weight(ws, "f32.weight", kShape);
  w.f32()[0] += 1.0f;  // writable, and the file is untouched
  EXPECT_TRUE(same_bits(ws.get("f32.weight", kShape), stored_[0].values));
  float scale = 1.0f;
  const Tensor raw = ws.get_stored("f32.weight", kShape, scale);
  EXPECT_EQ(models::upload_weight(raw, 1.0f, *cpu_, DType::F32).raw(), raw.raw());
  // A scale on a non-fp8 weight (umT5 allows one) is applied in fp32 on the host.
  const Tensor halved = models::upload_weight(raw, 0.5f, *cpu_, DType::F32);
  for (int64_t i = 0; i < halved.numel(); ++i) ASSERT_EQ(halved.f32()[i], raw.f32()[i] * 0.5f) << i;
  // The CPU backend keeps every weight in fp32.
  EXPECT_THROW(models::upload_weight(raw, 1.0f, *cpu_, DType::BF16), Error);
}

TEST_F(Weights, ALoraIsMergedInFp32AsTheEarlierPathMergedIt) {
  const int64_t rank = 2;
  const std::string lora_path = ::testing::TempDir() + "/fisdit_weights_test_lora.safetensors";
  NamedTensors lora_file;
  std::vector<std::pair<std::string, Shape>> params;
  for (const Stored& s : stored_) {
    const std::string module = s.name.substr(0, s.name.size() - 7);  // minus ".weight"
    lora_file.push_back({module + ".lora_down.weight", random_tensor({rank, kShape[1]}, 2, 0.3f)});
    lora_file.push_back({module + ".lora_up.weight", random_tensor({kShape[0], rank}, 3, 0.3f)});
    lora_file.push_back({module + ".alpha", Tensor::from_vector({1.0f}, {})});
    params.push_back({s.name, kShape});
  }
  params.push_back({"untouched.weight", kShape});
  write_safetensors(lora_path, lora_file);
  const LoraMerge lora({{lora_path, 0.7f}}, params);
  const WeightSource ws = source();
  for (const Stored& s : stored_) {
    SCOPED_TRACE(s.name);
    Tensor before = ws.get(s.name, kShape);  // the DiT's earlier CPU path: get, then apply
    lora.apply(s.name, before);
    const Tensor merged = models::load_weight(ws, s.name, kShape, *cpu_, DType::F32, &lora);
    EXPECT_TRUE(same_bits(merged, before));
    EXPECT_TRUE(same_bits(models::host_weight(ws, s.name, kShape, &lora), before));
    // W + 0.7 * (alpha / rank) * up @ down, in double: the fp32 merge is within rounding.
    const Tensor down = lora_file[0].second, up = lora_file[1].second;
    double err = 0, norm = 0;
    for (int64_t r = 0; r < kShape[0]; ++r)
      for (int64_t c = 0; c < kShape[1]; ++c) {
        double d = 0;
        for (int64_t k = 0; k < rank; ++k)
          d += static_cast<double>(up.f32()[r * rank + k]) * down.f32()[k * kShape[1] + c];
        const double want = s.values.f32()[r * kShape[1] + c] + 0.7 * (1.0 / rank) * d;
        const double diff = merged.f32()[r * kShape[1] + c] - want;
        err += diff * diff;
        norm += want * want;
      }
    EXPECT_LE(std::sqrt(err / norm), 1e-6);  // fp32 rounding of a rank-2 update: ~1e-7
    EXPECT_FALSE(same_bits(merged, s.values));
  }
}

TEST_F(Weights, ErrorsNameTheTensor) {
  const WeightSource ws = source();
  const std::string missing = error_of([&] { models::host_weight(ws, "nope.weight", kShape); });
  EXPECT_NE(missing.find(path_ + ": tensor 'nope.weight' (nope.weight) is missing"),
            std::string::npos)
      << missing;
  const std::string shape = error_of([&] {
    models::load_weight(ws, "bf16.weight", {6, 8}, *cpu_, DType::F32);
  });
  EXPECT_NE(shape.find("'bf16.weight' (bf16.weight) has shape [8, 6], expected [6, 8]"),
            std::string::npos)
      << shape;
  const std::string scale =
      error_of([&] { models::load_weight(ws, "fp8_bad.weight", kShape, *cpu_, DType::F32); });
  EXPECT_NE(scale.find("'fp8_bad.scale_weight' (scale of fp8_bad.weight)"), std::string::npos)
      << scale;
  // Through a name map, both names.
  const WeightSource mapped(Checkpoint::open(path_),
                            [](const std::string& canonical) { return "f16." + canonical; });
  const std::string renamed = error_of([&] { models::host_weight(mapped, "q", kShape); });
  EXPECT_NE(renamed.find("tensor 'f16.q' (q) is missing"), std::string::npos) << renamed;
}

}  // namespace
}  // namespace fisdit
