// The fisdit command line as other tools call it: outputs, exit codes, one-line errors.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../models/hunyuan15_fixture.h"
#include "io/safetensors.h"
#include "models/wan/loader.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc;
  std::string out, err;
};

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fisdit_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result run(const std::string& args) {
    const std::string err_path = (dir_ / "stderr.txt").string();
    const std::string cmd =
        "OMP_NUM_THREADS=2 " + std::string(FISDIT_CLI_PATH) + " " + args + " 2>" + err_path;
    Result r{};
    FILE* p = popen(cmd.c_str(), "r");
    std::array<char, 4096> buf{};
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
    const int status = pclose(p);
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::ifstream e(err_path);
    std::stringstream ss;
    ss << e.rdbuf();
    r.err = ss.str();
    return r;
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string fixture(const std::string& name) {
    return std::string(FISDIT_TEST_DATA) + "/wan/" + name;
  }
  // The inputs file of `fisdit dit` made from a fixture's input.* tensors.
  std::string inputs_from_fixture(const std::string& name, bool with_y) {
    const auto f = SafetensorsFile::open(fixture(name));
    NamedTensors t = {{"x", f->tensor_f32("input.x")},
                      {"t", f->tensor_f32("input.t")},
                      {"context", f->tensor_f32("input.context")}};
    if (with_y) t.push_back({"y", f->tensor_f32("input.y")});
    const std::string p = path("in_" + name);
    write_safetensors(p, t);
    return p;
  }
  // The fields of bench's RESULT (or other `tag`) lines, one row per line.
  static std::vector<std::vector<std::string>> result_rows(const std::string& out,
                                                           const std::string& tag = "RESULT|") {
    std::vector<std::vector<std::string>> rows;
    std::stringstream in(out);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(tag, 0)) continue;
      std::vector<std::string> fields;
      std::stringstream ls(line);
      for (std::string f; std::getline(ls, f, '|');) fields.push_back(f);
      rows.push_back(fields);
    }
    return rows;
  }
  static int lines(const std::string& s) {
    int n = 0;
    for (char c : s) n += c == '\n';
    return n;
  }
  fs::path dir_;
};

TEST_F(Cli, FlopsPrintsDenseAndBalancedForA14B720p) {
  const Result r = run(
      "flops --model-config wan2.2-t2v-a14b --size 1280x720 --frames 81 --steps 4 --fis balanced");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("dense        26.085 PFLOP"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("balanced     11.694 PFLOP"), std::string::npos) << r.out;
}

TEST_F(Cli, DitMatchesTheOfficialOutputForEveryModelType) {
  for (const auto& [name, with_y] :
       std::vector<std::pair<std::string, bool>>{{"dit_t2v_tiny.safetensors", false},
                                                 {"dit_ti2v_tiny.safetensors", false},
                                                 {"dit_i2v_tiny.safetensors", true}}) {
    const std::string out = path("out.safetensors");
    const Result r = run("dit --model " + fixture(name) + " --inputs " +
                         inputs_from_fixture(name, with_y) + " --output " + out);
    ASSERT_EQ(r.rc, 0) << name << ": " << r.err;
    const auto got = SafetensorsFile::open(out);
    const auto expected = SafetensorsFile::open(fixture(name));
    EXPECT_LE(rel_l2(got->tensor_f32("out"), expected->tensor_f32("expected.out")), 1e-5) << name;
  }
}

// HunyuanVideo 1.5 through the same commands: dit on the official fixture (valid tokens of each
// stream, MeanFlow's r, y = the condition latent and mask), inspect, flops, and the errors.
TEST_F(Cli, HunyuanDitInspectAndFlops) {
  const std::string model = std::string(FISDIT_TEST_DATA) + "/hunyuan15/dit_tiny.safetensors";
  const auto f = SafetensorsFile::open(model);
  const test::Case c = test::read_case(*f, "i2v");
  NamedTensors in = {{"x", test::channels(c.x, 0, 4)},
                     {"y", test::channels(c.x, 4, 9)},  // condition latent and mask
                     {"t", c.time.t},
                     {"r", f->tensor_f32("i2v.input.r")},
                     {"context", c.text.states},
                     {"byt5", c.text.extra.at("byt5")},
                     {"vision", c.text.extra.at("vision")}};
  write_safetensors(path("in.st"), in);
  Result r = run("dit --model " + model + " --inputs " + path("in.st") + " --output " +
                 path("out.st") + " --device cpu");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_LE(rel_l2(SafetensorsFile::open(path("out.st"))->tensor_f32("out"),
                   f->tensor_f32("i2v.expected.out")),
            1e-5);
  // Without y: the conditioning channels are named in the error.
  NamedTensors no_y = in;
  no_y.erase(no_y.begin() + 1);
  write_safetensors(path("no_y.st"), no_y);
  r = run("dit --model " + model + " --inputs " + path("no_y.st") + " --output " + path("o.st") +
          " --device cpu");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("needs 'y' (5 conditioning channels)"), std::string::npos) << r.err;

  r = run("inspect " + model);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("family       hunyuan15"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loadable     yes"), std::string::npos) << r.out;

  r =
      run("flops --model-config hunyuanvideo-1.5-480p-i2v-step-distilled --size 848x480 "
          "--frames 121 --steps 8 --fis balanced");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("dense"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("balanced"), std::string::npos) << r.out;
}

// fisdit inspect on a HunyuanVideo 1.5 download assembled from the fixtures (each part in the
// official layout's folder): every part found and described; a part taken away is named as
// missing; an encoder's own folder is recognised as that encoder.
TEST_F(Cli, InspectDescribesAHunyuanRelease) {
  namespace fs = std::filesystem;
  const fs::path data = fs::path(FISDIT_TEST_DATA) / "hunyuan15";
  const fs::path root = path("release");
  fs::create_directories(root / "transformer");
  fs::create_directories(root / "text_encoder" / "llm");
  fs::create_directories(root / "vision_encoder" / "siglip" / "image_encoder");
  fs::copy(data / "dit_tiny_diffusers", root / "transformer" / "480p_i2v_step_distilled");
  fs::copy(data / "vae_tiny_diffusers", root / "vae");
  fs::copy(data / "text_tiny.safetensors", root / "text_encoder" / "llm" / "model.safetensors");
  fs::copy(data / "text_tokenizer.json", root / "text_encoder" / "llm" / "tokenizer.json");
  fs::copy(data / "glyph_tiny" / "Glyph-SDXL-v2", root / "text_encoder" / "Glyph-SDXL-v2",
           fs::copy_options::recursive);
  fs::copy(data / "glyph_tiny" / "byt5-small", root / "text_encoder" / "byt5-small");
  fs::copy(data / "vision_tiny.safetensors",
           root / "vision_encoder" / "siglip" / "image_encoder" / "model.safetensors");
  Result r = run("inspect " + root.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* want : {"480p_i2v_step_distilled: 2 blocks", "Qwen2.5-VL language model",
                           "tokenizer.json present", "byt5_model.pt", "SigLIP, 3 layers"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;
  EXPECT_EQ(r.out.find("missing"), std::string::npos) << r.out;
  fs::remove_all(root / "vae");
  r = run("inspect " + root.string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("missing     " + (root / "vae").string() + " (the VAE)"), std::string::npos)
      << r.out;
  r = run("inspect --summary " + (root / "text_encoder" / "llm").string());
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("loadable     yes: HunyuanVideo 1.5 text encoder"), std::string::npos)
      << r.out;
}

// fisdit vae with a HunyuanVideo 1.5 VAE (the official fixture: decode and encode, --normalize
// by its scaling factor).
TEST_F(Cli, HunyuanVaeDecodeAndEncode) {
  const std::string vae = std::string(FISDIT_TEST_DATA) + "/hunyuan15/vae_tiny.safetensors";
  const auto f = SafetensorsFile::open(vae);
  write_safetensors(path("z.st"), {{"z", f->tensor_f32("input.z")}});
  Result r = run("vae decode --vae " + vae + " --inputs " + path("z.st") + " --output " +
                 path("video.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("HunyuanVideo 1.5 VAE"), std::string::npos) << r.err;
  EXPECT_LE(rel_l2(SafetensorsFile::open(path("video.st"))->tensor_f32("video"),
                   f->tensor_f32("expected.video")),
            1e-5);
  write_safetensors(path("v.st"), {{"video", f->tensor_f32("input.video")}});
  r = run("vae encode --normalize --vae " + vae + " --inputs " + path("v.st") + " --output " +
          path("z_out.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  Tensor want = f->tensor_f32("expected.mean").clone();
  for (int64_t i = 0; i < want.numel(); ++i) want.f32()[i] *= 1.03682f;
  EXPECT_LE(rel_l2(SafetensorsFile::open(path("z_out.st"))->tensor_f32("z"), want), 1e-5);
}

// --vae-precision: fp32 is the CPU's own (same output); bf16 on the CPU, or a value that names no
// precision, is one error line naming the flag.
TEST_F(Cli, VaePrecisionOnTheCpu) {
  const std::string vae = std::string(FISDIT_TEST_DATA) + "/hunyuan15/vae_tiny.safetensors";
  const auto f = SafetensorsFile::open(vae);
  write_safetensors(path("z.st"), {{"z", f->tensor_f32("input.z")}});
  const std::string base =
      "vae decode --vae " + vae + " --inputs " + path("z.st") + " --output " + path("v.st");
  Result r = run(base + " --vae-precision fp32");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_LE(rel_l2(SafetensorsFile::open(path("v.st"))->tensor_f32("video"),
                   f->tensor_f32("expected.video")),
            1e-5);
  r = run(base + " --vae-precision bf16");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--vae-precision bf16: the cpu backend runs the VAE in fp32 only"),
            std::string::npos)
      << r.err;
  r = run(base + " --vae-precision fp16");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--vae-precision"), std::string::npos) << r.err;
}

// fisdit denoise on HunyuanVideo 1.5: the official 3-step sampling run of the fixture (shift 7,
// MeanFlow r), byt5 and vision read from the inputs file.
TEST_F(Cli, HunyuanDenoiseMatchesTheOfficialLoop) {
  const std::string model = std::string(FISDIT_TEST_DATA) + "/hunyuan15/dit_tiny.safetensors";
  const auto f = SafetensorsFile::open(model);
  const test::Case c = test::read_case(*f, "i2v");
  write_safetensors(path("in.st"), {{"x", f->tensor_f32("sample.input.noise")},
                                    {"y", test::channels(c.x, 4, 9)},
                                    {"context", c.text.states},
                                    {"byt5", c.text.extra.at("byt5")},
                                    {"vision", c.text.extra.at("vision")}});
  Result r = run("denoise --model " + model + " --inputs " + path("in.st") +
                 " --steps 3 --shift 7 --device cpu --output " + path("out.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_LE(rel_l2(SafetensorsFile::open(path("out.st"))->tensor_f32("x"),
                   f->tensor_f32("sample.expected.x")),
            1e-5);
  // The redundancy analysis runs on the same inputs: every (step, block) of the video stream.
  r = run("analyze --model " + model + " --inputs " + path("in.st") +
          " --steps 3 --shift 7 --fis balanced --strides 2 --no-figures --output-dir " +
          path("an"));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::ifstream in(path("an/analysis.json"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string a = ss.str();
  EXPECT_NE(a.find("\"num_blocks\": 2"), std::string::npos) << a.substr(0, 400);
  EXPECT_NE(a.find("\"steps\": 3"), std::string::npos) << a.substr(0, 400);
  // calibrate turns it into a preset the sampler takes.
  r = run("calibrate --analysis " + path("an/analysis.json") + " --budget 100 --output " +
          path("preset.json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run("denoise --model " + model + " --inputs " + path("in.st") +
          " --steps 3 --shift 7 --device cpu --fis " + path("preset.json") + " --output " +
          path("fis.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  // MagCache on the video stream's residual: calibrated ratios from one dense run, then forced
  // skips (3 steps, K 1: the middle step is skipped) give a different, finite result.
  r = run("calibrate --magcache --model " + model + " --inputs " + path("in.st") +
          " --steps 3 --shift 7 --device cpu --output " + path("ratios.json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run("denoise --model " + model + " --inputs " + path("in.st") +
          " --steps 3 --shift 7 --device cpu --cache magcache --magcache-force --magcache-K 1 "
          "--magcache-retention 0.2 --magcache-ratios " +
          path("ratios.json") + " --output " + path("mc.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("cache skip"), std::string::npos) << r.err;
  const Tensor dense = SafetensorsFile::open(path("out.st"))->tensor_f32("x");
  const Tensor cached = SafetensorsFile::open(path("mc.st"))->tensor_f32("x");
  const double diff = rel_l2(cached, dense);
  EXPECT_GT(diff, 0.0);
  EXPECT_TRUE(std::isfinite(diff));
}

TEST_F(Cli, DitWithFisChangesTheResult) {
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  ASSERT_EQ(run("dit --model " + model + " --inputs " + in + " --output " + path("d.st")).rc, 0);
  const Result r = run("dit --model " + model + " --inputs " + in + " --output " + path("f.st") +
                       " --fis balanced --fis-granularity block --fis-reconstruct delta");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("custom (s=3"), std::string::npos) << r.err;
  const double diff = rel_l2(SafetensorsFile::open(path("f.st"))->tensor_f32("out"),
                             SafetensorsFile::open(path("d.st"))->tensor_f32("out"));
  EXPECT_GT(diff, 1e-4);
  EXPECT_LT(diff, 1.0);
}

TEST_F(Cli, DenoiseWritesTheFinalLatentAndReportsSteps) {
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const Result r = run("denoise --model " + model + " --model-low " + model + " --inputs " + in +
                       " --steps 4 --shift 5 --fis fast --output " + path("x.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("step 4/4"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("expert low"), std::string::npos) << r.err;
  const Tensor x = SafetensorsFile::open(path("x.st"))->tensor_f32("x");
  EXPECT_EQ(x.shape(), (Shape{16, 9, 8, 8}));
  for (float v : x.to_vector()) ASSERT_TRUE(std::isfinite(v));
}

// --gpu-memory-limit: the experts take turns, their blocks stream from host memory (the CPU
// backend holds its tensors to the limit as a GPU would) and the latent is the unlimited one; a
// limit too small is one error naming the smallest that works, and that one works.
TEST_F(Cli, DenoiseUnderAMemoryLimitStreamsBlocksAndKeepsTheLatent) {
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const std::string common = "denoise --model " + model + " --model-low " + model + " --inputs " +
                             in + " --steps 4 --shift 5 --fis fast";
  ASSERT_EQ(run(common + " --output " + path("free.st")).rc, 0);
  // The reserve for this latent's activations plus the smallest placement, and 1 MiB.
  const wan::ModelSource src = wan::open_model(model);
  auto cpu = make_cpu_backend();
  const int64_t least = wan::load_dit(src, *cpu)->offload_plan().min_bytes;
  const models::ModelInfo info = wan::model_info(src.config);
  const int64_t reserve = info.activation_bytes({9, 8, 8}, 4, true, false);
  char limit[64];
  std::snprintf(limit, sizeof limit, "%.9f",
                static_cast<double>(reserve + least + (int64_t{1} << 20)) / 1073741824.0);
  Result r = run(common + " --gpu-memory-limit " + limit + " --output " + path("limited.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("blocks streamed from host memory"), std::string::npos) << r.err;
  const Tensor free_x = SafetensorsFile::open(path("free.st"))->tensor_f32("x");
  const Tensor limited_x = SafetensorsFile::open(path("limited.st"))->tensor_f32("x");
  ASSERT_EQ(free_x.shape(), limited_x.shape());
  EXPECT_EQ(std::memcmp(free_x.raw(), limited_x.raw(), free_x.nbytes()), 0);

  r = run(common + " --gpu-memory-limit 0.01 --output " + path("o.st"));
  ASSERT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("fisdit: error: --gpu-memory-limit 0.01 GiB is too small"),
            std::string::npos)
      << r.err;
  const std::string key = "the smallest limit that would work is ";
  const size_t at = r.err.find(key);
  ASSERT_NE(at, std::string::npos) << r.err;
  const std::string smallest =
      r.err.substr(at + key.size(), r.err.find(' ', at + key.size()) - at - key.size());
  r = run(common + " --gpu-memory-limit " + smallest + " --output " + path("o.st"));
  EXPECT_EQ(r.rc, 0) << smallest << "\n" << r.err;
  EXPECT_NE(run(common + " --gpu-memory-limit -2 --output " + path("o.st")).rc, 0);
}

// dit --precision fp8 on the CPU backend: the E4M3 reference runs, says so, and lands near the
// default-precision output; other values are refused naming the flag.
TEST_F(Cli, DitPrecisionFp8RunsTheReferenceOnTheCpu) {
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  ASSERT_EQ(run("dit --model " + model + " --inputs " + in + " --output " + path("d.st")).rc, 0);
  const Result r = run("dit --model " + model + " --inputs " + in + " --output " + path("f8.st") +
                       " --precision fp8");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("precision fp8"), std::string::npos) << r.err;
  const double diff = rel_l2(SafetensorsFile::open(path("f8.st"))->tensor_f32("out"),
                             SafetensorsFile::open(path("d.st"))->tensor_f32("out"));
  EXPECT_GT(diff, 1e-4);
  EXPECT_LT(diff, 0.1);
  const Result bad = run("dit --model " + model + " --inputs " + in + " --output " + path("o") +
                         " --precision fp16");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("--precision"), std::string::npos) << bad.err;
}

TEST_F(Cli, DenoiseWithUniPCRunsTheOfficialScheduleAndDiffersFromEuler) {
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const Result euler = run("denoise --model " + model + " --inputs " + in +
                           " --steps 4 --shift 5 --output " + path("euler.st"));
  ASSERT_EQ(euler.rc, 0) << euler.err;
  const Result unipc = run("denoise --model " + model + " --inputs " + in +
                           " --solver unipc --steps 4 --shift 5 --output " + path("unipc.st"));
  ASSERT_EQ(unipc.rc, 0) << unipc.err;
  EXPECT_NE(unipc.err.find("solver unipc"), std::string::npos) << unipc.err;
  EXPECT_NE(unipc.err.find("step 1/4  t= 999.00"), std::string::npos) << unipc.err;
  EXPECT_NE(unipc.err.find("step 4/4  t= 624.00"), std::string::npos) << unipc.err;
  EXPECT_NE(euler.err.find("step 1/4  t=1000.00"), std::string::npos) << euler.err;
  const Tensor a = SafetensorsFile::open(path("unipc.st"))->tensor_f32("x");
  const Tensor b = SafetensorsFile::open(path("euler.st"))->tensor_f32("x");
  ASSERT_EQ(a.shape(), b.shape());
  for (float v : a.to_vector()) ASSERT_TRUE(std::isfinite(v));
  EXPECT_GT(rel_l2(a, b), 1e-3);
}

TEST_F(Cli, DenoiseTi2vKeepsTheImageLatentAsFrameZero) {
  const auto f = SafetensorsFile::open(fixture("dit_ti2v_tiny.safetensors"));
  const Tensor z = f->tensor_f32("input.image_latent");
  write_safetensors(path("ti2v_in.st"), {{"x", f->tensor_f32("input.noise")},
                                         {"context", f->tensor_f32("input.context")},
                                         {"context_neg", Tensor::zeros({3, 48})},
                                         {"z_image", z}});
  const Result r =
      run("denoise --model " + fixture("dit_ti2v_tiny.safetensors") + " --inputs " +
          path("ti2v_in.st") + " --solver dpm++ --steps 3 --guidance 5 --output " + path("x.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("first frame from 'z_image'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("cfg 5.00"), std::string::npos) << r.err;
  const Tensor x = SafetensorsFile::open(path("x.st"))->tensor_f32("x");
  ASSERT_EQ(x.shape(), (Shape{48, 9, 8, 8}));
  const int64_t hw = 64, frames = 9;
  for (int64_t c = 0; c < 48; ++c)
    for (int64_t i = 0; i < hw; ++i)
      ASSERT_EQ(x.f32()[c * frames * hw + i], z.f32()[c * hw + i]) << c << " " << i;
}

TEST_F(Cli, InspectReportsLayoutConfigAndLoadability) {
  const Result r = run("inspect " + fixture("dit_i2v_tiny.safetensors"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("layout       official, prefix 'model.'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("config       i2v"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loadable     yes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.blocks.0.self_attn.q.weight"), std::string::npos);
}

TEST_F(Cli, BadInputGetsOneClearLineAndANonZeroExit) {
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  { std::ofstream(path("junk.safetensors")) << "not a safetensors file at all"; }
  write_safetensors(path("no_x.safetensors"), {{"t", Tensor::from_vector({500.0f}, {1})}});
  struct Case {
    std::string args, must_mention;
  };
  const std::vector<Case> cases = {
      {"dit --model " + model + " --inputs " + in + " --output " + path("o") + " --bogus", "bogus"},
      {"dit --model " + path("missing.safetensors") + " --inputs " + in + " --output " + path("o"),
       "missing.safetensors"},
      {"dit --model " + path("junk.safetensors") + " --inputs " + in + " --output " + path("o"),
       "junk.safetensors"},
      {"dit --model " + model + " --inputs " + path("no_x.safetensors") + " --output " + path("o"),
       "'x'"},
      {"dit --model " + model + " --inputs " + in + " --output " + path("o") + " --fis turbo",
       "turbo"},
      {"dit --model " + model + " --inputs " + in + " --output " + path("o") +
           " --fis-reconstruct delta",
       "granularity"},
      {"dit --model " + model + " --inputs " + in + " --output " + path("o") + " --device tpu",
       "--device"},
      {"flops --model-config wan2.2-t2v-a14b --size 1280by720", "--size"},
      {"flops --model-config wan2.2-t2v-a14b --frames 80", "--frames"},
      {"denoise --model " + model + " --inputs " + in + " --output " + path("o") + " --steps 0",
       "--steps"},
      {"denoise --model " + model + " --inputs " + in + " --output " + path("o") + " --guidance 3",
       "context_neg"},
      {"denoise --model " + model + " --inputs " + in + " --output " + path("o") + " --solver heun",
       "--solver"},
      {"denoise --model " + model + " --inputs " + in + " --output " + path("o") +
           " --solver unipc --guidance-high 4",
       "--guidance-high"},
      {"denoise --model " + model + " --inputs " + in + " --output " + path("o") +
           " --guidance-low nan",
       "--guidance-low"},
      {"denoise --model " + model + " --inputs " + in + " --output " + path("o") +
           " --guidance-high abc",
       "--guidance-high"},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_EQ(lines(r.err), 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.must_mention), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("fisdit: error: ", 0), 0u) << r.err;
  }
}

TEST_F(Cli, WrongLatentShapeNamesTheTensorAndTheExpectedChannels) {
  const auto f = SafetensorsFile::open(fixture("dit_t2v_tiny.safetensors"));
  write_safetensors(path("bad.st"), {{"x", Tensor::zeros({15, 9, 8, 8})},
                                     {"t", f->tensor_f32("input.t")},
                                     {"context", f->tensor_f32("input.context")}});
  const Result r = run("dit --model " + fixture("dit_t2v_tiny.safetensors") + " --inputs " +
                       path("bad.st") + " --output " + path("o"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("15 channels"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("16"), std::string::npos) << r.err;
}

// calibrate --magcache writes ratios that denoise --magcache-ratios reads; the loop reports the
// skipped steps; MagCache stacks with FIS.
TEST_F(Cli, MagCacheCalibrateThenDenoiseSkipsSteps) {
  const auto f = SafetensorsFile::open(fixture("dit_t2v_tiny.safetensors"));
  Tensor neg = f->tensor_f32("input.context").clone();
  for (int64_t i = 0; i < neg.numel(); ++i) neg.f32()[i] *= -0.5f;
  write_safetensors(path("in.st"), {{"x", f->tensor_f32("input.x")},
                                    {"context", f->tensor_f32("input.context")},
                                    {"context_neg", neg}});
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const std::string common =
      " --model " + model + " --inputs " + path("in.st") + " --steps 6 --solver unipc --guidance 3";
  Result r = run("calibrate --magcache" + common + " --output " + path("ratios.json"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("uncond"), std::string::npos) << r.out;
  std::ifstream in(path("ratios.json"));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string json = ss.str();
  EXPECT_NE(json.find("\"format\": \"fisdit-magcache-ratios\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"uncond\""), std::string::npos) << json;

  // A generous threshold skips; the dense run and threshold 0 write the same latent.
  r = run("denoise" + common + " --output " + path("dense.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run("denoise" + common + " --cache magcache --magcache-ratios " + path("ratios.json") +
          " --magcache-thresh 0 --output " + path("t0.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("MagCache skipped 0 of 12 DiT passes"), std::string::npos) << r.err;
  const Tensor dense = SafetensorsFile::open(path("dense.st"))->tensor_f32("x");
  EXPECT_EQ(SafetensorsFile::open(path("t0.st"))->tensor_f32("x").to_vector(), dense.to_vector());
  r = run("denoise" + common + " --cache magcache --magcache-ratios " + path("ratios.json") +
          " --magcache-thresh 5 --magcache-K 2 --fis balanced --output " + path("mc.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  // 6 steps, retention 0.2 -> 2 computed; then skip, skip, compute, skip (K 2) on both passes.
  EXPECT_NE(r.err.find("MagCache skipped 6 of 12 DiT passes"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 3/6"), std::string::npos);
  EXPECT_NE(r.err.find("cache skip"), std::string::npos) << r.err;
  EXPECT_GT(rel_l2(SafetensorsFile::open(path("mc.st"))->tensor_f32("x"), dense), 1e-4);
}

TEST_F(Cli, MagCacheBadSettingsGetOneClearLine) {
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string base =
      "denoise --model " + model + " --inputs " + in + " --output " + path("o");
  { std::ofstream(path("bad.json")) << "{\"format\": \"something else\"}"; }
  struct Case {
    std::string args, must_mention;
  };
  const std::vector<Case> cases = {
      {base + " --cache turbo", "--cache must be off or magcache"},
      {base + " --cache magcache", "--magcache-ratios"},
      {base + " --magcache-thresh 0.1", "--magcache-thresh needs --cache magcache"},
      {base + " --magcache-force", "--magcache-force needs --cache magcache"},
      {base + " --cache magcache --magcache-force --magcache-thresh -1", "--magcache-thresh"},
      {base + " --cache magcache --magcache-force --magcache-K -2", "--magcache-K"},
      {base + " --cache magcache --magcache-force --magcache-retention 1.5",
       "--magcache-retention"},
      {base + " --cache magcache --magcache-ratios " + path("missing.json"), "missing.json"},
      {base + " --cache magcache --magcache-ratios " + path("bad.json"), "bad.json"},
      {"calibrate --model " + model + " --inputs " + in + " --output " + path("r.json"),
       "--magcache"},
      {"calibrate --magcache --model " + model + " --inputs " + in, "--output"},
      {"bench --device cpu --model " + model +
           " --size 64x64 --frames 33 --cache magcache "
           "--magcache-force --mode per-step-type",
       "--mode loop"},
      {"bench --device cpu --model " + model +
           " --size 64x64 --frames 33 --fis balanced "
           "--compare-dense",
       "dense setting"},
      {"bench --device cpu --model " + model +
           " --size 64x64 --frames 33 --fis balanced "
           "--cache magcache",
       "--magcache-ratios"},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_EQ(lines(r.err), 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.must_mention), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("fisdit: error: ", 0), 0u) << r.err;
  }
}

// bench: MagCache rows alone and with FIS, skipped steps, speedup and rel. L2 vs dense, the
// ratios calibrated on the dense setting in the same process.
TEST_F(Cli, BenchMagCacheRowsReportSkipsAndFidelity) {
  const Result r = run("bench --device cpu --model " + fixture("dit_t2v_tiny.safetensors") +
                       " --size 64x64 --frames 33 --steps 6 --fis off,balanced --cache "
                       "off,magcache --magcache-thresh 5 --compare-dense --warmup 0 --repeats 1");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("MagCache ratios from an untimed dense loop"), std::string::npos) << r.err;
  // Each setting says how long queueing a forward took on the host (the CPU backend runs the ops
  // as they are queued, so it is all of the forward: more than nothing).
  int queued = 0;
  for (size_t at = r.err.find(" ms to queue a forward"); at != std::string::npos;
       at = r.err.find(" ms to queue a forward", at + 1)) {
    const size_t start = r.err.rfind(' ', at - 1) + 1;
    EXPECT_GT(std::stod(r.err.substr(start, at - start)), 0.0) << r.err;
    ++queued;
  }
  EXPECT_EQ(queued, 4) << r.err;
  const std::vector<std::vector<std::string>> rows = result_rows(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;
  const char* names[] = {"off", "balanced", "magcache", "balanced+mc"};
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_EQ(rows[i].size(), 14u) << r.out;
    EXPECT_EQ(rows[i][4], names[i]);
    const int skipped = std::stoi(rows[i][12]);
    const double err = std::stod(rows[i][13]);
    EXPECT_EQ(skipped, i < 2 ? 0 : 3) << i;  // 2 retained, then S S C S
    if (i == 0)
      EXPECT_EQ(err, 0.0);
    else
      EXPECT_GT(err, 1e-5) << i;
    EXPECT_LT(err, 1.0);
  }
}

// bench --graphs off,on: each setting op by op and recorded ("+graphs", the CPU backend's
// recording: the calls kept and run again), side by side; a recorded loop's latent is the op-by-op
// one's, bit for bit. A mode other than off or on is one clear error.
TEST_F(Cli, BenchGraphRowsMatchTheOpByOpRows) {
  const std::string base = "bench --device cpu --model " + fixture("dit_t2v_tiny.safetensors") +
                           " --size 64x64 --frames 33 --steps 3 --fis off,balanced --repeats 2 "
                           "--compare-dense --graphs ";
  const Result r = run(base + "off,on");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::vector<std::vector<std::string>> rows = result_rows(r.out);
  ASSERT_EQ(rows.size(), 4u) << r.out;
  const char* names[] = {"off", "off+graphs", "balanced", "balanced+graphs"};
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_EQ(rows[i].size(), 14u) << r.out;
    EXPECT_EQ(rows[i][4], names[i]);
  }
  EXPECT_EQ(std::stod(rows[1][13]), 0.0) << r.out;
  EXPECT_GT(std::stod(rows[2][13]), 1e-5) << r.out;
  EXPECT_EQ(rows[3][13], rows[2][13]) << r.out;
  EXPECT_EQ(rows[3][11], rows[2][11]) << "the executed PFLOP differ\n" << r.out;
  // The warm-up records each step type (a second warm-up forward with graphs on): every timed
  // forward (3 steps, 2 repeats) is replayed.
  for (const char* setting : {"off+graphs", "balanced+graphs"})
    EXPECT_NE(
        r.err.find(std::string(setting) +
                   ": 6 timed forwards replayed from recorded graphs, 0 recorded while timed"),
        std::string::npos)
        << r.err;
  for (const char* bad : {"maybe", "on,on"}) {
    const Result e = run(base + bad);
    EXPECT_NE(e.rc, 0) << bad;
    EXPECT_EQ(lines(e.err), 1) << e.err;
    EXPECT_NE(e.err.find("--graphs"), std::string::npos) << e.err;
  }
}

// bench --precision bf16,fp8-gemm,fp8 (the fp8 rows on the CPU reference): the fp8 rows (FIS and
// MagCache among them) follow the bf16 ones in the same process, named +fp8-gemm and +fp8, with
// their rel. L2 against the bf16 dense latent; fp8 before bf16 is refused (the weights are
// quantized in place).
TEST_F(Cli, BenchPrecisionRowsCompareFp8WithTheBf16Dense) {
  const std::string base = "bench --device cpu --model " + fixture("dit_t2v_tiny.safetensors") +
                           " --size 64x64 --frames 33 --steps 3 --fis off,balanced --warmup 0 "
                           "--repeats 1 --compare-dense";
  const Result r =
      run(base + " --precision bf16,fp8-gemm,fp8 --cache off,magcache --magcache-force");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("precision fp8-gemm: block matrices E4M3"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("precision fp8: block matrices E4M3 per output channel, self-attention"),
            std::string::npos)
      << r.err;
  const std::vector<std::vector<std::string>> rows = result_rows(r.out);
  ASSERT_EQ(rows.size(), 12u) << r.out;
  const char* names[] = {
      "off",          "balanced",          "magcache",          "balanced+mc",
      "off+fp8-gemm", "balanced+fp8-gemm", "magcache+fp8-gemm", "balanced+mc+fp8-gemm",
      "off+fp8",      "balanced+fp8",      "magcache+fp8",      "balanced+mc+fp8"};
  for (size_t i = 0; i < 12; ++i) {
    ASSERT_EQ(rows[i].size(), 14u) << r.out;
    EXPECT_EQ(rows[i][4], names[i]);
    const double err = std::stod(rows[i][13]);
    if (i == 0)
      EXPECT_EQ(err, 0.0);
    else
      EXPECT_GT(err, 1e-5) << i;
    EXPECT_LT(err, 0.5) << i;
  }
  EXPECT_NE(rows[4][13], rows[8][13]);  // fp8 attention moves the latent further
  for (const char* bad : {" --precision fp8,bf16", " --precision fp16", " --precision bf16,bf16",
                          " --precision fp8-gemm,bf16"}) {
    const Result b = run(base + bad);
    EXPECT_NE(b.rc, 0) << bad;
    EXPECT_NE(b.err.find("--precision"), std::string::npos) << bad << "\n" << b.err;
  }
}

// bench --attention: the self-attention alone at the model's heads, a row per --precision, fp8
// against the first; it needs the model's shapes.
TEST_F(Cli, BenchAttentionTimesTheSelfAttentionPerPrecision) {
  const Result r =
      run("bench --attention --device cpu --model-config wan2.1-t2v-1.3b --size 64x64 "
          "--frames 17 --precision bf16,fp8 --warmup 0 --repeats 1");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::vector<std::vector<std::string>> rows = result_rows(r.out, "ATTENTION|");
  ASSERT_EQ(rows.size(), 2u) << r.out;
  EXPECT_EQ(rows[0][2], "bf16");
  EXPECT_EQ(rows[1][2], "fp8");
  EXPECT_EQ(rows[0][3], "80");  // 5 latent frames of 4x4 patches
  EXPECT_EQ(rows[0][4], "12");
  EXPECT_EQ(rows[0][5], "128");
  EXPECT_EQ(std::stod(rows[0][8]), 0.0);
  EXPECT_GT(std::stod(rows[1][8]), 1e-3);
  EXPECT_LT(std::stod(rows[1][8]), 0.1);
  EXPECT_NE(run("bench --attention --device cpu --size 64x64 --frames 17").rc, 0);
}

// denoise --precision fp8 (the CPU reference): runs, says so, and moves the latent a little.
TEST_F(Cli, DenoisePrecisionFp8RunsTheReference) {
  const std::string in = inputs_from_fixture("dit_t2v_tiny.safetensors", false);
  const std::string base =
      "denoise --model " + fixture("dit_t2v_tiny.safetensors") + " --inputs " + in + " --steps 2";
  ASSERT_EQ(run(base + " --output " + path("b.st")).rc, 0);
  const Result r = run(base + " --precision fp8 --output " + path("f.st"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("precision fp8"), std::string::npos) << r.err;
  const Tensor fp8 = SafetensorsFile::open(path("f.st"))->tensor_f32("x");
  const double diff = rel_l2(fp8, SafetensorsFile::open(path("b.st"))->tensor_f32("x"));
  EXPECT_GT(diff, 1e-5);
  EXPECT_LT(diff, 0.1);
  // Under a memory limit the blocks stream as E4M3 codes and scales: the same latent. The limit:
  // the reserve for this latent's activations, the smallest fp8 placement and 4 KiB (less than a
  // block of this model in fp8).
  const wan::ModelSource src = wan::open_model(fixture("dit_t2v_tiny.safetensors"));
  auto cpu = make_cpu_backend();
  const int64_t least =
      wan::load_dit(src, *cpu, {}, models::Precision::Fp8)->offload_plan().min_bytes;
  const Shape xs = fp8.shape();
  const int64_t reserve =
      wan::model_info(src.config).activation_bytes({xs[1], xs[2], xs[3]}, 4, false, false);
  char limit[64];
  std::snprintf(limit, sizeof limit, "%.9f",
                static_cast<double>(reserve + least + 4096) / 1073741824.0);
  const Result limited =
      run(base + " --precision fp8 --gpu-memory-limit " + limit + " --output " + path("l.st"));
  ASSERT_EQ(limited.rc, 0) << limited.err;
  EXPECT_NE(limited.err.find("blocks streamed from host memory"), std::string::npos) << limited.err;
  const Tensor streamed = SafetensorsFile::open(path("l.st"))->tensor_f32("x");
  ASSERT_EQ(streamed.shape(), fp8.shape());
  EXPECT_EQ(std::memcmp(streamed.raw(), fp8.raw(), fp8.nbytes()), 0);
}

// bench --vae: one RESULT row per run naming the operation, at the released VAE's shapes (random
// weights); --vae-op is checked and needs --vae.
TEST_F(Cli, BenchVaeTimesDecodeAndEncode) {
  for (const std::string op : {"decode", "encode"}) {
    const Result r = run("bench --vae wan2.1 --vae-op " + op +
                         " --device cpu --size 8x8 --frames 5 --warmup 0 --repeats 1");
    ASSERT_EQ(r.rc, 0) << r.err;
    const size_t at = r.out.find("RESULT|wan2.1-vae-" + op + "|8x8|5|vae-" + op + "|");
    ASSERT_NE(at, std::string::npos) << r.out;
    // total ms, then ms per latent frame (2 latent frames for 5 video frames): both positive
    std::stringstream fields(r.out.substr(at));
    std::vector<std::string> f;
    for (std::string x; std::getline(fields, x, '|');) f.push_back(x);
    ASSERT_GE(f.size(), 7u) << r.out;
    EXPECT_GT(std::stod(f[5]), 0.0);
    EXPECT_NEAR(std::stod(f[6]), std::stod(f[5]) / 2, 0.1) << r.out;
  }
  Result r = run("bench --vae wan2.1 --vae-op both --device cpu --size 8x8 --frames 1");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--vae-op must be decode or encode"), std::string::npos) << r.err;
  r = run("bench --vae-op encode --device cpu --size 8x8 --frames 1");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--vae-op requires --vae"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fisdit
