#include "models/wan/keymap.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../io/io_test_util.h"
#include "backend/backend.h"

namespace fisdit::wan {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::TempDir;

// Canonical names and shapes of a tiny Wan DiT (dim 8, ffn 16, 2 blocks).
std::vector<std::pair<std::string, Shape>> tiny_wan(int blocks = 2) {
  const int64_t dim = 8, ffn = 16, in = 4, text = 6, freq = 4, out = 4;
  std::vector<std::pair<std::string, Shape>> w = {
      {"patch_embedding.weight", {dim, in, 1, 2, 2}},
      {"patch_embedding.bias", {dim}},
      {"text_embedding.0.weight", {dim, text}},
      {"text_embedding.0.bias", {dim}},
      {"text_embedding.2.weight", {dim, dim}},
      {"text_embedding.2.bias", {dim}},
      {"time_embedding.0.weight", {dim, freq}},
      {"time_embedding.0.bias", {dim}},
      {"time_embedding.2.weight", {dim, dim}},
      {"time_embedding.2.bias", {dim}},
      {"time_projection.1.weight", {6 * dim, dim}},
      {"time_projection.1.bias", {6 * dim}},
      {"head.modulation", {1, 2, dim}},
      {"head.head.weight", {out * 4, dim}},
      {"head.head.bias", {out * 4}},
  };
  for (int b = 0; b < blocks; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    w.push_back({p + "modulation", {1, 6, dim}});
    for (const char* attn : {"self_attn.", "cross_attn."}) {
      for (const char* proj : {"q", "k", "v", "o"}) {
        w.push_back({p + attn + proj + ".weight", {dim, dim}});
        w.push_back({p + attn + proj + ".bias", {dim}});
      }
      w.push_back({p + attn + "norm_q.weight", {dim}});
      w.push_back({p + attn + "norm_k.weight", {dim}});
    }
    w.push_back({p + "norm3.weight", {dim}});
    w.push_back({p + "norm3.bias", {dim}});
    w.push_back({p + "ffn.0.weight", {ffn, dim}});
    w.push_back({p + "ffn.0.bias", {ffn}});
    w.push_back({p + "ffn.2.weight", {dim, ffn}});
    w.push_back({p + "ffn.2.bias", {dim}});
  }
  return w;
}

// Values exactly representable in BF16 (4 significant bits), distinct per tensor (exponent).
Tensor tensor_values(const Shape& shape, int index) {
  Tensor t = Tensor::zeros(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = std::ldexp(1.0f + static_cast<float>(i % 8) / 8.0f, index - 40);
  return t;
}

Tensor to_bf16(const Tensor& t) {
  Tensor out = Tensor::zeros(t.shape(), DType::BF16);
  auto* dst = out.data_as<uint16_t>();
  for (int64_t i = 0; i < t.numel(); ++i) dst[i] = float_to_bf16(t.f32()[i]);
  return out;
}

// Writes the tiny DiT under `map`'s names and returns the file.
std::string write_tiny_wan(const TempDir& dir, const KeyMap& map, bool bf16) {
  NamedTensors tensors;
  int index = 0;
  for (const auto& [name, shape] : tiny_wan()) {
    Tensor t = tensor_values(shape, index++);
    tensors.emplace_back(map.stored_name(name), bf16 ? to_bf16(t) : t);
  }
  const std::string path = dir.file("dit.safetensors");
  write_safetensors(path, tensors);
  return path;
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Shape>>& w,
                                  const KeyMap& map) {
  std::vector<std::string> out;
  for (const auto& [name, shape] : w) out.push_back(map.stored_name(name));
  return out;
}

std::string fixture(const std::string& name) {
  return std::string(FISDIT_TEST_DATA) + "/wan/" + name;
}

// ---------------------------------------------------------------------------------------------

TEST(KeyMapTest, DiffusersNamesMatchTheConversionScript) {
  const KeyMap map{KeyLayout::Diffusers, ""};
  const std::pair<const char*, const char*> expected[] = {
      {"patch_embedding.weight", "patch_embedding.weight"},
      {"time_embedding.0.weight", "condition_embedder.time_embedder.linear_1.weight"},
      {"time_embedding.2.bias", "condition_embedder.time_embedder.linear_2.bias"},
      {"time_projection.1.weight", "condition_embedder.time_proj.weight"},
      {"text_embedding.0.bias", "condition_embedder.text_embedder.linear_1.bias"},
      {"text_embedding.2.weight", "condition_embedder.text_embedder.linear_2.weight"},
      {"head.modulation", "scale_shift_table"},
      {"head.head.weight", "proj_out.weight"},
      {"head.head.bias", "proj_out.bias"},
      {"blocks.3.modulation", "blocks.3.scale_shift_table"},
      {"blocks.3.self_attn.q.weight", "blocks.3.attn1.to_q.weight"},
      {"blocks.3.self_attn.k.bias", "blocks.3.attn1.to_k.bias"},
      {"blocks.3.self_attn.v.weight", "blocks.3.attn1.to_v.weight"},
      {"blocks.3.self_attn.o.bias", "blocks.3.attn1.to_out.0.bias"},
      {"blocks.3.self_attn.norm_q.weight", "blocks.3.attn1.norm_q.weight"},
      {"blocks.3.self_attn.norm_k.weight", "blocks.3.attn1.norm_k.weight"},
      {"blocks.3.cross_attn.q.weight", "blocks.3.attn2.to_q.weight"},
      {"blocks.3.cross_attn.o.weight", "blocks.3.attn2.to_out.0.weight"},
      {"blocks.3.cross_attn.norm_k.weight", "blocks.3.attn2.norm_k.weight"},
      {"blocks.12.cross_attn.k_img.weight", "blocks.12.attn2.add_k_proj.weight"},
      {"blocks.12.cross_attn.norm_k_img.weight", "blocks.12.attn2.norm_added_k.weight"},
      {"blocks.3.norm3.weight", "blocks.3.norm2.weight"},
      {"blocks.3.norm3.bias", "blocks.3.norm2.bias"},
      {"blocks.3.ffn.0.weight", "blocks.3.ffn.net.0.proj.weight"},
      {"blocks.3.ffn.2.bias", "blocks.3.ffn.net.2.bias"},
      {"img_emb.proj.1.weight", "condition_embedder.image_embedder.ff.net.0.proj.weight"},
  };
  for (const auto& [canonical, stored] : expected) {
    EXPECT_EQ(map.stored_name(canonical), stored);
    EXPECT_EQ(map.canonical_name(stored), canonical);
  }
  const KeyMap comfy{KeyLayout::Diffusers, "model.diffusion_model."};
  EXPECT_EQ(comfy.stored_name("blocks.0.ffn.0.weight"),
            "model.diffusion_model.blocks.0.ffn.net.0.proj.weight");
}

TEST(KeyMapTest, OfficialNamesOnlyGainThePrefix) {
  const KeyMap map{KeyLayout::Official, "diffusion_model."};
  EXPECT_EQ(map.stored_name("blocks.0.norm3.weight"), "diffusion_model.blocks.0.norm3.weight");
  EXPECT_EQ(map.canonical_name("diffusion_model.head.head.bias"), "head.head.bias");
  EXPECT_EQ(map.canonical_name("other.head.head.bias"), std::nullopt);
  EXPECT_EQ(layout_name(KeyLayout::Official), "official");
  EXPECT_EQ(layout_name(KeyLayout::Diffusers), "diffusers");
}

TEST(KeyMapTest, CanonicalNameInvertsStoredNameForTheWholeModel) {
  for (KeyLayout layout : {KeyLayout::Official, KeyLayout::Diffusers}) {
    for (const std::string& prefix : wan_prefixes()) {
      const KeyMap map{layout, prefix};
      for (const auto& [name, shape] : tiny_wan()) {
        EXPECT_EQ(map.canonical_name(map.stored_name(name)), name)
            << layout_name(layout) << " '" << prefix << "'";
      }
    }
  }
}

TEST(KeyMapTest, DetectsEachLayoutUnderEachPrefix) {
  for (KeyLayout layout : {KeyLayout::Official, KeyLayout::Diffusers}) {
    for (const std::string& prefix : wan_prefixes()) {
      SCOPED_TRACE(layout_name(layout) + " '" + prefix + "'");
      const std::vector<std::string> names = names_of(tiny_wan(3), KeyMap{layout, prefix});
      const KeyMap map = detect_wan_layout(names);
      EXPECT_EQ(map.layout, layout);
      EXPECT_EQ(map.prefix, prefix);
      EXPECT_EQ(count_wan_blocks(names, map), 3);
    }
  }
}

TEST(KeyMapTest, DetectsComfyUIOfficialNames) {
  const std::vector<std::string> names = {
      "model.diffusion_model.patch_embedding.weight",
      "model.diffusion_model.blocks.0.self_attn.q.weight",
      "model.diffusion_model.blocks.1.self_attn.q.weight",
      "model.diffusion_model.head.head.weight",
  };
  const KeyMap map = detect_wan_layout(names);
  EXPECT_EQ(map.layout, KeyLayout::Official);
  EXPECT_EQ(map.prefix, "model.diffusion_model.");
  EXPECT_EQ(count_wan_blocks(names, map), 2);
}

TEST(KeyMapTest, ExplicitPrefix) {
  const std::vector<std::string> names = names_of(tiny_wan(), KeyMap{KeyLayout::Diffusers, "x."});
  const KeyMap map = detect_wan_layout(names, std::string("x."));
  EXPECT_EQ(map.layout, KeyLayout::Diffusers);
  EXPECT_EQ(map.prefix, "x.");
  // Not one of the prefixes tried by default.
  EXPECT_THROW(detect_wan_layout(names), Error);
  const std::string msg = error_of([&] { detect_wan_layout(names, std::string("y.")); });
  EXPECT_TRUE(contains(msg, "patch_embedding.weight"));
  EXPECT_TRUE(contains(msg, "'y.'"));
}

TEST(KeyMapTest, NeitherLayoutThrows) {
  const std::string msg = error_of([] {
    detect_wan_layout({"encoder.conv1.weight", "decoder.conv1.weight"});
  });
  EXPECT_TRUE(contains(msg, "no Wan DiT tensors found"));
  EXPECT_TRUE(contains(msg, "'', 'model.diffusion_model.', 'diffusion_model.', 'model.'"));
  const std::string markers = error_of([] {
    detect_wan_layout({"patch_embedding.weight", "something.else"});
  });
  EXPECT_TRUE(contains(markers, "neither"));
  const std::string ambiguous = error_of([] {
    detect_wan_layout({"patch_embedding.weight", "model.patch_embedding.weight"});
  });
  EXPECT_TRUE(contains(ambiguous, "ambiguous"));
}

TEST(KeyMapTest, DetectOnACheckpointNamesIt) {
  TempDir dir;
  const std::string path = dir.file("vae.safetensors");
  write_safetensors(path, {{"encoder.conv1.weight", Tensor::zeros({1})}});
  const std::string msg = error_of([&] { detect_wan_layout(Checkpoint::open(path)); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "no Wan DiT tensors found"));
}

TEST(KeyMapTest, CountBlocks) {
  const KeyMap map{KeyLayout::Official, ""};
  EXPECT_EQ(count_wan_blocks({"patch_embedding.weight"}, map), 0);
  EXPECT_EQ(count_wan_blocks({"blocks.1.x", "blocks.0.y", "blocks.1.z", "blocksx.5.a"}, map), 2);
  const std::string gap = error_of([&] { count_wan_blocks({"blocks.0.a", "blocks.2.a"}, map); });
  EXPECT_TRUE(contains(gap, "block 1 is missing"));
  EXPECT_THROW(count_wan_blocks({"blocks.99999999999.a"}, map), Error);
}

TEST(KeyMapTest, FixtureFiles) {
  for (const char* file :
       {"dit_t2v_tiny.safetensors", "dit_i2v_tiny.safetensors", "dit_ti2v_tiny.safetensors"}) {
    SCOPED_TRACE(file);
    const Checkpoint ckpt = Checkpoint::open(fixture(file));
    const KeyMap detected = detect_wan_layout(ckpt);
    EXPECT_EQ(detected.layout, KeyLayout::Official);
    EXPECT_EQ(detected.prefix, "model.");
    const KeyMap explicit_map = detect_wan_layout(ckpt, std::string("model."));
    EXPECT_EQ(explicit_map.prefix, "model.");
    EXPECT_EQ(count_wan_blocks(ckpt.names(), explicit_map), 4);
    const std::string msg = error_of([&] { detect_wan_layout(ckpt, std::string("")); });
    EXPECT_TRUE(contains(msg, fixture(file)));
  }
}

// ---------------------------------------------------------------------------------------------

TEST(WeightSourceTest, LoadsEveryCanonicalTensor) {
  for (KeyLayout layout : {KeyLayout::Official, KeyLayout::Diffusers}) {
    SCOPED_TRACE(layout_name(layout));
    TempDir dir;
    const KeyMap map{layout, "model.diffusion_model."};
    const std::string path = write_tiny_wan(dir, map, /*bf16=*/layout == KeyLayout::Diffusers);
    const Checkpoint ckpt = Checkpoint::open(path);
    const KeyMap detected = detect_wan_layout(ckpt);
    EXPECT_EQ(detected.layout, layout);
    EXPECT_EQ(detected.prefix, "model.diffusion_model.");
    const WeightSource source = dit_weights(ckpt, detected);
    int index = 0;
    for (const auto& [name, shape] : tiny_wan()) {
      ASSERT_TRUE(source.has(name)) << name;
      const Tensor t = source.get(name, shape);
      EXPECT_EQ(t.dtype(), DType::F32);
      EXPECT_EQ(t.shape(), shape);
      EXPECT_EQ(rel_l2(t, tensor_values(shape, index++)), 0.0) << name;
    }
  }
}

TEST(WeightSourceTest, MissingTensor) {
  TempDir dir;
  const KeyMap map{KeyLayout::Diffusers, ""};
  const std::string path = write_tiny_wan(dir, map, false);
  const WeightSource source = dit_weights(Checkpoint::open(path), map);
  EXPECT_FALSE(source.has("blocks.7.ffn.0.weight"));
  EXPECT_EQ(source.info("blocks.7.ffn.0.weight"), nullptr);
  const std::string msg = error_of([&] { source.get("blocks.7.ffn.0.weight", {16, 8}); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "tensor 'blocks.7.ffn.net.0.proj.weight' (blocks.7.ffn.0.weight)"));
  EXPECT_TRUE(contains(msg, "is missing"));
}

TEST(WeightSourceTest, MisshapedTensor) {
  TempDir dir;
  const KeyMap map{KeyLayout::Official, "model."};
  const std::string path = write_tiny_wan(dir, map, false);
  const WeightSource source = dit_weights(Checkpoint::open(path), map);
  const std::string msg = error_of([&] { source.get("blocks.1.ffn.2.weight", {8, 32}); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "tensor 'model.blocks.1.ffn.2.weight' (blocks.1.ffn.2.weight)"));
  EXPECT_TRUE(contains(msg, "has shape [8, 16], expected [8, 32]"));
}

TEST(WeightSourceTest, ScaledFp8Weights) {
  TempDir dir;
  const std::string path = dir.file("fp8.safetensors");
  Tensor w = Tensor::zeros({2, 2}, DType::F8_E4M3);
  const uint8_t bits[] = {0x38, 0x40, 0xb8, 0x7e};  // 1, 2, -1, 448
  std::memcpy(w.raw(), bits, 4);
  Tensor unscaled = Tensor::zeros({2}, DType::F8_E4M3);
  std::memcpy(unscaled.raw(), bits, 2);
  write_safetensors(path, {{"blocks.0.ffn.0.weight", w},
                           {"blocks.0.ffn.0.scale_weight", Tensor::from_vector({0.5f}, {1})},
                           {"blocks.0.ffn.2.weight", unscaled},
                           {"blocks.0.ffn.2.scale_weight", Tensor::zeros({2})}});
  const WeightSource source(Checkpoint::open(path));
  EXPECT_EQ(source.get("blocks.0.ffn.0.weight", {2, 2}).to_vector(),
            (std::vector<float>{0.5f, 1.0f, -0.5f, 224.0f}));
  std::string msg = error_of([&] { source.get("blocks.0.ffn.2.weight"); });
  EXPECT_TRUE(contains(msg, "'blocks.0.ffn.2.scale_weight'"));
  EXPECT_TRUE(contains(msg, "single value"));
  // As stored for an upload: the fp8 codes and their scale, which a backend's dequantize turns
  // into get()'s values; a shape or scale problem is the same error.
  float scale = 0.0f;
  const Tensor f = source.get_stored("blocks.0.ffn.0.weight", {2, 2}, scale);
  EXPECT_EQ(f.dtype(), DType::F8_E4M3);
  EXPECT_EQ(scale, 0.5f);
  EXPECT_EQ(std::memcmp(f.raw(), bits, 4), 0);
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  EXPECT_EQ(cpu->dequantize(f, scale, DType::F32).to_vector(),
            (std::vector<float>{0.5f, 1.0f, -0.5f, 224.0f}));
  msg = error_of([&] { source.get_stored("blocks.0.ffn.2.weight", {2}, scale); });
  EXPECT_TRUE(contains(msg, "single value"));
  msg = error_of([&] { source.get_stored("blocks.0.ffn.0.weight", {4}, scale); });
  EXPECT_TRUE(contains(msg, "has shape [2, 2], expected [4]"));
}

TEST(WeightSourceTest, FixtureWeights) {
  const Checkpoint ckpt = Checkpoint::open(fixture("dit_t2v_tiny.safetensors"));
  const WeightSource source = dit_weights(ckpt, detect_wan_layout(ckpt, std::string("model.")));
  const Tensor q = source.get("blocks.0.self_attn.q.weight", {128, 128});
  EXPECT_EQ(rel_l2(q, ckpt.tensor("model.blocks.0.self_attn.q.weight")), 0.0);
  EXPECT_EQ(source.get("patch_embedding.weight", {128, 16, 1, 2, 2}).numel(), 128 * 16 * 4);
  EXPECT_EQ(source.get("head.modulation", {1, 2, 128}).numel(), 256);
  EXPECT_TRUE(contains(error_of([&] {
                         source.get("blocks.0.modulation", {1, 6, 64});
                       }),
                       "has shape [1, 6, 128], expected [1, 6, 64]"));
}

}  // namespace
}  // namespace fisdit::wan
