// --model as users have it: sharded directories with config.json, diffusers names, ComfyUI
// prefixes, bare files; the resolved config and the forward must equal the fixture's.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stop_token>

#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/wan/keymap.h"
#include "models/wan/loader.h"

namespace fisdit::wan {
namespace {

namespace fs = std::filesystem;

class WanLoader : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ =
        SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors");
    dir_ = fs::temp_directory_path() /
           ("fisdit_loader_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // The fixture's parameters under `layout` names with `prefix`, split into `shards` files.
  void write_model(const fs::path& dir, KeyLayout layout, const std::string& prefix, int shards,
                   const nlohmann::json* config) {
    fs::create_directories(dir);
    const KeyMap keys{layout, prefix};
    std::vector<NamedTensors> parts(static_cast<size_t>(shards));
    nlohmann::json weight_map = nlohmann::json::object();
    int i = 0;
    for (const TensorInfo& info : fixture_->tensors()) {
      if (info.name.rfind("model.", 0) != 0) continue;
      const std::string stored = keys.stored_name(info.name.substr(6));
      const int s = i++ % shards;
      parts[static_cast<size_t>(s)].push_back({stored, fixture_->tensor(info.name)});
      weight_map[stored] = "part-" + std::to_string(s) + ".safetensors";
    }
    for (int s = 0; s < shards; ++s)
      write_safetensors((dir / ("part-" + std::to_string(s) + ".safetensors")).string(),
                        parts[static_cast<size_t>(s)]);
    std::ofstream(dir / "diffusion_pytorch_model.safetensors.index.json")
        << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}}.dump();
    if (config) std::ofstream(dir / "config.json") << config->dump();
  }

  // config.json as the official release writes it (no text_dim, no patch_size).
  static nlohmann::json official_config() {
    return {{"_class_name", "WanModel"},
            {"_diffusers_version", "0.33.0"},
            {"dim", 128},
            {"eps", 1e-06},
            {"ffn_dim", 256},
            {"freq_dim", 256},
            {"in_dim", 16},
            {"model_type", "t2v"},
            {"num_heads", 2},
            {"num_layers", 4},
            {"out_dim", 16},
            {"text_len", 32}};
  }

  Tensor forward(const ModelSource& src) {
    auto be = make_cpu_backend();
    auto dit = load_dit(src, *be);
    const Tensor text = dit->embed_text(fixture_->tensor_f32("input.context"));
    return be->download(
        dit->forward(fixture_->tensor_f32("input.x"), fixture_->tensor_f32("input.t"), text));
  }

  std::shared_ptr<SafetensorsFile> fixture_;
  fs::path dir_;
};

TEST_F(WanLoader, ShardedOfficialDirectoryTakesOmittedValuesFromShapes) {
  const nlohmann::json cfg = official_config();
  write_model(dir_ / "official", KeyLayout::Official, "", 3, &cfg);
  const ModelSource src = open_model((dir_ / "official").string());
  EXPECT_NE(src.config_origin.find("config.json"), std::string::npos);
  EXPECT_EQ(src.config.text_dim, 48);  // from text_embedding.0.weight
  EXPECT_EQ(src.config.patch_size, (std::array<int, 3>{1, 2, 2}));
  EXPECT_TRUE(check_model(src).empty());
  EXPECT_LE(rel_l2(forward(src), fixture_->tensor_f32("expected.out")), 1e-5);
}

TEST_F(WanLoader, DiffusersDirectoryGivesTheSameModel) {
  const nlohmann::json cfg = {{"_class_name", "WanTransformer3DModel"},
                              {"num_attention_heads", 2},
                              {"attention_head_dim", 64},
                              {"in_channels", 16},
                              {"out_channels", 16},
                              {"ffn_dim", 256},
                              {"num_layers", 4},
                              {"text_dim", 48},
                              {"freq_dim", 256},
                              {"patch_size", {1, 2, 2}},
                              {"cross_attn_norm", true},
                              {"eps", 1e-6}};
  write_model(dir_ / "diffusers", KeyLayout::Diffusers, "", 2, &cfg);
  ModelSource src = open_model((dir_ / "diffusers").string());
  EXPECT_EQ(src.keys.layout, KeyLayout::Diffusers);
  src.config.text_len = 32;  // diffusers configs have no text_len; the fixture model uses 32
  EXPECT_LE(rel_l2(forward(src), fixture_->tensor_f32("expected.out")), 1e-5);
}

TEST_F(WanLoader, ComfyPrefixedBareFileInfersTheConfigFromShapes) {
  write_model(dir_ / "comfy", KeyLayout::Official, "model.diffusion_model.", 1, nullptr);
  const std::string file = (dir_ / "comfy" / "part-0.safetensors").string();
  const ModelSource src = open_model(file);
  EXPECT_EQ(src.config_origin, "tensor shapes");
  EXPECT_EQ(src.keys.prefix, "model.diffusion_model.");
  EXPECT_EQ(src.config.dim, 128);
  EXPECT_EQ(src.config.ffn_dim, 256);
  EXPECT_EQ(src.config.num_layers, 4);
  EXPECT_EQ(src.config.in_dim, 16);
  EXPECT_EQ(src.config.out_dim, 16);
  EXPECT_EQ(src.config.text_dim, 48);
  EXPECT_EQ(src.config.task, models::Task::T2V);
  EXPECT_TRUE(check_model(src).empty());
}

TEST_F(WanLoader, ConfigDisagreeingWithTheTensorsIsAnError) {
  nlohmann::json cfg = official_config();
  cfg["text_dim"] = 4096;
  write_model(dir_ / "bad", KeyLayout::Official, "", 1, &cfg);
  try {
    open_model((dir_ / "bad").string());
    FAIL() << "accepted text_dim 4096 for 48-wide tensors";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("text_dim"), std::string::npos) << e.what();
  }
}

TEST_F(WanLoader, MissingAndMisshapedTensorsAreNamed) {
  // Drop one tensor and misshape another in a single-file model with metadata.
  NamedTensors t;
  for (const TensorInfo& info : fixture_->tensors()) {
    if (info.name == "model.blocks.2.ffn.0.bias") continue;
    Tensor v = fixture_->tensor(info.name);
    if (info.name == "model.blocks.1.self_attn.q.weight") v = Tensor::zeros({128, 127});
    t.push_back({info.name, v});
  }
  const std::string path = (dir_ / "broken.safetensors").string();
  write_safetensors(path, t, fixture_->metadata());
  const ModelSource src = open_model(path);
  const auto problems = check_model(src);
  ASSERT_EQ(problems.size(), 2u);
  auto be = make_cpu_backend();
  try {
    load_dit(src, *be);
    FAIL() << "loaded a broken model";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_TRUE(msg.find("model.blocks.1.self_attn.q.weight") != std::string::npos ||
                msg.find("model.blocks.2.ffn.0.bias") != std::string::npos)
        << msg;
  }
}

// The host side of a load made ahead (stage_dit, what fisdit generate runs beside the text
// encoder) gives the same model, bit for bit, however much of it was staged; every weight staged
// for the CPU is used, a LoRA included, and each problem is the load's own.
TEST_F(WanLoader, StagedWeightsLoadTheSameModel) {
  NamedTensors t;
  for (const TensorInfo& info : fixture_->tensors())
    t.push_back({info.name, fixture_->tensor(info.name)});
  const std::string path = (dir_ / "dit.safetensors").string();
  write_safetensors(path, t, fixture_->metadata());
  Tensor down = Tensor::zeros({2, 128}), up = Tensor::zeros({128, 2});
  for (int64_t i = 0; i < down.numel(); ++i) down.f32()[i] = 0.01f * static_cast<float>(i % 17);
  for (int64_t i = 0; i < up.numel(); ++i) up.f32()[i] = -0.02f * static_cast<float>(i % 13);
  const std::string lora_path = (dir_ / "lora.safetensors").string();
  write_safetensors(lora_path, {{"blocks.1.self_attn.q.lora_down.weight", down},
                                {"blocks.1.self_attn.q.lora_up.weight", up}});
  const std::vector<LoraSpec> loras = {{lora_path, 0.5f}};
  const ModelSource src = open_model(path);
  auto be = make_cpu_backend();
  const Tensor text_in = fixture_->tensor_f32("input.context");
  const auto run = [&](WanDiT& dit) {
    return be->download(dit.forward(fixture_->tensor_f32("input.x"),
                                    fixture_->tensor_f32("input.t"), dit.embed_text(text_in)));
  };
  const Tensor expected = run(*load_dit(src, *be, loras));
  const auto same = [](const Tensor& a, const Tensor& b) {
    return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
  };
  int64_t all = 0;
  for (const int64_t budget : {int64_t{1} << 40, int64_t{200000}, int64_t{0}}) {
    SCOPED_TRACE(budget);
    StagedDit staged = stage_dit(src, Device::CPU, loras, models::Precision::Default, budget);
    EXPECT_LE(staged.bytes, budget);
    if (budget > 200000) all = staged.bytes;
    EXPECT_EQ(staged.host.empty(), budget == 0);
    EXPECT_TRUE(
        same(run(*load_dit(src, *be, loras, models::Precision::Default, &staged)), expected));
    EXPECT_TRUE(staged.host.empty()) << "every staged weight is used";
  }
  EXPECT_GT(all, 200000) << "the fp32 weights of the whole model";
  // A stop asked for before it starts: nothing staged, the load as usual.
  std::stop_source stop;
  stop.request_stop();
  StagedDit stopped = stage_dit(src, Device::CPU, loras, models::Precision::Default,
                                int64_t{1} << 40, stop.get_token());
  EXPECT_EQ(stopped.bytes, 0);
  EXPECT_TRUE(
      same(run(*load_dit(src, *be, loras, models::Precision::Default, &stopped)), expected));
  // For a GPU the stored bytes are only read; head.modulation (kept on the host) is made.
  StagedDit gpu = stage_dit(src, Device::CUDA, {}, models::Precision::Default, int64_t{1} << 40);
  ASSERT_EQ(gpu.host.size(), 1u);
  EXPECT_EQ(gpu.host.begin()->first, "head.modulation");
  EXPECT_THROW(load_dit(src, *be, {}, models::Precision::Default, &gpu), Error)
      << "staged for another device";
  // The problems the load names, staging names too.
  write_safetensors((dir_ / "wrong.safetensors").string(),
                    {{"blocks.1.self_attn.q.lora_down.weight", Tensor::zeros({2, 96})},
                     {"blocks.1.self_attn.q.lora_up.weight", up}});
  EXPECT_THROW(stage_dit(src, Device::CPU, {{(dir_ / "wrong.safetensors").string(), 1.0f}},
                         models::Precision::Default, int64_t{1} << 40),
               Error);
}

}  // namespace
}  // namespace fisdit::wan
