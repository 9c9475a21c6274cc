// generate's stages on a release whose stages are recorded: a request is checked completely
// before any stage runs (no weight is touched), and a run calls the stages in order, freeing
// what each loaded unless the generator keeps it.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "../env_scope.h"
#include "../io/io_test_util.h"
#include "media/image.h"
#include "models/wan/config.h"
#include "models/wan/dit.h"
#include "pipeline/generate.h"

namespace fisdit::pipeline {
namespace {

using iotest::param_of;
using iotest::TempDir;

// A velocity model that predicts zeros: enough for the sampling loop to run.
class ZeroModel final : public models::VelocityModel {
 public:
  // `bytes`: weights it holds on the backend (counted there while a memory limit is set).
  ZeroModel(models::ModelInfo info, Backend& backend, int64_t bytes = 0)
      : info_(std::move(info)), be_(backend) {
    if (bytes) weights_ = be_.empty({bytes}, DType::U8);
  }
  const models::ModelInfo& info() const override { return info_; }
  Backend& backend() override { return be_; }
  models::TextEmbedding embed_text(const models::TextContext& text) override {
    models::TextEmbedding out;
    out.states = be_.upload(text.states, DType::F32);
    return out;
  }
  Tensor forward(const Tensor& x, const models::Timestep&, const models::TextEmbedding&,
                 const models::ForwardOptions&) override {
    Tensor out = be_.empty({info_.latent_channels, x.dim(1), x.dim(2), x.dim(3)});
    be_.fill_zero(out);
    return out;
  }

 private:
  models::ModelInfo info_;
  Backend& be_;
  Tensor weights_;
};

// A release of a Wan-shaped model whose every stage is logged.
class RecordingRelease final : public models::Release {
 public:
  RecordingRelease(models::Task task, bool two_experts, std::vector<std::string>& log) : log_(log) {
    wan::WanConfig cfg;
    cfg.task = task;
    cfg.dim = 64;
    cfg.num_heads = 2;
    cfg.num_layers = 4;
    cfg.in_dim = task == models::Task::I2V ? 36 : 16;
    info_.family = "recording";
    info_.layout = "test";
    info_.parts = {{"dit", "dit.safetensors"}};
    info_.model = wan::model_info(cfg);
    info_.two_experts = two_experts;
    info_.boundary = 0.9f;
  }
  const models::ReleaseInfo& info() const override { return info_; }
  std::vector<models::EncodedText> encode_text(const std::vector<std::string>& prompts, Backend&,
                                               double* load_seconds) override {
    if (text_fails) throw Error("the text encoder failed (test)");
    log_.push_back("text " + std::to_string(prompts.size()));
    if (load_seconds) *load_seconds = 0;
    std::vector<models::EncodedText> out;
    for (size_t i = 0; i < prompts.size(); ++i)
      out.push_back({Tensor::zeros({3, 8}), static_cast<int64_t>(prompts[i].size())});
    return out;
  }
  models::FirstFrame encode_image(const Tensor& image, int frames, Backend&,
                                  const models::StageProgress&) override {
    log_.push_back("image " + std::to_string(image.dim(2)) + "x" + std::to_string(image.dim(1)));
    models::FirstFrame f;
    f.y = Tensor::zeros({20, (frames - 1) / 4 + 1, image.dim(1) / 8, image.dim(2) / 8});
    return f;
  }
  // A GPU that holds `experts` DiT experts, or one fewer beside a decode.
  void set_capacity(int experts) { capacity_ = experts; }
  // A decode that runs out of GPU memory on its own, in a release of `family`.
  void fail_decode(const std::string& family) {
    decode_fails_ = true;
    info_.family = family;
  }
  int held() const { return (experts_[0] != nullptr) + (experts_[1] != nullptr); }
  models::VelocityModel& expert(bool high, Backend& backend, std::string* report) override {
    std::unique_ptr<ZeroModel>& slot = experts_[high ? 0 : 1];
    if (!slot && held() + 1 > capacity_)
      throw Error(std::string("out of GPU memory allocating 27 GiB for the ") +
                  (high ? "high" : "low") + "-noise expert (test)");
    if (!slot) {
      // Whether prepare_expert had finished for this expert (and so was waited for).
      const bool prepared = prepared_[high ? 0 : 1].exchange(false);
      log_.push_back(std::string(high ? "load high" : "load low") + (prepared ? " prepared" : ""));
      slot = std::make_unique<ZeroModel>(info_.model, backend, kExpertBytes);
      if (report) *report = high ? "high" : "low";
    }
    return *slot;
  }
  // prepare_expert runs `prepare` (on generate's thread: it must not touch the log); none: the
  // release prepares nothing.
  std::function<int64_t(bool high, std::stop_token stop)> prepare;
  bool text_fails = false;              // encode_text throws
  std::atomic<int> uploads_offered{0};  // prepare_expert calls asked to put weights on a GPU
  bool prepares_experts() const override { return static_cast<bool>(prepare); }
  int64_t prepare_expert(bool high, Device, std::stop_token stop,
                         const models::UploadAhead& upload) override {
    if (upload.backend) ++uploads_offered;
    const int64_t bytes = prepare(high, std::move(stop));
    prepared_[high ? 0 : 1] = true;
    return bytes;
  }
  static constexpr int64_t kExpertBytes = int64_t{1} << 20;
  int64_t expert_bytes(bool, const Backend&) const override { return kExpertBytes; }
  Tensor decode(const Tensor& latent, Backend&, const models::StageProgress&,
                const FrameSink&) override {
    if (held() + 1 > capacity_ || decode_fails_)
      throw Error("out of GPU memory allocating 20 GiB (test decode)");
    log_.push_back("decode");
    return Tensor::zeros({3, (latent.dim(1) - 1) * 4 + 1, latent.dim(2) * 8, latent.dim(3) * 8});
  }
  void unload(Part part) override {
    const char* names[] = {"unload text", "unload high", "unload low", "unload vae"};
    const bool held = part == Part::HighExpert  ? experts_[0] != nullptr
                      : part == Part::LowExpert ? experts_[1] != nullptr
                                                : true;
    if (part == Part::HighExpert) experts_[0].reset();
    if (part == Part::LowExpert) experts_[1].reset();
    if (held) log_.push_back(names[static_cast<int>(part)]);
  }

 private:
  models::ReleaseInfo info_;
  std::vector<std::string>& log_;
  std::unique_ptr<ZeroModel> experts_[2];
  std::atomic<bool> prepared_[2] = {false, false};
  int capacity_ = 1000;
  bool decode_fails_ = false;
};

GenerateOptions request() {
  GenerateOptions o;
  o.model = "recording";
  o.device = "cpu";
  o.prompt = "a red square";
  o.width = 64;
  o.height = 32;
  o.frames = 9;
  o.steps = 4;
  o.progress = false;
  return o;
}

TEST(GenerateStages, EveryBadRequestNamesItsParameterBeforeAnyStage) {
  std::vector<std::string> log;
  TempDir dir;
  Tensor rgb = Tensor::zeros({16, 16, 3}, DType::U8);
  write_png(dir.file("first.png"), rgb);
  struct Case {
    const char* param;
    std::function<void(GenerateOptions&)> change;
  };
  const std::vector<Case> cases = {
      {"frames", [](GenerateOptions& o) { o.frames = 8; }},
      {"size", [](GenerateOptions& o) { o.width = 40; }},
      {"size", [](GenerateOptions& o) { o.height = 0; }},
      {"steps", [](GenerateOptions& o) { o.steps = 0; }},
      {"shift", [](GenerateOptions& o) { o.shift = -1; }},
      {"boundary", [](GenerateOptions& o) { o.boundary = 1.5f; }},
      {"guidance", [](GenerateOptions& o) { o.guidance = NAN; }},
      {"guidance_low", [](GenerateOptions& o) { o.guidance_low = INFINITY; }},
      {"image", [&](GenerateOptions& o) { o.image = dir.file("first.png"); }},
      {"lora_low", [](GenerateOptions& o) { o.lora_low = "low.safetensors"; }},
      {"lora_high", [](GenerateOptions& o) { o.lora_high = "/nonexistent/lora.safetensors"; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.param);
    GenerateOptions o = request();
    c.change(o);
    Generator g(std::make_unique<RecordingRelease>(models::Task::T2V, false, log), o, false);
    EXPECT_EQ(param_of([&] { g.check(o); }), c.param);
    EXPECT_EQ(param_of([&] { g.run(o); }), c.param);
    EXPECT_TRUE(log.empty()) << log.front();
  }
  // An image-to-video model without its first frame.
  GenerateOptions o = request();
  Generator i2v(std::make_unique<RecordingRelease>(models::Task::I2V, true, log), o, false);
  EXPECT_EQ(param_of([&] { i2v.run(o); }), "image");
  EXPECT_TRUE(log.empty());
  // The generator's own model and device only.
  o.device = "cuda";
  EXPECT_EQ(param_of([&] { i2v.check(o); }).rfind("<not a ParamError", 0), 0u);
}

TEST(GenerateStages, TheCheckedRequestIsWhatTheStagesRun) {
  std::vector<std::string> log;
  GenerateOptions o = request();
  o.guidance_high = 3.0f;
  Generator g(std::make_unique<RecordingRelease>(models::Task::T2V, true, log), o, false);
  const CheckedRequest r = g.check(o);
  EXPECT_EQ(r.grid.frames, 3);
  EXPECT_EQ(r.grid.height, 4);
  EXPECT_EQ(r.grid.width, 8);
  EXPECT_EQ(*r.denoise.boundary, 0.9f) << "the release's boundary";
  EXPECT_TRUE(r.needs_uncond) << "guidance 3 on the high-noise steps";
  EXPECT_FLOAT_EQ(r.denoise.guidance_for(true), 3.0f);
  EXPECT_FLOAT_EQ(r.denoise.guidance_for(false), 1.0f);
  EXPECT_FALSE(r.image.defined());
  o.boundary = 0.5f;
  EXPECT_EQ(*g.check(o).denoise.boundary, 0.5f) << "a given boundary wins";
  EXPECT_TRUE(log.empty());
}

TEST(GenerateStages, ARunCallsTheStagesInOrderAndFreesWhatItLoaded) {
  std::vector<std::string> log;
  TempDir dir;
  Tensor rgb = Tensor::zeros({16, 32, 3}, DType::U8);
  write_png(dir.file("first.png"), rgb);
  GenerateOptions o = request();
  o.image = dir.file("first.png");
  o.guidance = 2.0f;
  Generator g(std::make_unique<RecordingRelease>(models::Task::I2V, true, log), o, false);
  const GenerateResult r = g.run(o);
  // Lightning schedule at shift 5 over 4 steps: t = 1000, 937.5 (>= 900: high), then 833, 625.
  const std::vector<std::string> expected = {
      "text 2",      "unload text", "image 64x32", "unload vae", "load high",
      "unload high", "load low",    "unload low",  "decode",     "unload vae"};
  EXPECT_EQ(log, expected);
  EXPECT_EQ(r.latent.shape(), (Shape{16, 3, 4, 8}));
  EXPECT_EQ(r.video.shape(), (Shape{3, 9, 32, 64}));
  EXPECT_EQ(r.summary.at("steps").size(), 4u);
  for (const char* stage :
       {"text_load", "text_encode", "image_encode", "dit_load", "denoise", "vae_decode", "total"})
    EXPECT_TRUE(r.summary.at("seconds").contains(stage)) << stage;

  // Kept loaded: a second request loads nothing and encodes only the text it has not seen.
  log.clear();
  Generator kept(std::make_unique<RecordingRelease>(models::Task::I2V, true, log), o, true);
  kept.run(o);
  log.clear();
  o.prompt = "a blue circle";
  kept.run(o);
  const std::vector<std::string> again = {"text 1", "image 64x32", "decode"};
  EXPECT_EQ(log, again);
}

// fisdit serve follows a run through on_progress and stops it by throwing from there.
TEST(GenerateStages, ProgressIsReportedPerStageAndACallbackThatThrowsStopsTheRun) {
  std::vector<std::string> log;
  GenerateOptions o = request();
  std::vector<std::string> seen;
  o.on_progress = [&](const std::string& stage, int done, int total) {
    seen.push_back(stage + " " + std::to_string(done) + "/" + std::to_string(total));
  };
  Generator g(std::make_unique<RecordingRelease>(models::Task::T2V, false, log), o, true);
  EXPECT_EQ(g.preload() >= 0, true);
  EXPECT_EQ(log, (std::vector<std::string>{"text 1", "load high"}));
  g.run(o);
  const std::vector<std::string> expected = {"text 0/1",    "text 1/1",    "denoise 0/4",
                                             "denoise 1/4", "denoise 2/4", "denoise 3/4",
                                             "denoise 4/4", "decode 0/1"};
  EXPECT_EQ(seen, expected);

  // Cancelled after step 2: no step 3, no decode; the generator serves the next request.
  log.clear();
  seen.clear();
  o.on_progress = [&](const std::string& stage, int done, int) {
    seen.push_back(stage + " " + std::to_string(done));
    if (stage == "denoise" && done == 2) throw Cancelled("cancelled by the test");
  };
  EXPECT_THROW(g.run(o), Cancelled);
  EXPECT_EQ(seen.back(), "denoise 2");
  EXPECT_EQ(std::count(log.begin(), log.end(), "decode"), 0);
  o.on_progress = {};
  log.clear();
  g.run(o);
  EXPECT_EQ(log, (std::vector<std::string>{"decode"})) << "nothing reloaded after a cancel";
}

// Kept loaded, the experts stay resident while they fit; running out of GPU memory frees what
// the stage does not need and retries it once instead of failing the request.
TEST(GenerateStages, ResidentExpertsMakeRoomWhenTheGpuRunsOut) {
  std::vector<std::string> log;
  GenerateOptions o = request();
  auto owned = std::make_unique<RecordingRelease>(models::Task::T2V, true, log);
  RecordingRelease& release = *owned;
  Generator g(std::move(owned), o, true);
  // Room for both experts, but not for the decode beside them: the text encoder's resident
  // weights go first, then the experts.
  release.set_capacity(2);
  g.preload();
  EXPECT_EQ(release.held(), 2);
  log.clear();
  g.run(o);
  EXPECT_EQ(log, (std::vector<std::string>{"text 1", "unload text", "unload high", "unload low",
                                           "decode"}));
  // Room for one expert: they take turns at the switch, and the decode frees the last one.
  release.set_capacity(1);
  log.clear();
  g.run(o);
  EXPECT_EQ(log, (std::vector<std::string>{"load high", "unload high", "load low", "unload low",
                                           "decode"}));
  // No room at all: the error says so; nothing resident could be freed.
  release.set_capacity(0);
  try {
    g.run(o);
    FAIL() << "ran without memory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
  }
}

// A Wan decode that runs out of GPU memory names its chunk size among what to change; other
// stages and families do not.
TEST(GenerateStages, AWanDecodeOutOfMemorySaysHowToDecodeInLessMemory) {
  for (const std::string family : {"wan", "hunyuan15"}) {
    std::vector<std::string> log;
    auto owned = std::make_unique<RecordingRelease>(models::Task::T2V, false, log);
    owned->fail_decode(family);
    Generator g(std::move(owned), request(), false);
    try {
      g.run(request());
      ADD_FAILURE() << family << ": ran without memory for the decode";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("test decode"), std::string::npos) << what;
      EXPECT_NE(what.find("lower the size / frames"), std::string::npos) << what;
      EXPECT_EQ(what.find("FISDIT_VAE_DECODE_CHUNK=1") != std::string::npos, family == "wan")
          << what;
    }
  }
}

// Kept loaded, whether both experts stay resident is decided from the free memory before the
// second one loads (here the CPU backend under a memory limit, which counts each expert's
// weights): said in the log, and the experts take turns without running out of memory first.
TEST(GenerateStages, BothExpertsResidentIsDecidedFromTheFreeMemory) {
  const wan::WanConfig cfg = [] {
    wan::WanConfig c;
    c.dim = 64;
    c.num_heads = 2;
    c.num_layers = 4;
    return c;
  }();
  const models::ModelInfo info = wan::model_info(cfg);
  GenerateOptions o = request();
  const int64_t step = info.activation_bytes(info.latent_grid(o.width, o.height, o.frames), 4,
                                             o.fis.enabled(), o.cache.enabled);
  const double gib = 1073741824.0;
  const int64_t expert = RecordingRelease::kExpertBytes;
  {  // room for both: both load at start and nothing loads again
    std::vector<std::string> log;
    o.gpu_memory_limit = static_cast<double>(step + 2 * expert + expert / 2) / gib;
    Generator g(std::make_unique<RecordingRelease>(models::Task::T2V, true, log), o, true);
    testing::internal::CaptureStderr();
    g.preload();
    const std::string said = testing::internal::GetCapturedStderr();
    EXPECT_NE(said.find("both DiT experts resident"), std::string::npos) << said;
    EXPECT_EQ(log, (std::vector<std::string>{"text 1", "load high", "load low"}));
    log.clear();
    g.run(o);
    g.run(o);
    EXPECT_EQ(log, (std::vector<std::string>{"text 1", "decode", "decode"}));
  }
  {  // room for one: the second one is not loaded at start; at each switch the other goes first
    std::vector<std::string> log;
    o.gpu_memory_limit = static_cast<double>(step + expert + expert / 2) / gib;
    Generator g(std::make_unique<RecordingRelease>(models::Task::T2V, true, log), o, true);
    testing::internal::CaptureStderr();
    g.preload();
    g.run(o);
    const std::string said = testing::internal::GetCapturedStderr();
    EXPECT_NE(said.find("do not fit, so the experts take turns"), std::string::npos) << said;
    EXPECT_EQ(said.find("out of GPU memory"), std::string::npos) << said;
    EXPECT_EQ(log, (std::vector<std::string>{"text 1", "load high", "text 1", "unload high",
                                             "load low", "decode"}));
  }
}

// A one-shot run prepares the first expert's host side (Release::prepare_expert) on a thread of
// its own from before the text stage, and waits for it before that expert loads, the wait timed
// as loading; once that expert is up, the second expert is prepared beside its steps and waited
// for at the switch. Kept loaded, under a memory limit, or with the overlap turned off it does
// not.
TEST(GenerateStages, AOneShotRunPreparesTheFirstExpertBesideTheTextStage) {
  using namespace std::chrono_literals;
  std::vector<std::string> log;
  std::atomic<int> calls{0};
  std::mutex asked_mutex;
  std::vector<bool> asked;  // the experts prepared, in order (high: true)
  const auto make = [&](models::Task task) {
    auto r = std::make_unique<RecordingRelease>(task, true, log);
    r->prepare = [&](bool high, std::stop_token) -> int64_t {
      ++calls;
      {
        const std::lock_guard<std::mutex> lock(asked_mutex);
        asked.push_back(high);
      }
      std::this_thread::sleep_for(100ms);  // longer than the text stage: the load waits
      return 1000;
    };
    return r;
  };
  GenerateOptions o = request();
  auto first = make(models::Task::T2V);
  const RecordingRelease* recorded = first.get();
  Generator one_shot(std::move(first), o, false);
  const GenerateResult r = one_shot.run(o);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(recorded->uploads_offered, 0) << "a CPU run puts no weight on a GPU";
  EXPECT_EQ(asked, (std::vector<bool>{true, false}));
  EXPECT_EQ(log,
            (std::vector<std::string>{"text 1", "unload text", "load high prepared", "unload high",
                                      "load low prepared", "unload low", "decode", "unload vae"}));
  EXPECT_TRUE(r.summary.at("overlap_load").get<bool>());
  const nlohmann::json& seconds = r.summary.at("seconds");
  EXPECT_GE(seconds.at("dit_load").get<double>(), 0.05) << "the wait is loading";
  EXPECT_GE(seconds.at("dit_load_overlapped").get<double>(), 0.0);
  EXPECT_LT(seconds.at("dit_load_overlapped").get<double>(), 0.2);
  EXPECT_GE(r.summary.at("steps")[0].at("expert_load_seconds").get<double>(), 0.05);
  // The switch waits for what is left of the second expert's preparation, timed as loading.
  double switch_load = 0;
  for (const nlohmann::json& step : r.summary.at("steps"))
    if (step.at("expert") == "low-noise expert" && switch_load == 0)
      switch_load = step.at("expert_load_seconds").get<double>();
  EXPECT_GT(switch_load, 0.0);

  // A first step on the low-noise expert (UniPC starts below t = 1000): that one is prepared,
  // and no other (the steps never reach the high-noise expert).
  log.clear();
  calls = 0;
  asked.clear();
  o.solver = sched::SolverKind::UniPC;
  o.boundary = 1.0f;
  Generator(make(models::Task::T2V), o, false).run(o);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(asked, (std::vector<bool>{false}));
  EXPECT_EQ(log.at(2), "load low prepared");
  o = request();

  // Kept loaded, under a memory limit, overlap_load false or FISDIT_OVERLAP_LOAD=0: in order.
  calls = 0;
  log.clear();
  Generator kept(make(models::Task::T2V), o, true);
  kept.run(o);
  GenerateOptions limited = o;
  limited.gpu_memory_limit = 1.0;
  Generator(make(models::Task::T2V), limited, false).run(limited);
  GenerateOptions off = o;
  off.overlap_load = false;
  EXPECT_FALSE(Generator(make(models::Task::T2V), off, false).run(off).summary.at("overlap_load"));
  {
    test::EnvScope no_overlap("FISDIT_OVERLAP_LOAD", "0");
    Generator(make(models::Task::T2V), o, false).run(o);
  }
  const std::string bad = [&] {
    test::EnvScope wrong("FISDIT_OVERLAP_LOAD", "2");
    return iotest::error_of([&] { Generator(make(models::Task::T2V), o, false).run(o); });
  }();
  EXPECT_NE(bad.find("FISDIT_OVERLAP_LOAD: must be 0 (off) or 1 (on), got '2'"), std::string::npos)
      << bad;
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(std::count(log.begin(), log.end(), "load high prepared"), 0);
  // FISDIT_UPLOAD_FIRST_EXPERT=1 asks for the first expert's upload beside the text stage: a CPU
  // run still puts nothing on a GPU; a value other than 0 or 1 is an error naming it.
  {
    test::EnvScope first("FISDIT_UPLOAD_FIRST_EXPERT", "1");
    auto cpu_release = make(models::Task::T2V);
    const RecordingRelease* seen = cpu_release.get();
    Generator g(std::move(cpu_release), o, false);
    g.run(o);
    EXPECT_EQ(seen->uploads_offered, 0);
  }
  const std::string bad_first = [&] {
    test::EnvScope wrong("FISDIT_UPLOAD_FIRST_EXPERT", "yes");
    return iotest::error_of([&] { Generator(make(models::Task::T2V), o, false).run(o); });
  }();
  EXPECT_NE(bad_first.find("FISDIT_UPLOAD_FIRST_EXPERT: must be 0 (off) or 1 (on), got 'yes'"),
            std::string::npos)
      << bad_first;
}

// A background prepare that fails leaves nothing behind: the expert loads as it would have (and
// fails, if it does, with its own error).
TEST(GenerateStages, ABackgroundPrepareThatFailsLeavesTheLoadAsBefore) {
  std::vector<std::string> log;
  auto release = std::make_unique<RecordingRelease>(models::Task::T2V, true, log);
  release->prepare = [](bool, std::stop_token) -> int64_t {
    throw Error("tensor 'blocks.0.ffn.0.weight' is missing (test)");
  };
  GenerateOptions o = request();
  const GenerateResult r = Generator(std::move(release), o, false).run(o);
  EXPECT_EQ(log.at(2), "load high");
  EXPECT_EQ(r.summary.at("seconds").at("dit_load_overlapped").get<double>(), 0.0);
}

// A background prepare's long read: checks for the stop every millisecond, for up to 30 s;
// whether it was asked to stop.
bool read_until_stopped(const std::stop_token& stop) {
  using namespace std::chrono_literals;
  const auto t0 = std::chrono::steady_clock::now();
  while (!stop.stop_requested() && std::chrono::steady_clock::now() - t0 < 30s)
    std::this_thread::sleep_for(1ms);
  return stop.stop_requested();
}

// A stage that fails (or is cancelled) while the background prepare runs ends the run with its
// own error at once: the prepare is asked to stop and waited for, never left running.
TEST(GenerateStages, AStageThatFailsStopsTheBackgroundPrepare) {
  using namespace std::chrono_literals;
  for (const bool cancel : {false, true}) {
    SCOPED_TRACE(cancel ? "cancelled" : "text fails");
    std::vector<std::string> log;
    std::atomic<bool> started{false}, stopped{false};
    auto release = std::make_unique<RecordingRelease>(models::Task::T2V, true, log);
    release->prepare = [&](bool, std::stop_token stop) -> int64_t {
      started = true;
      stopped = read_until_stopped(stop);
      return 0;
    };
    release->text_fails = !cancel;
    GenerateOptions o = request();
    if (cancel)
      o.on_progress = [&](const std::string& stage, int, int) {
        while (!started) std::this_thread::sleep_for(1ms);
        if (stage == "text") throw Cancelled("cancelled by the test");
      };
    const auto t0 = std::chrono::steady_clock::now();
    const std::string what =
        iotest::error_of([&] { Generator(std::move(release), o, false).run(o); });
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
    EXPECT_EQ(what, cancel ? "cancelled by the test" : "the text encoder failed (test)");
    EXPECT_TRUE(stopped);
    EXPECT_EQ(std::count(log.begin(), log.end(), "load high"), 0);
  }
}

// A run cancelled during the first expert's steps, while the second expert is prepared beside
// them, ends at once with Cancelled: that preparation is asked to stop and waited for.
TEST(GenerateStages, ACancelDuringTheFirstExpertsStepsStopsTheSecondsPrepare) {
  using namespace std::chrono_literals;
  std::vector<std::string> log;
  std::atomic<bool> low_started{false}, low_stopped{false};
  auto release = std::make_unique<RecordingRelease>(models::Task::T2V, true, log);
  release->prepare = [&](bool high, std::stop_token stop) -> int64_t {
    if (high) return 1000;
    low_started = true;
    low_stopped = read_until_stopped(stop);
    return 0;
  };
  GenerateOptions o = request();
  o.on_progress = [&](const std::string& stage, int done, int) {
    if (stage != "denoise" || done != 1) return;
    while (!low_started) std::this_thread::sleep_for(1ms);
    throw Cancelled("cancelled by the test");
  };
  const auto t0 = std::chrono::steady_clock::now();
  const std::string what =
      iotest::error_of([&] { Generator(std::move(release), o, false).run(o); });
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(what, "cancelled by the test");
  EXPECT_TRUE(low_stopped);
  EXPECT_EQ(std::count(log.begin(), log.end(), "load low"), 0);
}

}  // namespace
}  // namespace fisdit::pipeline
