// fisdit analyze and fisdit calibrate on the tiny fixture DiT: the JSON schema, Eq. 6 on the
// dense parts being exactly zero, the figures, and the preset calibrate writes.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "accel/fis.h"
#include "analysis/redundancy.h"
#include "core/random.h"
#include "io/safetensors.h"

namespace fisdit {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Result {
  int rc;
  std::string out, err;
};

class AnalyzeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("fisdit_analyze_" + std::to_string(::getpid()) + "_" +
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
  static std::string model() {
    return std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
  }
  static json load(const std::string& p) {
    std::ifstream in(p);
    return json::parse(in);
  }
  static bool is_png(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    char sig[8] = {};
    in.read(sig, 8);
    return in && std::string(sig, 8) == "\x89PNG\r\n\x1a\n";
  }
  fs::path dir_;
};

TEST_F(AnalyzeCli, WritesTheSchemaTheFiguresAndExactZerosWhereThePlanIsDense) {
  // The fixture file holds its inputs as input.x / input.context: --inputs takes it as is.
  const Result r = run("analyze --model " + model() + " --inputs " + model() +
                       " --steps 4 --strides 2,3 --output-dir " + path("a"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("analyze"), std::string::npos) << r.err;  // progress
  const json a = load(path("a/analysis.json"));
  EXPECT_EQ(a["format"], "fisdit-analysis");
  EXPECT_EQ(a["num_blocks"], 4);
  EXPECT_EQ(a["frames"], 9);  // latent [16, 9, 8, 8], temporal patch 1
  EXPECT_EQ(a["tokens_per_frame"], 16);
  ASSERT_EQ(a["timesteps"].size(), 4u);
  EXPECT_GT(a["timesteps"][0].get<double>(), a["timesteps"][3].get<double>());
  ASSERT_EQ(a["cv"].size(), 4u);
  ASSERT_EQ(a["fis"].size(), 2u);
  for (int k = 0; k < 4; ++k) {
    ASSERT_EQ(a["cv"][k].size(), 4u);
    for (int l = 0; l < 4; ++l) {
      const std::vector<double> r_f = a["rel_change"][k][l].get<std::vector<double>>();
      ASSERT_EQ(r_f.size(), 8u);
      // One sample: the CV is Eq. 4 of the recorded R_f.
      EXPECT_NEAR(a["cv"][k][l].get<double>(), analysis::coefficient_of_variation(r_f), 1e-12);
      EXPECT_GT(a["cv"][k][l].get<double>(), 0.0);
    }
  }
  for (int i = 0; i < 2; ++i) {
    const json& f = a["fis"][i];
    const accel::FisConfig c = accel::fis_from_json(f["config"], "entry");
    EXPECT_EQ(c.stride, 2 + i);
    const accel::FisPlan plan(c, 4, 4, 9);
    for (int k = 0; k < 4; ++k)
      for (int l = 0; l < 4; ++l) {
        const accel::BlockPlan bp = plan.at(k, l);
        EXPECT_EQ(f["sparse"][k][l].get<bool>(), bp.sparse);
        const auto e = f["error"][k][l].get<std::vector<double>>();
        const auto anchor = f["anchor"][k][l].get<std::vector<bool>>();
        ASSERT_EQ(e.size(), 9u);
        for (int fr = 0; fr < 9; ++fr) {
          const bool is_anchor =
              !bp.sparse || std::count(bp.anchors.begin(), bp.anchors.end(), fr) > 0;
          EXPECT_EQ(anchor[fr], is_anchor);
          // Block 0 (head) and the whole dense last step see exactly the dense computation.
          if (l == 0 || k == 3) {
            EXPECT_EQ(e[fr], 0.0) << k << " " << l << " " << fr;
          }
        }
        // Sparse blocks change some frame's output.
        if (bp.sparse) {
          EXPECT_GT(*std::max_element(e.begin(), e.end()), 0.0);
        }
      }
  }
  for (const char* png :
       {"cv_heatmap.png", "rel_change.png", "frame_error_0.png", "frame_error_1.png"})
    EXPECT_TRUE(is_png(path(std::string("a/") + png))) << png;

  // Calibrate from it: a tiny budget keeps everything dense, a huge one takes the largest
  // measured stride; the written preset loads with fis_from_json and runs with dit --fis FILE.
  const Result tight = run("calibrate --analysis " + path("a/analysis.json") +
                           " --budget 1e-9 --output " + path("tight.json"));
  ASSERT_EQ(tight.rc, 0) << tight.err;
  EXPECT_NE(tight.err.find("stride 1"), std::string::npos) << tight.err;
  EXPECT_FALSE(accel::fis_from_json(load(path("tight.json")), "tight").enabled());
  const Result loose = run("calibrate --analysis " + path("a/analysis.json") +
                           " --budget 100 --output " + path("loose.json"));
  ASSERT_EQ(loose.rc, 0) << loose.err;
  const accel::FisConfig c = accel::fis_preset(path("loose.json"));
  EXPECT_EQ(c.stride, 3);
  EXPECT_EQ(c.head, 1);
  EXPECT_EQ(c.tail, 1);
  const Result dit = run("dit --model " + model() + " --inputs " + model() + " --fis " +
                         path("loose.json") + " --output " + path("out.st"));
  EXPECT_EQ(dit.rc, 0) << dit.err;
  // Without --output the preset goes to stdout.
  const Result printed = run("calibrate --analysis " + path("a/analysis.json") + " --budget 100");
  ASSERT_EQ(printed.rc, 0) << printed.err;
  EXPECT_EQ(json::parse(printed.out)["stride"], 3);
}

TEST_F(AnalyzeCli, SamplesAreAveragedAndDenseOnlyRunsWithoutFis) {
  const Result one = run("analyze --model " + model() + " --inputs " + model() +
                         " --steps 2 --no-figures --output-dir " + path("one"));
  ASSERT_EQ(one.rc, 0) << one.err;
  const Result two = run("analyze --model " + model() + " --inputs " + model() + " --inputs " +
                         model() + " --steps 2 --no-figures --output-dir " + path("two"));
  ASSERT_EQ(two.rc, 0) << two.err;
  const json a = load(path("one/analysis.json")), b = load(path("two/analysis.json"));
  EXPECT_TRUE(a["fis"].empty());
  EXPECT_EQ(b["samples"].size(), 2u);
  for (int k = 0; k < 2; ++k)
    for (int l = 0; l < 4; ++l)
      EXPECT_NEAR(a["cv"][k][l].get<double>(), b["cv"][k][l].get<double>(), 1e-12);
  EXPECT_FALSE(fs::exists(path("one/cv_heatmap.png")));
  // calibrate needs a measured stride.
  const Result c = run("calibrate --analysis " + path("one/analysis.json") + " --budget 0.1");
  EXPECT_EQ(c.rc, 1);
  EXPECT_NE(c.err.find("no FIS setting"), std::string::npos) << c.err;
}

// The fixture DiT as a model directory whose text embedding takes the tiny umT5's 64 channels
// (the DiT fixtures were made with text_dim 48), as tests/pipeline does.
std::string dit_for_tiny_t5(const fs::path& dir) {
  fs::create_directories(dir);
  const auto f =
      SafetensorsFile::open(std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors");
  NamedTensors out;
  for (const TensorInfo& t : f->tensors()) {
    if (t.name.rfind("model.", 0) != 0) continue;
    Tensor v = f->tensor_f32(t.name);
    if (t.name == "model.text_embedding.0.weight") {
      v = randn({v.dim(0), 64}, 3);
      for (int64_t i = 0; i < v.numel(); ++i) v.f32()[i] *= 0.125f;
    }
    out.emplace_back(t.name.substr(6), v);
  }
  write_safetensors((dir / "diffusion_pytorch_model.safetensors").string(), out);
  std::ofstream(dir / "config.json")
      << R"({"_class_name": "WanModel", "model_type": "t2v", "dim": 128, "ffn_dim": 256, )"
      << R"("freq_dim": 256, "in_dim": 16, "out_dim": 16, "num_heads": 2, "num_layers": 4, )"
      << R"("eps": 1e-06, "text_len": 32, "text_dim": 64})";
  return dir.string();
}

TEST_F(AnalyzeCli, PromptsAreEncodedAndTheirCvAveraged) {
  const std::string dit = dit_for_tiny_t5(dir_ / "dit");
  { std::ofstream(path("a.txt")) << "a red square moves left\n"; }
  { std::ofstream(path("b.txt")) << "two blue circles on grass\n"; }
  { std::ofstream(path("ab.txt")) << "a red square moves left\n\ntwo blue circles on grass\n"; }
  const std::string common = " --text-encoder " + std::string(FISDIT_TEST_DATA) +
                             "/wan/t5_tiny.safetensors --tokenizer " +
                             std::string(FISDIT_TEST_DATA) +
                             "/tokenizer --size 32x32 --frames 17 --steps 2 --seed 5 --no-figures";
  json cv[3];
  const char* names[3] = {"a", "b", "ab"};
  for (int i = 0; i < 3; ++i) {
    const Result r = run("analyze --model " + dit + common + " --prompts " +
                         path(std::string(names[i]) + ".txt") + " --output-dir " + path(names[i]));
    ASSERT_EQ(r.rc, 0) << r.err;
    const json a = load(path(std::string(names[i]) + "/analysis.json"));
    EXPECT_EQ(a["latent"], json({16, 5, 4, 4}));
    cv[i] = a["cv"];
    if (i == 2) {
      ASSERT_EQ(a["samples"].size(), 2u);
      EXPECT_EQ(a["samples"][1], "two blue circles on grass");
    }
  }
  // Eq. 5: the CV of two prompts is the mean of their CVs; the prompts differ.
  bool differ = false;
  for (int k = 0; k < 2; ++k)
    for (int l = 0; l < 4; ++l) {
      const double a = cv[0][k][l], b = cv[1][k][l];
      EXPECT_NEAR(cv[2][k][l].get<double>(), (a + b) / 2, 1e-12);
      differ = differ || a != b;
    }
  EXPECT_TRUE(differ);
  // The fixture DiT takes 48-channel contexts, the tiny umT5 gives 64: a clear error.
  const Result bad = run("analyze --model " + model() + common + " --prompts " + path("a.txt") +
                         " --output-dir " + path("x"));
  EXPECT_EQ(bad.rc, 1);
  EXPECT_NE(bad.err.find("text_dim is 48"), std::string::npos) << bad.err;
}

TEST_F(AnalyzeCli, BadFlagsAndFilesGetOneClearLine) {
  { std::ofstream(path("not.json")) << "{ broken"; }
  { std::ofstream(path("other.json")) << "{\"stride\": 3}"; }
  struct Case {
    std::string args, must_mention;
  };
  const std::string base = "analyze --model " + model() + " --output-dir " + path("o");
  const std::vector<Case> cases = {
      {base + " --inputs " + path("missing.safetensors"), "missing.safetensors"},
      {base + " --inputs " + model() + " --strides 0", "--strides"},
      {base + " --inputs " + model() + " --fis turbo", "turbo"},
      {base + " --inputs " + model() + " --steps 0", "steps"},
      {base + " --inputs " + model() + " --guidance 3", "context_neg"},
      {"analyze --model " + model() + " --inputs " + model(), "--output-dir"},
      {base, "--inputs"},
      {base + " --prompts " + path("none.txt"), "none.txt"},
      {"calibrate --analysis " + path("missing.json") + " --budget 0.1", "missing.json"},
      {"calibrate --analysis " + path("not.json") + " --budget 0.1", "not valid JSON"},
      {"calibrate --analysis " + path("other.json") + " --budget 0.1", "fisdit-analysis"},
      {"calibrate --analysis " + path("other.json") + " --budget -2", "--budget"},
  };
  for (const Case& c : cases) {
    const Result r = run(c.args);
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_EQ(r.err.rfind("fisdit: error: ", 0), 0u) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.must_mention), std::string::npos) << c.args << "\n" << r.err;
  }
}

}  // namespace
}  // namespace fisdit
