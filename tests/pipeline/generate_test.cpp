// fisdit generate end to end on tiny releases assembled from the official fixtures (random
// weights: the videos are noise, but every stage and its wiring is the real one).
#include "pipeline/generate.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "../env_scope.h"
#include "../io/io_test_util.h"
#include "../models/t5_hf_names.h"
#include "core/random.h"
#include "io/safetensors.h"
#include "media/image.h"
#include "media/video.h"
#include "models/family.h"
#include "models/wan/dit.h"
#include "models/wan/loader.h"
#include "models/wan/release.h"
#include "models/wan/t5.h"
#include "models/wan/vae.h"
#include "pipeline/output.h"
#include "tiny_release.h"

namespace fisdit::pipeline {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::param_of;
using iotest::TempDir;
namespace fs = std::filesystem;
using tiny_release::data;
using tiny_release::make_release;

GenerateOptions tiny(const fs::path& root) {
  GenerateOptions o;
  o.model = root.string();
  o.prompt = "a red square moves left on a blue background";
  o.width = 32;
  o.height = 32;
  o.frames = 17;  // 5 latent frames
  o.steps = 4;
  o.shift = 5.0;
  o.seed = 7;
  o.device = "cpu";
  o.progress = false;
  return o;
}

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// `o` (a request on the release in `root`) with the DiT fixture as a single-file model and the
// release's text encoder, tokenizer and VAE: the DiT's text embedding takes 48 channels, the tiny
// umT5 gives 64.
GenerateOptions with_mismatched_text_encoder(GenerateOptions o, const fs::path& root) {
  const fs::path other = root / "other";
  fs::create_directories(other);
  fs::copy_file(data("wan/dit_t2v_tiny.safetensors"), other / "dit.safetensors");
  o.model = (other / "dit.safetensors").string();
  o.parts["text_encoder"] = (root / "models_t5_umt5-xxl-enc-bf16.safetensors").string();
  o.parts["tokenizer"] = (root / "google/umt5-xxl").string();
  o.parts["vae"] = (root / "Wan2.1_VAE.safetensors").string();
  return o;
}

TEST(Generate, TextToVideoWithTwoExperts) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  const GenerateResult r = generate(o);
  EXPECT_EQ(r.task, models::Task::T2V);
  ASSERT_EQ(r.video.shape(), (Shape{3, 17, 32, 32}));
  ASSERT_EQ(r.latent.shape(), (Shape{16, 5, 4, 4}));
  bool nonconstant = false;
  for (int64_t i = 0; i < r.video.numel(); ++i) {
    const float v = r.video.f32()[i];
    ASSERT_TRUE(std::isfinite(v) && v >= -1.0f && v <= 1.0f) << i;
    nonconstant = nonconstant || v != r.video.f32()[0];
  }
  EXPECT_TRUE(nonconstant);
  // Lightning schedule at shift 5: t = 1000, 937.5 on the high-noise expert (>= 875), then
  // 833.3 and 625 on the low-noise one.
  const auto& steps = r.summary.at("steps");
  ASSERT_EQ(steps.size(), 4u);
  EXPECT_EQ(steps[0].at("expert"), "high-noise expert");
  EXPECT_EQ(steps[1].at("expert"), "high-noise expert");
  EXPECT_EQ(steps[2].at("expert"), "low-noise expert");
  EXPECT_EQ(steps[3].at("expert"), "low-noise expert");
  EXPECT_GT(r.summary.at("prompt_tokens").get<int>(), 2);
  for (const char* stage : {"text_load", "text_encode", "dit_load", "denoise", "vae_decode"})
    EXPECT_TRUE(r.summary.at("seconds").contains(stage)) << stage;
  // Expert loads are timed apart from the steps: in steps 1 and 3 (where each expert is first
  // needed), adding up to dit_load; the CPU backend tracks no device memory.
  double loads = 0;
  for (size_t i = 0; i < 4; ++i) {
    const double load = steps[i].at("expert_load_seconds").get<double>();
    EXPECT_EQ(load > 0, i == 0 || i == 2) << i;
    EXPECT_GE(steps[i].at("seconds").get<double>(), 0.0) << i;
    loads += load;
  }
  EXPECT_NEAR(loads, r.summary.at("seconds").at("dit_load").get<double>(), 1e-9);
  EXPECT_FALSE(r.summary.contains("gpu_peak_gib"));
}

// A diffusers release (model_index.json, transformer/, transformer_2/, vae/ in AutoencoderKLWan
// names: the fixture renamed by tools/fixtures/make_diffusers_vae.py's name map) gives the same
// video as the official layout with the same weights.
// The MP4 encoded while the decode runs (StreamedMp4 fed by on_frames) is byte for byte the file
// write_mp4 makes of the finished video: every frame reached the sink once, in order, clamped.
// A stream dropped before finish() leaves no file.
TEST(Generate, FramesStreamedDuringTheDecodeMakeTheSameMp4) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  // Two latent frames per decode chunk after the first (tiny frames would take all four at once).
  test::EnvScope chunk_env("FISDIT_VAE_DECODE_CHUNK", "2");
  OutputOptions out;
  out.output = dir.file("streamed.mp4");
  StreamedMp4 mp4(out, 16.0);
  const models::Release::FrameSink sink = mp4.sink();
  int64_t next = 0, runs = 0;
  bool clamped = true;
  o.on_frames = [&](const Tensor& video, int64_t first, int64_t count) {
    EXPECT_EQ(first, next);
    next = first + count;
    ++runs;
    const int64_t plane = video.dim(2) * video.dim(3);
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < count * plane; ++i) {
        const float v = video.f32()[(c * video.dim(1) + first) * plane + i];
        clamped = clamped && v >= -1.0f && v <= 1.0f;
      }
    sink(video, first, count);
  };
  const GenerateResult r = generate(o);
  EXPECT_EQ(next, 17);
  EXPECT_EQ(runs, 3);  // one per decode chunk: 1 + 2 x 8 frames
  EXPECT_TRUE(clamped);
  const Mp4Result m = mp4.finish();
  EXPECT_EQ(m.frames, 17);
  const std::string whole = dir.file("whole.mp4");
  write_mp4(whole, r.video, 16.0);
  const auto bytes = [](const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  EXPECT_GT(bytes(whole).size(), 100u);
  EXPECT_EQ(bytes(out.output), bytes(whole));

  OutputOptions dropped;
  dropped.output = dir.file("dropped.mp4");
  {
    StreamedMp4 stream(dropped, 16.0);
    stream.sink()(r.video, 0, 3);
  }
  EXPECT_FALSE(fs::exists(dropped.output));
}

TEST(Generate, DiffusersReleaseReadsItsVaeTextEncoderAndTokenizer) {
  for (const std::string task : {"t2v", "ti2v"}) {  // Wan 2.1 and Wan 2.2 VAE
    SCOPED_TRACE(task);
    TempDir dir;
    const fs::path off = dir.path() / "official", dif = dir.path() / "diffusers";
    make_release(off, task);
    fs::create_directories(dif / "vae");
    std::ofstream(dif / "model_index.json")
        << R"({"_class_name": "WanPipeline", "boundary_ratio": 0.875})";
    if (task == "ti2v") {
      fs::create_directories(dif / "transformer");
      for (const char* f : {"diffusion_pytorch_model.safetensors", "config.json"})
        fs::copy_file(off / f, dif / "transformer" / f);
    } else {
      fs::copy(off / "high_noise_model", dif / "transformer");
      fs::copy(off / "low_noise_model", dif / "transformer_2");
    }
    const std::string vae = task == "ti2v" ? "vae22_tiny" : "vae21_tiny";
    std::ifstream in(data("wan/" + vae + ".diffusers.json"));
    const nlohmann::json m = nlohmann::json::parse(in);
    const auto f = SafetensorsFile::open(data("wan/" + vae + ".safetensors"));
    NamedTensors w;
    for (const auto& [official, diffusers] : m.at("names").items())
      w.emplace_back(diffusers, f->tensor_f32("model." + official));
    write_safetensors((dif / "vae/diffusion_pytorch_model.safetensors").string(), w);
    std::ofstream(dif / "vae/config.json") << m.at("config").dump();

    GenerateOptions o = tiny(off);
    o.steps = 1;
    o.frames = 5;
    const GenerateResult a = generate(o);
    o.model = dif.string();
    o.parts["text_encoder"] = (off / "models_t5_umt5-xxl-enc-bf16.safetensors").string();
    o.parts["tokenizer"] = (off / "google/umt5-xxl").string();
    const GenerateResult b = generate(o);
    EXPECT_TRUE(same(a.latent, b.latent));
    EXPECT_TRUE(same(a.video, b.video)) << "the diffusers VAE decodes as the official one";

    // text_encoder/ (UMT5EncoderModel names) and tokenizer/ found in the diffusers directory
    fs::create_directories(dif / "text_encoder");
    fs::create_directories(dif / "tokenizer");
    fs::copy_file(off / "google/umt5-xxl/spiece.model", dif / "tokenizer/spiece.model");
    const auto t5 = SafetensorsFile::open(data("wan/t5_tiny.safetensors"));
    NamedTensors hf;
    for (const TensorInfo& info : t5->tensors())
      if (info.name.rfind("model.", 0) == 0)
        hf.emplace_back(t5test::hf_name(info.name.substr(6)), t5->tensor_f32(info.name));
    write_safetensors((dif / "text_encoder/model.safetensors").string(), hf);
    o.parts = {};
    const GenerateResult c = generate(o);
    EXPECT_EQ(c.summary.at("paths").at("text_encoder"), (dif / "text_encoder").string());
    EXPECT_EQ(c.summary.at("paths").at("tokenizer"), (dif / "tokenizer").string());
    EXPECT_TRUE(same(a.latent, c.latent)) << "the diffusers text encoder encodes as the official";
  }
}

TEST(Generate, SeedsAreReproducibleAndFisChangesTheResult) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  o.fis = accel::fis_preset("off");
  const Tensor a = generate(o).latent, b = generate(o).latent;
  EXPECT_TRUE(same(a, b)) << "same seed, same backend: identical latents";
  o.seed = 8;
  EXPECT_GT(rel_l2(generate(o).latent, a), 0.1) << "another seed, other noise";
  o.seed = 7;
  o.fis = accel::fis_preset("balanced");
  o.fis.head = 0;
  o.fis.tail = 0;
  o.fis.dense_last_steps = 0;
  const Tensor sparse = generate(o).latent;
  const double err = rel_l2(sparse, a);
  EXPECT_GT(err, 1e-5) << "FIS ran no sparse block";
  EXPECT_LT(err, 1.0);
}

TEST(Generate, GuidanceUsesTheNegativePrompt) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  o.guidance = 3.0f;
  o.negative = "blurry";
  const Tensor a = generate(o).latent;
  o.negative = "a green circle";
  EXPECT_GT(rel_l2(generate(o).latent, a), 1e-4);
}

TEST(Generate, ImageToVideoConditionsOnTheFirstFrame) {
  TempDir dir;
  make_release(dir.path(), "i2v");
  Tensor rgb = Tensor::zeros({40, 48, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
  write_png(dir.file("first.png"), rgb);
  GenerateOptions o = tiny(dir.path());
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "image: required"));
  o.image = dir.file("first.png");
  const GenerateResult r = generate(o);
  EXPECT_EQ(r.task, models::Task::I2V);
  // --size 32x32 is the area; the 48x40 image's aspect ratio makes it 32x16 (wan/image2video.py).
  ASSERT_EQ(r.video.shape(), (Shape{3, 17, 16, 32}));
  // Another first frame, another video.
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i);
  write_png(dir.file("other.png"), rgb);
  o.image = dir.file("other.png");
  EXPECT_GT(rel_l2(generate(o).latent, r.latent), 1e-4);
}

TEST(Generate, ImageToVideoSizeFollowsTheOfficialAreaRule) {
  // Expected values from wan/image2video.py's expression evaluated with numpy.
  using P = std::pair<int, int>;
  using wan::i2v_size;
  EXPECT_EQ(i2v_size(1280 * 720, 1280, 720, 8, 2, 2), (P{1280, 720}));
  EXPECT_EQ(i2v_size(1280 * 720, 1024, 768, 8, 2, 2), (P{1104, 816}));
  EXPECT_EQ(i2v_size(832 * 480, 480, 832, 8, 2, 2), (P{480, 832}));
  EXPECT_EQ(i2v_size(832 * 480, 1000, 1000, 8, 2, 2), (P{624, 624}));
  EXPECT_EQ(i2v_size(32 * 32, 48, 40, 8, 2, 2), (P{32, 16}));
  EXPECT_THROW(i2v_size(16, 1000, 10, 8, 2, 2), Error);
}

TEST(Generate, TextImageToVideoKeepsTheImageLatentAsFrameZero) {
  TempDir dir;
  make_release(dir.path(), "ti2v");
  Tensor rgb = Tensor::zeros({32, 32, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 5);
  write_png(dir.file("first.png"), rgb);
  GenerateOptions o = tiny(dir.path());
  o.image = dir.file("first.png");
  const GenerateResult with_image = generate(o);
  EXPECT_EQ(with_image.task, models::Task::TI2V);
  ASSERT_EQ(with_image.latent.shape(), (Shape{48, 5, 2, 2}));
  // Latent frame 0 is the VAE latent of the prepared image, normalised with Wan 2.2's statistics.
  const wan::VaeSource vs = wan::open_vae((dir.path() / "Wan2.2_VAE.safetensors").string());
  Tensor zi = wan::load_vae(vs)->encode(
      resize_and_center_crop(read_image(o.image), 32, 32).reshape({3, 1, 32, 32}));
  wan::normalize_latent(zi, wan::wan22_latent_stats());
  for (int64_t c = 0; c < 48; ++c)
    for (int64_t i = 0; i < 4; ++i)
      ASSERT_EQ(with_image.latent.f32()[(c * 5) * 4 + i], zi.f32()[c * 4 + i]) << c << "," << i;
  o.image.clear();  // TI2V also runs text-only
  const GenerateResult text_only = generate(o);
  // Frame 0 of the latent is the image's (normalised) latent, so it differs from the text-only
  // run there, and in the later frames through attention.
  EXPECT_GT(rel_l2(with_image.latent, text_only.latent), 1e-4);
}

TEST(Generate, LorasChangeTheirExpertAndMustMatchIt) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  const Tensor base = generate(o).latent;
  // A rank-2 LoRA on the first block's q projection (ComfyUI naming).
  write_safetensors(
      dir.file("lora.safetensors"),
      {{"diffusion_model.blocks.0.self_attn.q.lora_down.weight", randn({2, 128}, 5)},
       {"diffusion_model.blocks.0.self_attn.q.lora_up.weight", randn({128, 2}, 6)},
       {"diffusion_model.blocks.0.self_attn.q.alpha", Tensor::from_vector({2.0f}, {1})}});
  o.lora_high = dir.file("lora.safetensors");
  const Tensor high = generate(o).latent;
  EXPECT_GT(rel_l2(high, base), 1e-4);
  o.lora_high.clear();
  o.lora_low = dir.file("lora.safetensors");
  const Tensor low = generate(o).latent;
  EXPECT_GT(rel_l2(low, base), 1e-4);
  EXPECT_GT(rel_l2(low, high), 1e-4);  // each expert gets its own
  write_safetensors(dir.file("wrong.safetensors"),
                    {{"blocks.0.self_attn.q.lora_down.weight", randn({2, 96}, 5)},
                     {"blocks.0.self_attn.q.lora_up.weight", randn({128, 2}, 6)}});
  o.lora_low = dir.file("wrong.safetensors");
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "LoRA does not match the model"));
  o.lora_low = dir.file("missing.safetensors");
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "lora_low " + o.lora_low + ": no such"));
}

// A one-shot run prepares the first expert's host side while the text encoder (and the image
// encode) run, and the second expert's beside the first one's steps: on the CPU their weights are
// made on the host, the LoRAs merged, in the background. The video is the one of the stages one
// after the other, bit for bit (overlap_load false, or FISDIT_OVERLAP_LOAD=0).
TEST(Generate, ExpertPreparedBesideTheTextGivesTheSameVideo) {
  TempDir dir;
  make_release(dir.path() / "t2v", "t2v");
  write_safetensors(dir.file("lora.safetensors"),
                    {{"diffusion_model.blocks.0.self_attn.q.lora_down.weight", randn({2, 128}, 5)},
                     {"diffusion_model.blocks.0.self_attn.q.lora_up.weight", randn({128, 2}, 6)}});
  GenerateOptions o = tiny(dir.path() / "t2v");
  o.guidance = 3.0f;  // the negative prompt too
  o.negative = "blurry";
  o.lora_high = dir.file("lora.safetensors");
  o.lora_low = dir.file("lora.safetensors");
  o.overlap_load = false;
  const GenerateResult in_order = generate(o);
  EXPECT_FALSE(in_order.summary.at("overlap_load").get<bool>());
  EXPECT_EQ(in_order.summary.at("seconds").at("dit_load_overlapped").get<double>(), 0.0);
  o.overlap_load = true;
  const GenerateResult overlapped = generate(o);
  EXPECT_TRUE(overlapped.summary.at("overlap_load").get<bool>());
  EXPECT_TRUE(same(overlapped.latent, in_order.latent));
  EXPECT_TRUE(same(overlapped.video, in_order.video));
  const nlohmann::json& seconds = overlapped.summary.at("seconds");
  for (const char* stage : {"text_load", "text_encode", "dit_load", "dit_load_overlapped"})
    EXPECT_GE(seconds.at(stage).get<double>(), 0.0) << stage;
  const GenerateResult off = [&] {
    test::EnvScope no_overlap("FISDIT_OVERLAP_LOAD", "0");
    return generate(o);
  }();
  EXPECT_FALSE(off.summary.at("overlap_load").get<bool>());
  EXPECT_TRUE(same(off.latent, in_order.latent));

  // TI2V-5B with a first frame: the expert is prepared beside the image encode too.
  make_release(dir.path() / "ti2v", "ti2v");
  Tensor rgb = Tensor::zeros({32, 32, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 3);
  write_png(dir.file("first.png"), rgb);
  GenerateOptions ti2v = tiny(dir.path() / "ti2v");
  ti2v.image = dir.file("first.png");
  ti2v.overlap_load = false;
  const Tensor ti2v_in_order = generate(ti2v).video;
  ti2v.overlap_load = true;
  EXPECT_TRUE(same(generate(ti2v).video, ti2v_in_order));
}

// What the text stage holds on a device (generate keeps it free while the first expert goes up
// beside it on a GPU): one streamed umT5 block and two prompts' activations over the DiT's
// text_len, from the file's own config; nothing is loaded to say so.
TEST(Generate, TheTextStageSaysWhatItHoldsWithoutLoading) {
  TempDir dir;
  make_release(dir.path() / "t2v", "t2v");
  auto release = models::open_release((dir.path() / "t2v").string(), {});
  auto cpu = make_cpu_backend();
  const wan::T5Config c =
      wan::open_t5((dir.path() / "t2v/models_t5_umt5-xxl-enc-bf16.safetensors").string()).config;
  const int64_t bytes = release->text_stage_bytes(*cpu);
  EXPECT_EQ(bytes, wan::t5_streamed_bytes(c, cpu->weight_dtype(), 32, 2));
  // At least one block's matrices in F32 (the CPU backend's weights) and its activations.
  const int64_t matrices = 4 * (4 * int64_t{c.dim} * c.dim_attn + 3 * int64_t{c.dim} * c.dim_ffn);
  EXPECT_GT(bytes, matrices);
  EXPECT_LT(bytes, 2 * matrices + 4 * 2 * 32 *
                                      (4 * c.dim + 4 * c.dim_attn + 2 * c.dim_ffn +
                                       int64_t{c.num_heads} * 32));
}

// Whatever fails while an expert is prepared in the background fails as before: a tensor missing
// from the expert's file or a LoRA that does not fit it (the first expert's or the second's)
// gives the load's own error (the background's failure only leaves nothing prepared), and a text
// encoder that does not fit the DiT ends the run at the text stage with its error, the
// background work stopped.
TEST(Generate, AFailingBackgroundLoadGivesTheSameError) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  const auto both_ways = [&](const GenerateOptions& request) {
    GenerateOptions r = request;
    r.overlap_load = false;
    const std::string in_order = error_of([&] { generate(r); });
    r.overlap_load = true;
    EXPECT_EQ(error_of([&] { generate(r); }), in_order);
    return in_order;
  };
  // A LoRA whose down matrix does not fit the high-noise expert.
  write_safetensors(dir.file("wrong.safetensors"),
                    {{"blocks.0.self_attn.q.lora_down.weight", randn({2, 96}, 5)},
                     {"blocks.0.self_attn.q.lora_up.weight", randn({128, 2}, 6)}});
  GenerateOptions lora = o;
  lora.lora_high = dir.file("wrong.safetensors");
  EXPECT_TRUE(contains(both_ways(lora), "LoRA does not match the model"));
  lora = o;
  lora.lora_low = dir.file("wrong.safetensors");  // prepared beside the high-noise steps
  EXPECT_TRUE(contains(both_ways(lora), "LoRA does not match the model"));
  // Rewrites an expert's file without one tensor.
  const auto drop = [&](const char* expert, const std::string& name) {
    const fs::path file = dir.path() / expert / "diffusion_pytorch_model.safetensors";
    const auto f = SafetensorsFile::open(file.string());
    NamedTensors kept;
    for (const TensorInfo& t : f->tensors())
      if (t.name != name) kept.emplace_back(t.name, f->tensor_f32(t.name));
    const fs::path tmp = dir.path() / "expert.tmp";
    write_safetensors(tmp.string(), kept);
    fs::rename(tmp, file);
  };
  // A tensor missing from the low-noise expert's file (the file restored after).
  const fs::path low = dir.path() / "low_noise_model" / "diffusion_pytorch_model.safetensors";
  fs::copy_file(low, dir.path() / "low.kept");
  drop("low_noise_model", "blocks.1.self_attn.o.weight");
  EXPECT_TRUE(contains(both_ways(o), "'blocks.1.self_attn.o.weight'"));
  fs::rename(dir.path() / "low.kept", low);
  // A tensor missing from the high-noise expert's file.
  drop("high_noise_model", "blocks.3.ffn.2.bias");
  EXPECT_TRUE(contains(both_ways(o), "'blocks.3.ffn.2.bias'"));
  EXPECT_TRUE(contains(both_ways(o), "is missing"));
  // A text encoder that does not fit the DiT: the text stage's error, while the DiT is prepared.
  EXPECT_TRUE(contains(both_ways(with_mismatched_text_encoder(o, dir.path())), "text_dim is 48"));
}

TEST(Generate, RequestsThatDoNotFitTheModelNameTheParameter) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  o.frames = 16;
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "frames 16: must be 4k+1"));
  o = tiny(dir.path());
  o.width = 40;
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "size 40x32"));
  o = tiny(dir.path());
  o.image = "x.png";
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "text-to-video model and takes no image"));
  fs::remove(dir.path() / "Wan2.1_VAE.safetensors");
  o = tiny(dir.path());
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "vae: not in"));
  fs::remove_all(dir.path() / "low_noise_model");
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "low_noise_model/ is missing"));
}

// A request too large for memory (here a latent of ~10^17 bytes, beyond any address space, so
// the allocation fails whatever the machine's overcommit policy) is one error that says what ran
// out and what to change, not a crash.
TEST(Generate, OutOfHostMemoryIsOneClearError) {
  TempDir dir;
  make_release(dir.path() / "rel", "t2v");
  GenerateOptions o = tiny(dir.path() / "rel");
  o.width = o.height = 999984;
  o.frames = 400001;
  const std::string msg = error_of([&] { generate(o); });
  EXPECT_TRUE(contains(msg, "out of host memory allocating")) << msg;
  EXPECT_TRUE(contains(msg, "lower the size / frames, or run on a GPU (device cuda)")) << msg;
}

// --gpu-memory-limit on the CPU backend, which holds its tensors to the limit as a GPU of that
// size would: a limit just above the smallest streams the blocks of both experts from host memory
// and gives the unlimited run's video; below the smallest, one error names the limit that works.
TEST(Generate, MemoryLimitStreamsTheBlocksAndKeepsTheVideo) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  const GenerateResult want = generate(o);
  EXPECT_FALSE(want.summary.contains("dit_placement"));
  // The expert's smallest placement (outside the blocks and two block slots) and the reserve
  // this request's activations get.
  const wan::ModelSource src = wan::open_model((dir.path() / "high_noise_model").string());
  auto cpu = make_cpu_backend();
  const int64_t least = wan::load_dit(src, *cpu)->offload_plan().min_bytes;
  const models::ModelInfo info = wan::model_info(src.config);
  const int64_t reserve = info.activation_bytes(info.latent_grid(32, 32, 17), 4, false, false);
  const double gib = 1073741824.0;
  o.gpu_memory_limit = static_cast<double>(reserve + least + (int64_t{1} << 20)) / gib;
  const GenerateResult got = generate(o);
  EXPECT_TRUE(same(got.video, want.video));
  EXPECT_TRUE(same(got.latent, want.latent));
  ASSERT_TRUE(got.summary.contains("dit_placement")) << got.summary.dump();
  for (const char* expert : {"high-noise expert", "low-noise expert"})
    EXPECT_TRUE(contains(got.summary["dit_placement"].value(expert, ""),
                         "blocks streamed from host memory"))
        << got.summary["dit_placement"].dump();
  EXPECT_DOUBLE_EQ(got.summary.value("gpu_memory_limit_gib", 0.0), o.gpu_memory_limit);

  o.gpu_memory_limit = static_cast<double>(reserve + least - (int64_t{1} << 20)) / gib;
  try {
    generate(o);
    FAIL() << "expected the limit to be refused";
  } catch (const ParamError& e) {
    EXPECT_EQ(e.param(), "gpu-memory-limit");
    EXPECT_TRUE(contains(e.what(), "the smallest limit that would work is")) << e.what();
  }
  o.gpu_memory_limit = -1;
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "gpu-memory-limit"));
}

// --precision fp8-gemm and fp8 (the CPU reference): the DiT's block matrices in E4M3 (and in fp8
// its self-attention) move the latent a little from the default precision's, the summary says
// which ran, and an unknown precision is refused.
TEST(Generate, Fp8PrecisionStaysNearTheDefaultLatent) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  o.fis = accel::fis_preset("off");
  const GenerateResult want = generate(o);
  EXPECT_EQ(want.summary.value("vae_precision", ""), "fp32");  // the CPU's only VAE dtype
  Tensor previous;
  for (const char* precision : {"fp8-gemm", "fp8"}) {
    o.precision = precision;
    const GenerateResult got = generate(o);
    EXPECT_EQ(got.summary.value("precision", ""), precision);
    const double err = rel_l2(got.latent, want.latent);
    EXPECT_GT(err, 1e-5) << precision;
    EXPECT_LT(err, 0.1) << precision;
    if (previous.defined()) {
      EXPECT_GT(rel_l2(got.latent, previous), 1e-6);  // the attention's rounding
    }
    previous = got.latent;
  }
  o.precision = "int4";
  EXPECT_EQ(param_of([&] { generate(o); }), "precision");
}

TEST(Generate, TextEncoderMustMatchTheDit) {
  TempDir dir;
  make_release(dir.path(), "t2v");
  GenerateOptions o = tiny(dir.path());
  // The DiT fixture's own text embedding takes 48 channels; the tiny umT5 gives 64.
  o.parts["dit_low"] = "";
  o = with_mismatched_text_encoder(o, dir.path());
  EXPECT_TRUE(contains(error_of([&] { generate(o); }), "text_dim is 48"));
}

// The command line: MP4, PNG frames and the JSON summary; progress on stderr; bad flags.
TEST(Generate, CommandWritesVideoFramesAndSummary) {
  TempDir dir;
  make_release(dir.path() / "release", "t2v");
  auto run = [&](const std::string& args, std::string& err) {
    return iotest::run_fisdit("generate " + args, dir.file("stderr.txt"), err);
  };
  const std::string base = "--model " + (dir.path() / "release").string() +
                           " --prompt 'a red square' --size 32x32 --frames 17 --device cpu";
  std::string err;
  ASSERT_EQ(run(base + " --output " + dir.file("out.mp4") + " --frames-dir " + dir.file("frames") +
                    " --summary-json " + dir.file("s.json") + " --seed 3",
                err),
            0)
      << err;
  EXPECT_TRUE(contains(err, "denoise ["));
  EXPECT_TRUE(contains(err, "times: text ")) << err;
  EXPECT_TRUE(contains(err, " s, dit load ")) << err;
  EXPECT_TRUE(contains(err, " s, write ")) << err;
  EXPECT_FALSE(contains(err, "image encode")) << err;  // text-to-video has no image stage
  EXPECT_TRUE(contains(err, "wrote " + dir.file("out.mp4") + ": 17 frames 32x32 at 16 fps"));
  EXPECT_GT(fs::file_size(dir.file("out.mp4")), 100u);
  EXPECT_TRUE(fs::exists(dir.path() / "frames" / "frame_0016.png"));
  EXPECT_FALSE(fs::exists(dir.path() / "frames" / "frame_0017.png"));
  std::ifstream in(dir.file("s.json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("steps").size(), 4u);
  EXPECT_EQ(j.at("request").at("seed"), 3);
  EXPECT_EQ(j.at("output").at("fps"), 16.0);
  EXPECT_TRUE(j.at("seconds").contains("write"));

  // FIS balanced (the default) against the dense run with the same seed.
  ASSERT_EQ(run(base + " --save-latent " + dir.file("x.safetensors") + " --compare-dense" +
                    " --summary-json " + dir.file("c.json") + " --fis-head 0 --fis-tail 0",
                err),
            0)
      << err;
  EXPECT_TRUE(contains(err, "fidelity vs dense: latent rel. L2"));
  std::ifstream cin(dir.file("c.json"));
  const nlohmann::json c = nlohmann::json::parse(cin);
  const double latent_err = c.at("fidelity_vs_dense").at("latent_rel_l2");
  EXPECT_GT(latent_err, 1e-5);
  EXPECT_LT(latent_err, 1.0);
  EXPECT_GT(c.at("fidelity_vs_dense").at("ssim").get<double>(), 0.0);
  EXPECT_NE(
      run(base + " --save-latent " + dir.file("x.safetensors") + " --compare-dense --fis off", err),
      0);
  EXPECT_TRUE(contains(err, "already dense"));

  EXPECT_NE(run(base, err), 0);
  EXPECT_TRUE(contains(err, "nothing to write"));
  EXPECT_NE(run(base + " --output " + dir.file("o.mp4") + " --crf 99", err), 0);
  EXPECT_TRUE(contains(err, "--crf 99: must be in 0..51"));
  EXPECT_NE(run(base + " --output " + dir.file("o.mp4") + " --solver heun", err), 0);
  EXPECT_TRUE(contains(err, "heun"));
  EXPECT_NE(run(base + " --output /nonexistent/dir/o.mp4", err), 0);
  EXPECT_TRUE(contains(err, "does not exist"));
}

// Image-to-video from the command line: the image stage has its progress and its time.
TEST(Generate, CommandImageToVideoReportsTheImageStage) {
  TempDir dir;
  make_release(dir.path() / "release", "i2v");
  Tensor rgb = Tensor::zeros({40, 48, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 5);
  write_png(dir.file("first.png"), rgb);
  std::string err;
  ASSERT_EQ(iotest::run_fisdit(
                "generate --model " + (dir.path() / "release").string() + " --image " +
                    dir.file("first.png") +
                    " --prompt 'a red square' --size 32x32 --frames 17 --device cpu" +
                    " --frames-dir " + dir.file("frames") + " --summary-json " + dir.file("s.json"),
                dir.file("stderr.txt"), err),
            0)
      << err;
  EXPECT_TRUE(contains(err, "image [")) << err;
  EXPECT_TRUE(contains(err, "times: text ")) << err;
  EXPECT_TRUE(contains(err, " s, image encode ")) << err;
  std::ifstream in(dir.file("s.json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_GT(j.at("seconds").at("image_encode").get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(dir.path() / "frames" / "frame_0016.png"));
}

// --compare-dense for MagCache alone and stacked with FIS: the skipped passes and the fidelity.
TEST(Generate, CompareDenseCoversMagCacheAloneAndWithFis) {
  TempDir dir;
  make_release(dir.path() / "release", "t2v");
  auto run = [&](const std::string& args, std::string& err) {
    return iotest::run_fisdit("generate " + args, dir.file("stderr.txt"), err);
  };
  const std::string base = "--model " + (dir.path() / "release").string() +
                           " --prompt 'a red square' --size 32x32 --frames 17 --device cpu" +
                           " --save-latent " + dir.file("x.safetensors") +
                           " --compare-dense --cache magcache --magcache-force --magcache-K 1" +
                           " --summary-json " + dir.file("c.json");
  std::string err;
  // 4 steps, one retained, then skip / compute / skip.
  for (const std::string fis : {"off", "balanced --fis-head 0 --fis-tail 0"}) {
    ASSERT_EQ(run(base + " --fis " + fis, err), 0) << err;
    EXPECT_TRUE(contains(err, "MagCache skipped 2 of 4 DiT passes")) << err;
    EXPECT_TRUE(contains(err, "cache skip")) << err;
    std::ifstream in(dir.file("c.json"));
    const nlohmann::json c = nlohmann::json::parse(in);
    const nlohmann::json& f = c.at("fidelity_vs_dense");
    EXPECT_EQ(f.at("cache_skipped_passes"), 2);
    EXPECT_EQ(f.at("accelerated"), fis == "off" ? "magcache" : "fis custom + magcache");
    EXPECT_GT(f.at("latent_rel_l2").get<double>(), 1e-5);
    EXPECT_LT(f.at("latent_rel_l2").get<double>(), 1.0);
    EXPECT_EQ(c.at("steps").at(1).at("cache_skipped_passes"), 1);
    EXPECT_EQ(c.at("steps").at(2).at("cache_skipped_passes"), 0);
  }
}

// --compare-dense with --precision fp8 alone: the reference is the default precision's dense run
// (another generator), and the fidelity names fp8.
TEST(Generate, CompareDenseMeasuresFp8AgainstTheDefaultPrecision) {
  TempDir dir;
  make_release(dir.path() / "release", "t2v");
  std::string err;
  const std::string args = "generate --model " + (dir.path() / "release").string() +
                           " --prompt 'a red square' --size 32x32 --frames 17 --device cpu" +
                           " --save-latent " + dir.file("x.safetensors") +
                           " --fis off --precision fp8 --compare-dense --summary-json " +
                           dir.file("c.json");
  ASSERT_EQ(iotest::run_fisdit(args, dir.file("stderr.txt"), err), 0) << err;
  EXPECT_TRUE(contains(err, "with fp8 vs")) << err;
  std::ifstream in(dir.file("c.json"));
  const nlohmann::json c = nlohmann::json::parse(in);
  EXPECT_EQ(c.at("precision"), "fp8");
  const nlohmann::json& f = c.at("fidelity_vs_dense");
  EXPECT_EQ(f.at("accelerated"), "fp8");
  EXPECT_GT(f.at("latent_rel_l2").get<double>(), 1e-5);
  EXPECT_LT(f.at("latent_rel_l2").get<double>(), 0.1);
}

// --repeat: the models load once and stay (both experts), each run encodes its prompt again,
// and the warm run makes the same latent as a one-shot run.
TEST(Generate, RepeatKeepsTheModelsLoadedAndMakesTheSameVideo) {
  TempDir dir;
  make_release(dir.path() / "release", "t2v");
  const std::string base = "generate --model " + (dir.path() / "release").string() +
                           " --prompt 'a red square' --size 32x32 --frames 17 --device cpu";
  std::string err;
  ASSERT_EQ(iotest::run_fisdit(base + " --save-latent " + dir.file("once.safetensors"),
                               dir.file("stderr.txt"), err),
            0)
      << err;
  ASSERT_EQ(iotest::run_fisdit(base + " --repeat 2 --save-latent " + dir.file("warm.safetensors") +
                                   " --summary-json " + dir.file("s.json"),
                               dir.file("stderr.txt"), err),
            0)
      << err;
  EXPECT_TRUE(contains(err, "models loaded in ")) << err;
  EXPECT_TRUE(contains(err, "run 1/2: times: text ")) << err;
  EXPECT_TRUE(contains(err, "run 2/2: times: text ")) << err;
  EXPECT_TRUE(contains(err, "(text + denoise + decode ")) << err;
  const Tensor once = SafetensorsFile::open(dir.file("once.safetensors"))->tensor_f32("x");
  const Tensor warm = SafetensorsFile::open(dir.file("warm.safetensors"))->tensor_f32("x");
  EXPECT_EQ(rel_l2(warm, once), 0.0);
  std::ifstream in(dir.file("s.json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("repeat"), 2);
  EXPECT_GT(j.at("load_seconds").get<double>(), 0.0);
  ASSERT_EQ(j.at("runs").size(), 2u);
  for (const nlohmann::json& run : j.at("runs")) {
    const nlohmann::json& sec = run.at("seconds");
    EXPECT_GT(sec.at("text_encode").get<double>(), 0.0);  // encoded again in each run
    EXPECT_LT(sec.at("text_load").get<double>(), 1e-3);   // the weights kept: nothing read
    EXPECT_EQ(sec.at("dit_load").get<double>(), 0.0);     // both experts kept loaded
    EXPECT_GT(sec.at("denoise").get<double>(), 0.0);
    EXPECT_GT(sec.at("vae_decode").get<double>(), 0.0);
  }
  EXPECT_NE(iotest::run_fisdit(base + " --repeat 0 --save-latent " + dir.file("x.safetensors"),
                               dir.file("stderr.txt"), err),
            0);
  EXPECT_TRUE(contains(err, "--repeat")) << err;
}

}  // namespace
}  // namespace fisdit::pipeline
