// fisdit quality on tiny releases: the variants, fisdit.json defaults, the loaded Generator the
// report runs on, and the command end to end (files, exact dense row, FLOPs order, bad flags).
#include "pipeline/quality.h"

#include <gtest/gtest.h>
#include <cstdlib>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../env_scope.h"
#include "../io/io_test_util.h"
#include "analysis/analyze.h"
#include "analysis/plot.h"
#include "pipeline/generate.h"
#include "pipeline/model_defaults.h"
#include "tiny_release.h"

namespace fisdit::pipeline {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::TempDir;
using nlohmann::json;
using tiny_release::make_release;
namespace fs = std::filesystem;

bool same(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(QualityVariants, NamesMapToThePresetsAndTheirAblations) {
  const QualityVariant dense = quality_variant("dense");
  EXPECT_FALSE(dense.fis.enabled());
  const QualityVariant b = quality_variant("balanced"), f = quality_variant("fast");
  EXPECT_EQ(b.fis.stride, 3);
  EXPECT_EQ(f.fis.stride, 5);
  for (const QualityVariant& v : {b, f}) {
    EXPECT_EQ(v.fis.head, 1);
    EXPECT_EQ(v.fis.tail, 1);
    EXPECT_EQ(v.fis.dense_last_steps, 1);
    EXPECT_TRUE(v.fis.interleave);
    EXPECT_TRUE(v.ablation.empty());
  }
  const QualityVariant ni = quality_variant("fast-no-interleave");
  EXPECT_EQ(ni.fis.stride, 5);
  EXPECT_FALSE(ni.fis.interleave);
  EXPECT_EQ(ni.fis.head, 1);
  const QualityVariant nb = quality_variant("balanced-no-block-protection");
  EXPECT_EQ(nb.fis.head, 0);
  EXPECT_EQ(nb.fis.tail, 0);
  EXPECT_EQ(nb.fis.dense_last_steps, 1);
  const QualityVariant ns = quality_variant("balanced-no-step-protection");
  EXPECT_EQ(ns.fis.head, 1);
  EXPECT_EQ(ns.fis.dense_last_steps, 0);
  const QualityVariant np = quality_variant("balanced-no-protection");
  EXPECT_EQ(np.fis.stride, 3);
  EXPECT_EQ(np.fis.head + np.fis.tail + np.fis.dense_last_steps, 0);
  EXPECT_TRUE(np.fis.interleave);
  for (const QualityVariant& v : {ni, nb, ns, np}) EXPECT_FALSE(v.ablation.empty()) << v.name;
  // Every listed name parses, the defaults among them.
  for (const std::string& name : quality_variant_names())
    EXPECT_EQ(quality_variant(name).name, name);
  EXPECT_EQ(default_quality_variants().size(), 8u);
  for (const std::string& name : default_quality_variants()) quality_variant(name);
  const std::string err = error_of([] { quality_variant("balanced-no-anything"); });
  EXPECT_TRUE(contains(err, "variants: unknown variant 'balanced-no-anything'"));
  EXPECT_TRUE(contains(err, "fast-no-step-protection"));  // the valid names are listed
  // fp8-<variant> and fp8-gemm-<variant>: the same FIS setting in that precision; "fp8" or
  // "fp8-gemm" alone is dense in it.
  for (const std::string& name : quality_variant_names())
    EXPECT_EQ(quality_variant(name).precision, "bf16") << name;
  for (const std::string p : {"fp8", "fp8-gemm"}) {
    const QualityVariant dense = quality_variant(p), bal = quality_variant(p + "-balanced");
    EXPECT_EQ(dense.precision, p);
    EXPECT_FALSE(dense.fis.enabled());
    EXPECT_EQ(bal.precision, p);
    EXPECT_EQ(bal.name, p + "-balanced");
    EXPECT_EQ(bal.fis.stride, b.fis.stride);
    EXPECT_EQ(quality_variant(p + "-fast-no-interleave").fis.interleave, false);
  }
  for (const char* bad : {"fp8-", "fp8-fp8", "fp8-fp8-balanced", "fp8balanced", "fp8-gemm-",
                          "fp8-gemm-fp8", "fp8-fp8-gemm", "fp8-gemm-fp8-gemm-fast"})
    EXPECT_TRUE(contains(error_of([&] { quality_variant(bad); }), "unknown variant")) << bad;
}

TEST(ModelDefaults, ReadsFisditJsonAndNamesBadFields) {
  TempDir dir;
  EXPECT_TRUE(read_model_defaults(dir.path().string()).path.empty());  // none: all empty
  std::ofstream(dir.file("fisdit.json"))
      << R"({"name": "tiny", "size": "64x32", "frames": 9, "steps": 2, "shift": 3.5,
             "guidance": 1.5, "solver": "unipc", "held_out_prompts": ["a", "b c"],
             "training": {"steps": 10}})";
  const ModelDefaults d = read_model_defaults(dir.path().string());
  EXPECT_EQ(d.path, dir.file("fisdit.json"));
  EXPECT_EQ(d.name, "tiny");
  EXPECT_EQ(d.size, "64x32");
  EXPECT_EQ(d.frames, 9);
  EXPECT_EQ(d.steps, 2);
  EXPECT_EQ(d.shift, 3.5);
  EXPECT_EQ(d.guidance, 1.5f);
  EXPECT_EQ(d.solver, "unipc");
  EXPECT_EQ(d.held_out_prompts, (std::vector<std::string>{"a", "b c"}));
  std::ofstream(dir.file("fisdit.json")) << R"({"frames": "nine"})";
  const std::string err = error_of([&] { read_model_defaults(dir.path().string()); });
  EXPECT_TRUE(contains(err, "fisdit.json: 'frames' must be an integer")) << err;
  std::ofstream(dir.file("fisdit.json")) << "{";
  EXPECT_TRUE(
      contains(error_of([&] { read_model_defaults(dir.path().string()); }), "not valid JSON"));
}

// A loaded Generator gives what generate() gives, request after request; the redundancy hook and
// decode = false change nothing else.
TEST(QualityGenerator, KeepsTheModelLoadedAndReproducesGenerate) {
  TempDir dir;
  make_release(dir.path(), "t2v");  // two experts: both stay loaded
  GenerateOptions o;
  o.model = dir.path().string();
  o.prompt = "a red square";
  o.width = o.height = 32;
  o.frames = 9;
  o.device = "cpu";
  o.progress = false;
  o.fis = accel::fis_preset("balanced");
  o.fis.head = o.fis.tail = 0;
  const GenerateResult expect = generate(o);
  Generator g(o, /*keep_loaded=*/true);
  EXPECT_TRUE(g.two_experts());
  EXPECT_EQ(g.model_info().num_blocks, 4);
  const GenerateResult first = g.run(o);
  EXPECT_TRUE(same(first.latent, expect.latent));
  EXPECT_TRUE(same(first.video, expect.video));
  GenerateOptions other = o;
  other.prompt = "a blue circle";
  other.seed = 3;
  const GenerateResult second = g.run(other);
  EXPECT_GT(rel_l2(second.latent, first.latent), 1e-3);
  EXPECT_TRUE(same(second.latent, generate(other).latent));
  EXPECT_EQ(second.summary.at("seconds").at("dit_load").get<double>(), 0.0) << "loaded once";

  analysis::RedundancyRecorder recorder(o.steps, 4);
  o.on_forward = recorder.hook(1.0);
  o.decode = false;
  const GenerateResult hooked = g.run(o);
  EXPECT_TRUE(same(hooked.latent, expect.latent)) << "the hook runs the same forward";
  EXPECT_FALSE(hooked.video.defined());
  EXPECT_EQ(recorder.frames(), 3);
  json j;
  recorder.write(j);
  ASSERT_EQ(j.at("cv").size(), 4u);
  for (const json& step : j.at("cv"))
    for (const json& cv : step) EXPECT_GT(cv.get<double>(), 0.0);
  EXPECT_TRUE(same(g.decode(hooked.latent), expect.video));

  GenerateOptions elsewhere = o;
  elsewhere.model = dir.file("other");
  EXPECT_TRUE(contains(error_of([&] { g.run(elsewhere); }), "the generator holds"));
}

class QualityCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    make_release(dir_.path() / "release", "t2v", /*single_dit=*/true);
    std::ofstream(dir_.file("prompts.txt"))
        << "a red square moves left on a blue background\n\n  \na green circle grows\n";
  }
  int run(const std::string& args, std::string& err) {
    return iotest::run_fisdit(args, dir_.file("stderr.txt"), err);
  }
  std::string release() const { return (dir_.path() / "release").string(); }
  static json load(const std::string& path) {
    std::ifstream in(path);
    return json::parse(in);
  }
  TempDir dir_;
};

TEST_F(QualityCommand, WritesTheReportWithAnExactDenseRow) {
  const std::string out = dir_.file("report");
  std::string err;
  ASSERT_EQ(run("quality --model " + release() + " --prompts " + dir_.file("prompts.txt") +
                    " --variants dense,balanced,balanced-no-protection --size 32x32 --frames 17"
                    " --device cpu --output-dir " +
                    out,
                err),
            0)
      << err;
  EXPECT_TRUE(contains(err, "[1/8] prompt 1/2, seed 0: dense reference"));
  EXPECT_TRUE(contains(err, "[8/8] prompt 2/2, seed 0: balanced-no-protection: latent rel. L2"));
  for (const char* f : {"quality.json", "quality.md", "analysis.json"})
    EXPECT_TRUE(fs::exists(fs::path(out) / f)) << f;
  for (const char* f : {"cv_heatmap.png", "rel_change.png", "frame_psnr.png"})
    EXPECT_EQ(fs::exists(fs::path(out) / f), analysis::figures_available()) << f;

  const json q = load(out + "/quality.json");
  EXPECT_EQ(q.at("format"), "fisdit-quality");
  EXPECT_EQ(q.at("settings").at("prompts").size(), 2u);  // blank lines skipped
  EXPECT_EQ(q.at("settings").at("latent"), json({16, 5, 4, 4}));
  EXPECT_EQ(q.at("reference").at("runs").size(), 2u);
  ASSERT_EQ(q.at("runs").size(), 6u);
  std::map<std::string, json> v;
  for (const json& row : q.at("variants")) v[row.at("name")] = row;
  ASSERT_EQ(v.size(), 3u);
  // Dense against the reference: the same sampling again, bit for bit.
  for (const json& r : q.at("runs")) {
    if (r.at("variant") != "dense") continue;
    EXPECT_EQ(r.at("latent_rel_l2").get<double>(), 0.0);
    EXPECT_TRUE(r.at("latent_identical").get<bool>());
    EXPECT_EQ(r.at("psnr_db"), "inf");
    EXPECT_EQ(r.at("ssim").get<double>(), 1.0);
  }
  EXPECT_EQ(v["dense"].at("flops").at("ratio").get<double>(), 1.0);
  EXPECT_EQ(v["dense"].at("psnr_db").at("mean"), "inf");
  // FIS runs differ from dense by finite, positive amounts.
  for (const char* name : {"balanced", "balanced-no-protection"}) {
    SCOPED_TRACE(name);
    const json& s = v[name];
    EXPECT_EQ(s.at("runs"), 2);
    const double rel = s.at("latent_rel_l2").at("mean");
    EXPECT_GT(rel, 1e-5);
    EXPECT_LT(rel, 1.0);
    const double psnr = s.at("psnr_db").at("mean");
    EXPECT_TRUE(std::isfinite(psnr));
    EXPECT_GT(psnr, 10.0);
    EXPECT_LE(s.at("psnr_db").at("min").get<double>(), psnr);
    const double ssim = s.at("ssim").at("mean");
    EXPECT_GT(ssim, 0.0);
    EXPECT_LT(ssim, 1.0);
    EXPECT_GT(s.at("denoise_seconds").at("median").get<double>(), 0.0);
    EXPECT_GT(s.at("denoise_seconds").at("mean").get<double>(), 0.0);
    EXPECT_EQ(s.at("frame_psnr_db").size(), 17u);
  }
  // 4 blocks, 4 steps, 5 latent frames: balanced runs blocks 1-2 sparse on steps 0-2; without
  // protection all 4 blocks on all 4 steps: fewer FLOPs, both below dense.
  const double fb = v["balanced"].at("flops").at("ratio"),
               fn = v["balanced-no-protection"].at("flops").at("ratio");
  EXPECT_LT(fb, 1.0);
  EXPECT_LT(fn, fb);

  const json a = load(out + "/analysis.json");
  EXPECT_EQ(a.at("format"), "fisdit-analysis");
  EXPECT_EQ(a.at("samples").size(), 2u);
  ASSERT_EQ(a.at("cv").size(), 4u);
  for (const json& step : a.at("cv")) {
    ASSERT_EQ(step.size(), 4u);
    for (const json& cv : step) EXPECT_GT(cv.get<double>(), 0.0);
  }
  EXPECT_EQ(q.at("cv"), a.at("cv"));

  std::ifstream md_in(out + "/quality.md");
  std::stringstream md;
  md << md_in.rdbuf();
  EXPECT_TRUE(contains(md.str(), "| balanced-no-protection | s=3, head 0, tail 0, no dense step"));
  EXPECT_TRUE(contains(md.str(), "| 2 | a green circle grows |"));
  EXPECT_TRUE(contains(md.str(), q.at("command").get<std::string>()));

  // The recorded command reproduces the numbers.
  std::string command = q.at("command");
  ASSERT_EQ(command.rfind("fisdit quality ", 0), 0u) << command;
  ASSERT_EQ(run(command.substr(7) + " --quiet", err), 0) << err;
  EXPECT_FALSE(contains(err, "[1/8]")) << "--quiet: no progress lines";
  const json again = load(out + "/quality.json");
  ASSERT_EQ(again.at("runs").size(), q.at("runs").size());
  for (size_t i = 0; i < q.at("runs").size(); ++i) {
    EXPECT_EQ(again.at("runs")[i].at("latent_rel_l2"), q.at("runs")[i].at("latent_rel_l2"));
    EXPECT_EQ(again.at("runs")[i].at("psnr_db"), q.at("runs")[i].at("psnr_db"));
  }
}

// fp8 rows (the CPU reference of --precision fp8) against the same bf16 dense reference: close to
// it but not equal, and --precision fp8 names every variant so.
TEST_F(QualityCommand, Fp8VariantsAreComparedWithTheBf16Reference) {
  const std::string out = dir_.file("fp8");
  std::string err;
  ASSERT_EQ(run("quality --model " + release() + " --prompts " + dir_.file("prompts.txt") +
                    " --variants dense,fp8,fp8-balanced --size 32x32 --frames 17 --device cpu"
                    " --no-figures --quiet --output-dir " +
                    out,
                err),
            0)
      << err;
  const json q = load(out + "/quality.json");
  std::map<std::string, json> v;
  for (const json& row : q.at("variants")) v[row.at("name")] = row;
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v["dense"].at("precision"), "bf16");
  EXPECT_EQ(v["dense"].at("psnr_db").at("mean"), "inf");
  for (const char* name : {"fp8", "fp8-balanced"}) {
    SCOPED_TRACE(name);
    EXPECT_EQ(v[name].at("precision"), "fp8");
    const double rel = v[name].at("latent_rel_l2").at("mean");
    EXPECT_GT(rel, 1e-5);
    EXPECT_LT(rel, 0.5);
    const double psnr = v[name].at("psnr_db").at("mean");
    EXPECT_TRUE(std::isfinite(psnr));
    EXPECT_GT(psnr, 15.0);
  }
  EXPECT_GT(v["fp8"].at("psnr_db").at("mean").get<double>(),
            v["fp8-balanced"].at("psnr_db").at("mean").get<double>());
  // --precision fp8 maps the variants and the recorded command names them.
  ASSERT_EQ(run("quality --model " + release() + " --prompts " + dir_.file("prompts.txt") +
                    " --variants dense,balanced --precision fp8 --seeds 1 --size 32x32 --frames "
                    "17 --device cpu --no-figures --quiet --output-dir " +
                    out,
                err),
            0)
      << err;
  const json p = load(out + "/quality.json");
  ASSERT_EQ(p.at("variants").size(), 2u);
  EXPECT_EQ(p.at("variants")[0].at("name"), "fp8");
  EXPECT_EQ(p.at("variants")[1].at("name"), "fp8-balanced");
  EXPECT_TRUE(contains(p.at("command").get<std::string>(), "--variants fp8,fp8-balanced"));
  EXPECT_NE(
      run("quality --model " + release() + " --precision fp16 --device cpu --output-dir " + out,
          err),
      0);
  EXPECT_TRUE(contains(err, "--precision")) << err;
}

TEST_F(QualityCommand, TakesDefaultsAndPromptsFromFisditJson) {
  std::ofstream(fs::path(release()) / "fisdit.json")
      << R"({"name": "tiny-shapes", "size": "32x16", "frames": 9, "steps": 2, "shift": 3.0,
             "held_out_prompts": ["a red square", "a blue circle", "a pink diamond"]})";
  const std::string out = dir_.file("defaults");
  std::string err;
  ASSERT_EQ(run("quality --model " + release() +
                    " --variants fast --steps 3 --device cpu"
                    " --no-figures --output-dir " +
                    out,
                err),
            0)
      << err;
  EXPECT_TRUE(contains(err, "defaults from " + release() + "/fisdit.json"));
  const json q = load(out + "/quality.json");
  const json& s = q.at("settings");
  EXPECT_EQ(s.at("width"), 32);
  EXPECT_EQ(s.at("height"), 16);
  EXPECT_EQ(s.at("frames"), 9);
  EXPECT_EQ(s.at("steps"), 3);  // the flag wins
  EXPECT_EQ(s.at("shift"), 3.0);
  EXPECT_EQ(s.at("prompts").size(), 3u);
  EXPECT_EQ(q.at("model").at("name"), "tiny-shapes");
  EXPECT_EQ(q.at("runs").size(), 3u);
  EXPECT_FALSE(fs::exists(fs::path(out) / "cv_heatmap.png"));
  std::ifstream md(out + "/quality.md");
  std::string first;
  std::getline(md, first);
  EXPECT_EQ(first, "# FIS quality: tiny-shapes");
}

// A calibrated preset (a JSON file as `fisdit calibrate` writes it) is a row of its own, named by
// its path, with its own stride and protections; a file that is not a preset is named.
TEST_F(QualityCommand, TakesAPresetFileAsAVariant) {
  accel::FisConfig c = accel::fis_preset("balanced");
  c.name = "calibrated";
  c.stride = 2;
  c.tail = 0;
  const std::string preset = dir_.file("calibrated.json");
  std::ofstream(preset) << c.to_json().dump(2);
  const QualityVariant v = quality_variant(preset);
  EXPECT_EQ(v.name, preset);
  EXPECT_EQ(v.fis.stride, 2);
  EXPECT_EQ(v.fis.tail, 0);
  EXPECT_EQ(v.fis.head, 1);
  EXPECT_TRUE(v.ablation.empty());

  std::ofstream(dir_.file("p1.txt")) << "a red square moves left on a blue background\n";
  const std::string out = dir_.file("report");
  std::string err;
  ASSERT_EQ(run("quality --model " + release() + " --prompts " + dir_.file("p1.txt") +
                    " --variants balanced," + preset +
                    " --size 32x32 --frames 17 --device cpu --no-figures --output-dir " + out,
                err),
            0)
      << err;
  const json q = load(out + "/quality.json");
  std::map<std::string, json> rows;
  for (const json& row : q.at("variants")) rows[row.at("name")] = row;
  ASSERT_EQ(rows.count(preset), 1u) << q.at("variants").dump();
  // 4 blocks: the preset computes half the frames in blocks 1-3, balanced a third in blocks 1-2;
  // both below dense, and not the same.
  const double fp = rows[preset].at("flops").at("ratio"),
               fb = rows["balanced"].at("flops").at("ratio");
  EXPECT_LT(fp, 1.0);
  EXPECT_NE(fp, fb);
  EXPECT_GT(rows[preset].at("latent_rel_l2").at("mean").get<double>(), 0.0);

  std::ofstream(dir_.file("not-a-preset.json")) << "{\"stride\": \"three\"}";
  EXPECT_NE(run("quality --model " + release() + " --prompts " + dir_.file("p1.txt") +
                    " --variants " + dir_.file("not-a-preset.json") +
                    " --size 32x32 --frames 17 --device cpu --output-dir " + out,
                err),
            0);
  EXPECT_TRUE(contains(err, dir_.file("not-a-preset.json"))) << err;
}

TEST_F(QualityCommand, BadFlagsAreNamed) {
  const std::string base = "quality --model " + release() + " --device cpu --size 32x32 --frames 9";
  const std::string out = " --output-dir " + dir_.file("o");
  std::string err;
  EXPECT_NE(run(base + out, err), 0);  // no fisdit.json, no --prompts
  EXPECT_TRUE(contains(err, "no prompts: give --prompts FILE")) << err;
  EXPECT_NE(run(base + " --prompts " + dir_.file("missing.txt") + out, err), 0);
  EXPECT_TRUE(contains(err, "--prompts " + dir_.file("missing.txt") + ": cannot open")) << err;
  std::ofstream(dir_.file("empty.txt")) << "\n \n";
  EXPECT_NE(run(base + " --prompts " + dir_.file("empty.txt") + out, err), 0);
  EXPECT_TRUE(contains(err, "no prompt in the file")) << err;
  const std::string prompts = " --prompts " + dir_.file("prompts.txt");
  EXPECT_NE(run(base + prompts + " --variants dense,balancd" + out, err), 0);
  EXPECT_TRUE(contains(err, "--variants: unknown variant 'balancd'")) << err;
  EXPECT_TRUE(contains(err, "balanced-no-protection")) << err;
  EXPECT_TRUE(contains(err, "or a FIS preset JSON file")) << err;
  EXPECT_NE(run(base + prompts + " --variants fast,fast" + out, err), 0);
  EXPECT_TRUE(contains(err, "'fast' is listed twice")) << err;
  EXPECT_NE(run(base + prompts + " --seeds 0,x" + out, err), 0);
  EXPECT_TRUE(contains(err, "--seeds: 'x'")) << err;
  std::ofstream(dir_.file("a-file")) << "x";
  EXPECT_NE(run(base + prompts + " --output-dir " + dir_.file("a-file") + "/sub", err), 0);
  EXPECT_TRUE(contains(err, "--output-dir " + dir_.file("a-file") + "/sub: cannot create")) << err;
  // no --model: the bundled model, or FISDIT_MODEL when set (here to a file, not a model)
  {
    test::EnvScope model("FISDIT_MODEL", dir_.file("a-file").c_str());
    EXPECT_NE(run("quality --device cpu" + prompts + out, err), 0);
  }
  EXPECT_TRUE(contains(err, "FISDIT_MODEL=" + dir_.file("a-file") + ": not a directory")) << err;
  EXPECT_NE(run(base + prompts, err), 0);
  EXPECT_TRUE(contains(err, "--output-dir")) << err;
  EXPECT_NE(
      run("quality --model " + release() + " --device cpu --size 32x32 --frames 8" + prompts + out,
          err),
      0);  // the model's own check
  EXPECT_TRUE(contains(err, "--frames 8: must be 4k+1")) << err;
  EXPECT_FALSE(fs::exists(dir_.file("o") + "/quality.json"));
}

}  // namespace
}  // namespace fisdit::pipeline
