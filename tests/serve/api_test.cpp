// The JSON side of fisdit serve: a body checked field by field (the error names the field), the
// model's defaults filled in, the recorded request back to generate options, and job ids that
// can never become paths.
#include "serve/api.h"

#include <gtest/gtest.h>

#include "fisdit/error.h"

namespace fisdit::serve {
namespace {

using nlohmann::json;

ServedModel t2v() {
  ServedModel m;
  m.name = "tiny";
  m.task = "t2v";
  m.precision = "fp32";
  m.base.width = 128;
  m.base.height = 96;
  m.base.frames = 33;
  m.base.steps = 4;
  m.base.shift = 5;
  m.base.guidance = 1;
  m.max_frames = 81;
  m.max_pixels = 640 * 480;
  return m;
}

// The field a bad body is refused for ("" when it is accepted).
std::string refused(const json& body, const ServedModel& m = t2v()) {
  std::string image, ext;
  try {
    resolve_request(body, m, &image, &ext);
    return "";
  } catch (const ParamError& e) {
    return e.param();
  }
}

TEST(ServeApi, FillsTheModelsDefaults) {
  std::string image, ext;
  const json r = resolve_request({{"prompt", "a red circle"}}, t2v(), &image, &ext);
  EXPECT_EQ(r["size"], "128x96");
  EXPECT_EQ(r["frames"], 33);
  EXPECT_EQ(r["steps"], 4);
  EXPECT_EQ(r["seed"], 0);
  EXPECT_EQ(r["fis"], "balanced");
  EXPECT_EQ(r["cache"], "off");
  EXPECT_EQ(r["solver"], "euler");
  EXPECT_EQ(r["precision"], "fp32");
  EXPECT_EQ(r["image"], false);
  EXPECT_TRUE(image.empty());
  const pipeline::GenerateOptions o = to_options(r, "", t2v());
  EXPECT_EQ(o.prompt, "a red circle");
  EXPECT_EQ(o.width, 128);
  EXPECT_EQ(o.height, 96);
  EXPECT_EQ(o.fis.name, "balanced");
  EXPECT_TRUE(o.fis.enabled());
  EXPECT_FALSE(o.cache.enabled);
  EXPECT_FALSE(o.progress);
}

TEST(ServeApi, TakesEveryFieldItDocuments) {
  std::string image, ext;
  const json body = {{"prompt", "p"},
                     {"negative_prompt", "n"},
                     {"size", "64x64"},
                     {"frames", 5},
                     {"steps", 2},
                     {"seed", 7},
                     {"guidance", 3.5},
                     {"shift", 3},
                     {"solver", "unipc"},
                     {"fis", "off"},
                     {"cache", "magcache-force"},
                     {"precision", "fp32"}};
  const pipeline::GenerateOptions o =
      to_options(resolve_request(body, t2v(), &image, &ext), "", t2v());
  EXPECT_EQ(o.negative, "n");
  EXPECT_EQ(o.width, 64);
  EXPECT_EQ(o.frames, 5);
  EXPECT_EQ(o.steps, 2);
  EXPECT_EQ(o.seed, 7u);
  EXPECT_FLOAT_EQ(o.guidance, 3.5f);
  EXPECT_DOUBLE_EQ(o.shift, 3.0);
  EXPECT_EQ(o.solver, sched::SolverKind::UniPC);
  EXPECT_FALSE(o.fis.enabled());
  EXPECT_TRUE(o.cache.enabled);
  EXPECT_TRUE(o.cache.force);
}

TEST(ServeApi, RefusesABadBodyNamingTheField) {
  EXPECT_EQ(refused(json::array({1})), "body");
  EXPECT_EQ(refused(json::object()), "prompt");
  EXPECT_EQ(refused({{"prompt", "   "}}), "prompt");
  EXPECT_EQ(refused({{"prompt", 5}}), "prompt");
  EXPECT_EQ(refused({{"prompt", std::string(20001, 'a')}}), "prompt");
  EXPECT_EQ(refused({{"prompt", "p"}, {"promt", "typo"}}), "promt");
  EXPECT_EQ(refused({{"prompt", "p"}, {"frames", "33"}}), "frames");
  EXPECT_EQ(refused({{"prompt", "p"}, {"frames", 33.5}}), "frames");
  EXPECT_EQ(refused({{"prompt", "p"}, {"frames", 85}}), "frames");  // over max_frames
  EXPECT_EQ(refused({{"prompt", "p"}, {"steps", 0}}), "steps");
  EXPECT_EQ(refused({{"prompt", "p"}, {"seed", -1}}), "seed");
  EXPECT_EQ(refused({{"prompt", "p"}, {"seed", uint64_t{1} << 63}}), "seed");
  EXPECT_EQ(refused({{"prompt", "p"}, {"guidance", true}}), "guidance");
  EXPECT_EQ(refused({{"prompt", "p"}, {"shift", 1e300}}), "shift");
  EXPECT_EQ(refused({{"prompt", "p"}, {"size", "64"}}), "size");
  EXPECT_EQ(refused({{"prompt", "p"}, {"size", "0x64"}}), "size");
  EXPECT_EQ(refused({{"prompt", "p"}, {"size", "1280x720"}}), "size");  // over max_pixels
  EXPECT_EQ(refused({{"prompt", "p"}, {"fis", "../../etc/passwd"}}), "fis");
  EXPECT_EQ(refused({{"prompt", "p"}, {"cache", "magcache"}}), "cache");
  EXPECT_EQ(refused({{"prompt", "p"}, {"solver", "ddim"}}), "solver");
  EXPECT_EQ(refused({{"prompt", "p"}, {"precision", "fp8"}}), "precision");
  EXPECT_EQ(refused({{"prompt", "p"}, {"image", "iVBORw0KGgo="}}), "image");  // t2v
  EXPECT_EQ(refused({{"prompt", "p"}, {"negative_prompt", nullptr}}), "");    // null = default
}

TEST(ServeApi, DecodesAFirstFrameAndChecksItIsAnImage) {
  ServedModel i2v = t2v();
  i2v.task = "i2v";
  i2v.takes_image = i2v.needs_image = true;
  EXPECT_EQ(refused({{"prompt", "p"}}, i2v), "image");
  std::string image, ext;
  // "\x89PNG\r\n\x1a\n" and one more byte, as a browser's data URL.
  resolve_request({{"prompt", "p"}, {"image", "data:image/png;base64,iVBORw0KGgoA"}}, i2v, &image,
                  &ext);
  EXPECT_EQ(image, std::string("\x89PNG\r\n\x1a\n\0", 9));
  EXPECT_EQ(ext, ".png");
  EXPECT_EQ(refused({{"prompt", "p"}, {"image", "aGVsbG8gd29ybGQ="}}, i2v), "image");  // text
  EXPECT_EQ(refused({{"prompt", "p"}, {"image", "iVBO!R0KGgo"}}, i2v), "image");
  EXPECT_EQ(decode_base64("aGk="), "hi");
  EXPECT_EQ(decode_base64("aGk"), "hi");
}

TEST(ServeApi, JobIdsAreRandomAndOnlyTheirOwnFormPasses) {
  const std::string a = new_job_id(), b = new_job_id();
  EXPECT_NE(a, b);
  EXPECT_TRUE(valid_job_id(a)) << a;
  for (const std::string bad : {"", "vid_", "../../etc/passwd", "vid_0123456789abcdef0123456",
                                "vid_0123456789abcdef012345678", "vid_0123456789ABCDEF01234567",
                                "vid_0123456789abcdef/1234567", "job_0123456789abcdef01234567"})
    EXPECT_FALSE(valid_job_id(bad)) << bad;
}

TEST(ServeApi, AJobShowsItsContentOnlyOnceCompleted) {
  Job j;
  j.id = "vid_0123456789abcdef01234567";
  j.status = JobStatus::Queued;
  json o = job_json(j, 3);
  EXPECT_EQ(o["status"], "queued");
  EXPECT_EQ(o["queue_position"], 3);
  EXPECT_TRUE(o["content_url"].is_null());
  EXPECT_TRUE(o["error"].is_null());
  j.status = JobStatus::Completed;
  o = job_json(j, std::nullopt);
  EXPECT_EQ(o["content_url"], "/v1/videos/" + j.id + "/content");
  j.status = JobStatus::Failed;
  j.error = "out of host memory";
  EXPECT_EQ(job_json(j, std::nullopt)["error"]["message"], "out of host memory");
}

}  // namespace
}  // namespace fisdit::serve
