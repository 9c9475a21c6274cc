// LoRA merge at DiT load time: a random LoRA for the bundled tiny T2V DiT, in each naming scheme,
// must give exactly the model whose weights the test merged itself (in double precision), and
// LoRAs that do not fit the model must be refused naming the file and the key.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "backend/backend.h"
#include "core/dtype.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/lora.h"
#include "models/wan/loader.h"
#include "random_tensor.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;

// Both sides are fp32 DiT forwards on weights that differ only by the rounding of the merge
// (fp32 accumulation over rank 4 here, double rounded once in the test): ~1e-7 relative per
// weight, far below this fp32 bound used by every parity test.
constexpr double kFp32Tolerance = 1e-5;

std::string fixture_path() {
  return std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
}

template <class F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no fisdit::Error>";
}

::testing::AssertionResult has(const std::string& message, const std::string& needle) {
  if (message.find(needle) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << message << "\" lacks \"" << needle << "\"";
}

using modeltest::random_tensor;

Tensor to_bf16(const Tensor& f) {
  Tensor b = Tensor::zeros(f.shape(), DType::BF16);
  for (int64_t i = 0; i < f.numel(); ++i) b.data_as<uint16_t>()[i] = float_to_bf16(f.f32()[i]);
  return b;
}

// One low-rank update (module given by its official path) or full delta.
struct Update {
  std::string module;     // official module path, e.g. "blocks.0.self_attn.q"
  std::string diffusers;  // the same in diffusers naming
  Shape weight;           // shape of the weight it changes
  int64_t rank = 4;
  bool bf16 = false;  // store up/down as bf16 (as released LoRAs often are)
};

struct Scheme {
  const char* name;
  std::string prefix;    // before the module path
  bool diffusers;        // module paths in diffusers naming
  std::string down, up;  // suffixes
  bool alpha;            // write an alpha tensor (2.0) per pair
  bool flat = false;     // kohya's flattened paths: the module path's dots become '_'
};

const Scheme kSchemes[] = {
    {"kohya_comfy", "diffusion_model.", false, ".lora_down.weight", ".lora_up.weight", true},
    {"comfy_full_prefix", "model.diffusion_model.", false, ".lora_A.weight", ".lora_B.weight",
     true},
    {"peft_diffusers", "transformer.", true, ".lora_A.weight", ".lora_B.weight", false},
    {"bare_official", "", false, ".lora_down.weight", ".lora_up.weight", false},
    {"kohya_flat", "lora_unet_", false, ".lora_down.weight", ".lora_up.weight", true, true},
};

std::string module_name(const Scheme& scheme, const std::string& official_or_diffusers) {
  std::string m = official_or_diffusers;
  if (scheme.flat) std::replace(m.begin(), m.end(), '.', '_');
  return scheme.prefix + m;
}

class LoraTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ = SafetensorsFile::open(fixture_path());
    dir_ = fs::temp_directory_path() /
           ("fisdit_lora_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    backend_ = make_cpu_backend();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  Tensor weight(const std::string& canonical) const {
    return fixture_->tensor_f32("model." + canonical);
  }

  static std::vector<Update> updates() {
    return {
        {"blocks.0.self_attn.q", "blocks.0.attn1.to_q", {128, 128}, 4, false},
        {"blocks.1.ffn.0", "blocks.1.ffn.net.0.proj", {256, 128}, 4, true},
        {"blocks.2.cross_attn.v", "blocks.2.attn2.to_v", {128, 128}, 8, false},
        {"blocks.3.self_attn.o", "blocks.3.attn1.to_out.0", {128, 128}, 4, false},
        {"text_embedding.0", "condition_embedder.text_embedder.linear_1", {128, 48}, 4, false},
        {"head.head", "proj_out", {64, 128}, 2, false},
        // Conv3d: down [r, in, kt, kh, kw], up [out, r, 1, 1, 1].
        {"patch_embedding", "patch_embedding", {128, 16, 1, 2, 2}, 4, false},
    };
  }

  // Writes a LoRA in `scheme` and returns the weights merged by the test (double precision) for
  // `strength`, keyed by canonical parameter name. Full deltas (.diff / .diff_b) are added in the
  // official schemes.
  std::map<std::string, Tensor> write_lora(const Scheme& scheme, const std::string& file,
                                           float strength) {
    NamedTensors lora;
    std::map<std::string, Tensor> merged;
    uint32_t seed = 100;
    for (const Update& u : updates()) {
      const std::string module = module_name(scheme, scheme.diffusers ? u.diffusers : u.module);
      const int64_t out = u.weight[0], in = shape_numel(u.weight) / out;
      Shape down_shape{u.rank};
      down_shape.insert(down_shape.end(), u.weight.begin() + 1, u.weight.end());
      Shape up_shape{out, u.rank};
      up_shape.resize(u.weight.size(), 1);
      Tensor down = random_tensor(down_shape, seed++, 0.3f);
      Tensor up = random_tensor(up_shape, seed++, 0.3f);
      if (u.bf16) {
        down = to_bf16(down);
        up = to_bf16(up);
      }
      lora.push_back({module + scheme.down, down});
      lora.push_back({module + scheme.up, up});
      double alpha = static_cast<double>(u.rank);
      if (scheme.alpha) {
        alpha = 2.0;
        lora.push_back({module + ".alpha", Tensor::from_vector({2.0f}, {})});
      }
      const Tensor d = down.to_f32(), p = up.to_f32();
      Tensor w = weight(u.module + ".weight").clone();
      const double scale = static_cast<double>(strength) * alpha / static_cast<double>(u.rank);
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) {
          double acc = 0;
          for (int64_t k = 0; k < u.rank; ++k)
            acc += static_cast<double>(p.f32()[o * u.rank + k]) *
                   static_cast<double>(d.f32()[k * in + i]);
          float& wi = w.f32()[o * in + i];
          wi = static_cast<float>(static_cast<double>(wi) + scale * acc);
        }
      merged[u.module + ".weight"] = w;
    }
    if (!scheme.diffusers) {
      // Full deltas: a norm weight, a bias, and a bare parameter (modulation).
      const std::vector<std::array<std::string, 3>> deltas = {
          {"blocks.0.norm3", ".diff", "blocks.0.norm3.weight"},
          {"blocks.0.self_attn.q", ".diff_b", "blocks.0.self_attn.q.bias"},
          {"blocks.1.modulation", ".diff", "blocks.1.modulation"}};
      for (const auto& [module, suffix, target] : deltas) {
        Tensor base = merged.count(target) ? merged[target] : weight(target).clone();
        const Tensor delta = random_tensor(base.shape(), seed++, 0.1f);
        lora.push_back({module_name(scheme, module) + suffix, delta});
        for (int64_t i = 0; i < base.numel(); ++i)
          base.f32()[i] = static_cast<float>(static_cast<double>(base.f32()[i]) +
                                             static_cast<double>(strength) * delta.f32()[i]);
        merged[target] = base;
      }
    }
    write_safetensors(path(file), lora, {{"ss_network_dim", "4"}});
    return merged;
  }

  // The fixture model with `replaced` weights, as a new safetensors file (same metadata).
  std::string write_model(const std::map<std::string, Tensor>& replaced, const std::string& file) {
    NamedTensors tensors;
    for (const TensorInfo& info : fixture_->tensors()) {
      if (info.name.rfind("model.", 0) != 0) continue;
      const auto it = replaced.find(info.name.substr(6));
      tensors.push_back(
          {info.name, it != replaced.end() ? it->second : fixture_->tensor(info.name)});
    }
    write_safetensors(path(file), tensors, fixture_->metadata());
    return path(file);
  }

  Tensor forward(const std::string& model, const std::vector<LoraSpec>& loras = {}) {
    auto dit = wan::load_dit(wan::open_model(model), *backend_, loras);
    const Tensor text = dit->embed_text(fixture_->tensor_f32("input.context"));
    return backend_->download(
        dit->forward(fixture_->tensor_f32("input.x"), fixture_->tensor_f32("input.t"), text));
  }

  std::shared_ptr<SafetensorsFile> fixture_;
  fs::path dir_;
  std::unique_ptr<Backend> backend_;
};

TEST_F(LoraTest, EveryNamingSchemeEqualsTheModelMergedByTheTest) {
  const Tensor base = forward(fixture_path());
  for (const Scheme& scheme : kSchemes) {
    SCOPED_TRACE(scheme.name);
    const float strength = 0.8f;
    const auto merged = write_lora(scheme, std::string(scheme.name) + ".safetensors", strength);
    const Tensor with_lora =
        forward(fixture_path(), {{path(std::string(scheme.name) + ".safetensors"), strength}});
    const Tensor reference = forward(write_model(merged, std::string(scheme.name) + "_merged.st"));
    const double err = rel_l2(with_lora, reference);
    const double change = rel_l2(with_lora, base);
    std::printf("%-20s rel L2 vs merged %.3g (LoRA moves the output by %.3g)\n", scheme.name, err,
                change);
    EXPECT_LE(err, kFp32Tolerance);
    EXPECT_GT(change, 1e-2);  // the LoRA really changes the model
  }
}

TEST_F(LoraTest, MergedWeightsEqualTheDoublePrecisionMerge) {
  const auto merged = write_lora(kSchemes[0], "l.safetensors", 1.5f);
  const LoraMerge merge =
      wan::dit_lora({{path("l.safetensors"), 1.5f}}, wan::open_model(fixture_path()).config);
  EXPECT_EQ(merge.targets().size(), merged.size());
  EXPECT_EQ(merge.count_for(0), merged.size());
  for (const auto& [name, expected] : merged) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(merge.touches(name));
    Tensor w = weight(name).clone();
    merge.apply(name, w);
    // fp32 accumulation over rank <= 8 of O(0.1) products on O(0.1) weights: a few ulps.
    for (int64_t i = 0; i < w.numel(); ++i)
      ASSERT_NEAR(w.f32()[i], expected.f32()[i], 1e-6f + 1e-6f * std::fabs(expected.f32()[i]))
          << "element " << i;
  }
  EXPECT_FALSE(merge.touches("blocks.3.ffn.2.weight"));
}

TEST_F(LoraTest, SeveralLorasAndStrengthsAddUp) {
  // The same LoRA twice at 0.25 and 0.5 equals it once at 0.75.
  write_lora(kSchemes[0], "l.safetensors", 1.0f);
  const Tensor twice =
      forward(fixture_path(), {{path("l.safetensors"), 0.25f}, {path("l.safetensors"), 0.5f}});
  const Tensor once = forward(fixture_path(), {{path("l.safetensors"), 0.75f}});
  EXPECT_LE(rel_l2(twice, once), kFp32Tolerance);
  // Strength 0 leaves the model as it is.
  EXPECT_LE(
      rel_l2(forward(fixture_path(), {{path("l.safetensors"), 0.0f}}), forward(fixture_path())),
      1e-7);
}

TEST_F(LoraTest, LorasThatDoNotFitAreRefusedNamingFileAndKey) {
  const Tensor d4 = random_tensor({4, 128}, 1, 0.1f), u4 = random_tensor({128, 4}, 2, 0.1f);
  struct Case {
    const char* name;
    NamedTensors tensors;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"absent_block",
       {{"diffusion_model.blocks.9.self_attn.q.lora_down.weight", d4},
        {"diffusion_model.blocks.9.self_attn.q.lora_up.weight", u4}},
       {"LoRA does not match the model", "'diffusion_model.blocks.9.self_attn.q.lora_down.weight'",
        "changes 'blocks.9.self_attn.q.weight', which the model does not have"}},
      {"wrong_up_shape",
       {{"diffusion_model.blocks.0.self_attn.q.lora_down.weight", d4},
        {"diffusion_model.blocks.0.self_attn.q.lora_up.weight", random_tensor({127, 4}, 3, 0.1f)}},
       {"LoRA does not match the model",
        "'diffusion_model.blocks.0.self_attn.q.lora_up.weight' has shape [127, 4], expected "
        "[128, 4]"}},
      {"wrong_down_shape",
       {{"blocks.0.ffn.2.lora_down.weight", d4}, {"blocks.0.ffn.2.lora_up.weight", u4}},
       {"'blocks.0.ffn.2.lora_down.weight' has shape [4, 128], expected [4, 256]",
        "to change 'blocks.0.ffn.2.weight' of shape [128, 256]"}},
      {"rank_disagrees",
       {{"blocks.0.self_attn.k.lora_A.weight", d4},
        {"blocks.0.self_attn.k.lora_B.weight", random_tensor({128, 8}, 5, 0.1f)}},
       {"'blocks.0.self_attn.k.lora_B.weight' has shape [128, 8], expected [128, 4]"}},
      {"half_pair",
       {{"diffusion_model.blocks.0.self_attn.q.lora_up.weight", u4}},
       {"'diffusion_model.blocks.0.self_attn.q.lora_up.weight' has no matching lora_down"}},
      {"unknown_suffix",
       {{"diffusion_model.blocks.0.self_attn.q.lora_mid.weight", d4}},
       {"'diffusion_model.blocks.0.self_attn.q.lora_mid.weight' is not a LoRA tensor"}},
      {"alpha_not_scalar",
       {{"blocks.0.self_attn.q.lora_down.weight", d4},
        {"blocks.0.self_attn.q.lora_up.weight", u4},
        {"blocks.0.self_attn.q.alpha", Tensor::from_vector({1, 2}, {2})}},
       {"'blocks.0.self_attn.q.alpha' has shape [2], expected a single value"}},
      {"pair_on_a_vector",
       {{"blocks.0.norm3.lora_down.weight", d4}, {"blocks.0.norm3.lora_up.weight", u4}},
       {"low-rank update of 'blocks.0.norm3.weight' of shape [128], which is not a matrix"}},
      {"diff_shape",
       {{"diffusion_model.blocks.0.norm3.diff", random_tensor({64}, 6, 0.1f)}},
       {"'diffusion_model.blocks.0.norm3.diff' has shape [64], expected [128]"}},
      {"integer_tensor",
       {{"blocks.0.self_attn.q.lora_down.weight", Tensor::zeros({4, 128}, DType::I64)},
        {"blocks.0.self_attn.q.lora_up.weight", u4}},
       {"has dtype I64, expected a float type"}},
      {"i2v_key_on_t2v",
       {{"diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight", d4},
        {"diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight", u4}},
       {"changes 'blocks.0.cross_attn.k_img.weight', which the model does not have"}},
      {"flat_absent_block",
       {{"lora_unet_blocks_9_ffn_0.lora_down.weight", d4},
        {"lora_unet_blocks_9_ffn_0.lora_up.weight", random_tensor({256, 4}, 7, 0.1f)}},
       {"names the flattened module path 'lora_unet_blocks_9_ffn_0', which matches no parameter"}},
      {"empty", {}, {"the LoRA file holds no tensors"}},
  };
  const wan::ModelSource src = wan::open_model(fixture_path());
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string file = path(std::string(c.name) + ".safetensors");
    write_safetensors(file, c.tensors);
    const std::string msg = error_of([&] { wan::load_dit(src, *backend_, {{file, 1.0f}}); });
    EXPECT_TRUE(has(msg, file + ": "));
    for (const std::string& needle : c.needles) EXPECT_TRUE(has(msg, needle));
  }
  EXPECT_TRUE(has(error_of([&] {
                    wan::load_dit(src, *backend_, {{path("none.st"), 1.0f}});
                  }),
                  "no such file"));
}

// ---------------------------------------------------------------------------------------------
// fisdit dit / denoise --lora

class LoraCli : public LoraTest {
 protected:
  struct Result {
    int rc;
    std::string err;
  };
  Result run(const std::string& args) {
    const std::string err_path = path("stderr.txt");
    const std::string cmd = "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) + " " + args +
                            " >/dev/null 2>" + err_path;
    const int status = std::system(cmd.c_str());
    Result r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, {}};
    std::ifstream e(err_path);
    std::stringstream ss;
    ss << e.rdbuf();
    r.err = ss.str();
    return r;
  }
  std::string inputs() {
    const std::string p = path("inputs.safetensors");
    write_safetensors(p, {{"x", fixture_->tensor_f32("input.x")},
                          {"t", fixture_->tensor_f32("input.t")},
                          {"context", fixture_->tensor_f32("input.context")}});
    return p;
  }
};

TEST_F(LoraCli, DitWithLoraEqualsTheMergedModel) {
  const auto merged = write_lora(kSchemes[0], "l.safetensors", 0.5f);
  const std::string model = write_model(merged, "merged.safetensors"), in = inputs();
  Result r = run("dit --model " + fixture_path() + " --inputs " + in + " --output " + path("a.st") +
                 " --lora " + path("l.safetensors") + " --lora-strength 0.5");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has(r.err, "LoRA " + path("l.safetensors") + " (strength 0.5): 10 weights changed"));
  r = run("dit --model " + model + " --inputs " + in + " --output " + path("b.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const Tensor a = SafetensorsFile::open(path("a.st"))->tensor_f32("out");
  const Tensor b = SafetensorsFile::open(path("b.st"))->tensor_f32("out");
  EXPECT_LE(rel_l2(a, b), kFp32Tolerance);
}

TEST_F(LoraCli, DenoiseTakesALoraPerExpert) {
  // High- and low-noise experts are the same tiny model here; each gets its own LoRA.
  write_lora(kSchemes[0], "high.safetensors", 1.0f);
  write_lora(kSchemes[2], "low.safetensors", 1.0f);
  const std::string in = inputs();
  const std::string common = "denoise --model " + fixture_path() + " --model-low " +
                             fixture_path() + " --inputs " + in + " --steps 2 --output ";
  ASSERT_EQ(run(common + path("plain.st")).rc, 0);
  const Result r = run(common + path("lora.st") + " --lora " + path("high.safetensors") +
                       " --lora-low " + path("low.safetensors") + " --lora-low-strength 0.5");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_TRUE(has(r.err, "LoRA " + path("high.safetensors") + " (strength 1)"));
  EXPECT_TRUE(has(r.err, "LoRA " + path("low.safetensors") + " (strength 0.5)"));
  const Tensor a = SafetensorsFile::open(path("plain.st"))->tensor_f32("x");
  const Tensor b = SafetensorsFile::open(path("lora.st"))->tensor_f32("x");
  EXPECT_GT(rel_l2(b, a), 1e-3);
}

TEST_F(LoraCli, BadLoraFlagsGetOneClearLine) {
  const std::string in = inputs();
  const std::string dit =
      "dit --model " + fixture_path() + " --inputs " + in + " --output " + path("o.st");
  write_safetensors(
      path("bad.safetensors"),
      {{"diffusion_model.blocks.7.ffn.2.lora_down.weight", random_tensor({4, 256}, 1, 1)},
       {"diffusion_model.blocks.7.ffn.2.lora_up.weight", random_tensor({128, 4}, 2, 1)}});
  const std::vector<std::pair<std::string, std::string>> cases = {
      {dit + " --lora-strength 0.5", "--lora-strength is given without --lora"},
      {dit + " --lora " + path("bad.safetensors") + " --lora " + path("bad.safetensors") +
           " --lora-strength 1 --lora-strength 2 --lora-strength 3",
       "--lora-strength is given 3 times for 2 --lora files"},
      {dit + " --lora " + path("bad.safetensors"),
       path("bad.safetensors") + ": LoRA does not match the model: tensor "
                                 "'diffusion_model.blocks.7.ffn.2.lora_down.weight'"},
      {"denoise --model " + fixture_path() + " --inputs " + in + " --output " + path("o.st") +
           " --lora-low " + path("bad.safetensors"),
       "--lora-low needs --model-low"},
  };
  for (const auto& [args, needle] : cases) {
    SCOPED_TRACE(args);
    const Result r = run(args);
    EXPECT_NE(r.rc, 0);
    EXPECT_TRUE(has(r.err, needle));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

}  // namespace
}  // namespace fisdit
