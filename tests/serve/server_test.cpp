// fisdit serve in this process on tiny releases: a first frame sent as base64 in the JSON body
// reaches the model (the video takes the image's aspect ratio, as the official pipeline), and an
// I2V request without one is refused before it is queued; --precision fp8 serves every job in
// fp8.
#include "serve/server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <iterator>
#include <thread>

#include "../io/io_test_util.h"
#include "../pipeline/tiny_release.h"
#include "media/image.h"

namespace fisdit::serve {
namespace {

using nlohmann::json;

std::string base64(const std::string& bytes) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (const unsigned char c : bytes) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) out += abc[(acc >> (bits -= 6)) & 63];
  }
  if (bits) out += abc[(acc << (6 - bits)) & 63];
  while (out.size() % 4) out += '=';
  return out;
}

// A tiny release's model as both tests serve it: 32x32, 17 frames, 2 steps on the CPU.
ServedModel tiny_model(const std::string& release, const std::string& name) {
  ServedModel m;
  m.name = name;
  m.base.model = release;
  m.base.device = "cpu";
  m.base.width = m.base.height = 32;
  m.base.frames = 17;
  m.base.steps = 2;
  m.base.progress = false;
  return m;
}

// Runs `server` on `thread`; returns its port once it listens (0 if not within 5 s).
int start(Server& server, std::thread& thread) {
  std::atomic<int> port{0};
  thread = std::thread([&] { server.run([&](int p, double) { port = p; }); });
  for (int i = 0; i < 500 && port == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return port;
}

// Job `id` once it is neither queued nor in progress (bounded: 60 s); null if unreadable.
json finished(httplib::Client& client, const std::string& id) {
  json now;
  for (int i = 0; i < 600; ++i) {
    auto got = client.Get("/v1/videos/" + id);
    if (!got) return nullptr;
    now = json::parse(got->body);
    if (now["status"] != "queued" && now["status"] != "in_progress") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return now;
}

TEST(ServeServer, AFirstFrameSentAsBase64ConditionsAnImageToVideoJob) {
  iotest::TempDir dir;
  pipeline::tiny_release::make_release(dir.path() / "release", "i2v");
  Tensor rgb = Tensor::zeros({40, 48, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
  write_png(dir.file("first.png"), rgb);
  std::ifstream f(dir.file("first.png"), std::ios::binary);
  const std::string png{std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};

  ServedModel m = tiny_model((dir.path() / "release").string(), "tiny-i2v");
  ServeOptions o;
  o.port = 0;
  o.data = dir.file("data");
  Server server(m, o);
  EXPECT_EQ(server.model().task, "i2v");
  EXPECT_TRUE(server.model().needs_image);
  std::thread run;
  const int port = start(server, run);
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);

  auto refused = client.Post("/v1/videos", json{{"prompt", "p"}}.dump(), "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(json::parse(refused->body)["error"]["param"], "image");

  const json body = {
      {"prompt", "a red square"}, {"image", "data:image/png;base64," + base64(png)}, {"seed", 3}};
  auto posted = client.Post("/v1/videos", body.dump(), "application/json");
  ASSERT_TRUE(posted);
  ASSERT_EQ(posted->status, 202) << posted->body;
  const json job = json::parse(posted->body);
  // The area of 32x32 at the 48x40 image's aspect ratio (wan/image2video.py).
  EXPECT_EQ(job["request"]["size"], "32x16");
  EXPECT_EQ(job["request"]["image"], true);
  const std::string id = job["id"];
  const json now = finished(client, id);
  ASSERT_EQ(now["status"], "completed") << now.dump();
  EXPECT_TRUE(now["seconds"].contains("image_encode")) << now["seconds"].dump();
  auto mp4 = client.Get("/v1/videos/" + id + "/content");
  ASSERT_TRUE(mp4);
  EXPECT_EQ(mp4->status, 200);
  EXPECT_EQ(mp4->body.substr(4, 4), "ftyp");
  // The upload is kept beside the job, named by its id only.
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "data" / "inputs" / (id + ".png")));
  server.stop();
  run.join();
}

// serve --precision fp8: the served model says fp8, a job runs in it, and a job asking for
// another precision is refused before it is queued.
TEST(ServeServer, ServesEveryJobInFp8WhenAskedTo) {
  iotest::TempDir dir;
  pipeline::tiny_release::make_release(dir.path() / "release", "t2v");
  ServedModel m = tiny_model((dir.path() / "release").string(), "tiny-t2v");
  m.base.precision = "fp8";
  ServeOptions o;
  o.port = 0;
  o.data = dir.file("data");
  Server server(m, o);
  EXPECT_EQ(server.model().precision, "fp8");
  std::thread run;
  const int port = start(server, run);
  ASSERT_GT(port, 0);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(30, 0);
  auto refused = client.Post("/v1/videos", json{{"prompt", "p"}, {"precision", "bf16"}}.dump(),
                             "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(json::parse(refused->body)["error"]["param"], "precision");
  auto posted =
      client.Post("/v1/videos", json{{"prompt", "a red square"}}.dump(), "application/json");
  ASSERT_TRUE(posted);
  ASSERT_EQ(posted->status, 202) << posted->body;
  const json job = json::parse(posted->body);
  EXPECT_EQ(job["request"]["precision"], "fp8");
  const json now = finished(client, job["id"].get<std::string>());
  EXPECT_EQ(now["status"], "completed") << now.dump();
  server.stop();
  run.join();
}

}  // namespace
}  // namespace fisdit::serve
