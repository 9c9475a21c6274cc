#include "io/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "io_test_util.h"

namespace fisdit {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::TempDir;
using iotest::write_bytes;

Tensor values(std::vector<float> v) {
  const auto n = static_cast<int64_t>(v.size());
  return Tensor::from_vector(v, {n});
}

// A sharded checkpoint as Hugging Face writes it: config.json, two shards, an index.
class ShardedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    write_safetensors(dir_.file("model-00001-of-00002.safetensors"),
                      {{"a.weight", values({1, 2})}, {"b.weight", values({3})}});
    write_safetensors(dir_.file("model-00002-of-00002.safetensors"),
                      {{"c.weight", values({4, 5, 6})}, {"unlisted", values({0})}});
    write_bytes(dir_.file("config.json"), R"({"dim": 128, "num_layers": 4})");
    write_index(R"({"metadata": {"total_size": 24}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00001-of-00002.safetensors",
        "c.weight": "model-00002-of-00002.safetensors"}})");
  }
  void write_index(const std::string& text) { write_bytes(index_, text); }

  TempDir dir_;
  const std::string index_ = dir_.file("model.safetensors.index.json");
};

TEST_F(ShardedCheckpointTest, OpensTheDirectory) {
  const Checkpoint ckpt = Checkpoint::open(dir_.path().string());
  EXPECT_EQ(ckpt.path(), dir_.path().string());
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"a.weight", "b.weight", "c.weight"}));
  EXPECT_EQ(ckpt.size(), 3u);
  EXPECT_EQ(ckpt.files().size(), 2u);
  EXPECT_EQ(ckpt.file_of("c.weight"), dir_.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(ckpt.file_of("a.weight"), dir_.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(ckpt.tensor("c.weight").to_vector(), (std::vector<float>{4, 5, 6}));
  EXPECT_EQ(ckpt.tensor_f32("a.weight").to_vector(), (std::vector<float>{1, 2}));
  ASSERT_NE(ckpt.find("b.weight"), nullptr);
  EXPECT_EQ(ckpt.find("b.weight")->shape, (Shape{1}));
  EXPECT_EQ(ckpt.find("unlisted"), nullptr);  // in a shard but not in the index
  ASSERT_TRUE(ckpt.config_path().has_value());
  EXPECT_EQ(*ckpt.config_path(), dir_.file("config.json"));
  const auto config = ckpt.config_json();
  ASSERT_TRUE(config.has_value());
  EXPECT_EQ((*config)["num_layers"].get<int>(), 4);
}

TEST_F(ShardedCheckpointTest, OpensTheIndexFileItself) {
  const Checkpoint ckpt = Checkpoint::open(index_);
  EXPECT_EQ(ckpt.size(), 3u);
  EXPECT_EQ(ckpt.tensor("b.weight").to_vector(), (std::vector<float>{3}));
  EXPECT_TRUE(ckpt.config_json().has_value());
}

TEST_F(ShardedCheckpointTest, CopiesShareTheFiles) {
  Tensor t;
  {
    const Checkpoint ckpt = Checkpoint::open(index_);
    const Checkpoint copy = ckpt;  // NOLINT(performance-unnecessary-copy-initialization)
    t = copy.tensor("c.weight");
  }
  EXPECT_EQ(t.to_vector(), (std::vector<float>{4, 5, 6}));
}

TEST_F(ShardedCheckpointTest, MissingShard) {
  std::filesystem::remove(dir_.file("model-00002-of-00002.safetensors"));
  const std::string msg = error_of([&] { Checkpoint::open(dir_.path().string()); });
  EXPECT_TRUE(contains(msg, index_));
  EXPECT_TRUE(contains(msg, "shard 'model-00002-of-00002.safetensors'"));
  EXPECT_TRUE(contains(msg, "does not exist"));
}

TEST_F(ShardedCheckpointTest, TensorAbsentFromItsShard) {
  write_index(R"({"weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                 "c.weight": "model-00001-of-00002.safetensors"}})");
  const std::string msg = error_of([&] { Checkpoint::open(index_); });
  EXPECT_TRUE(contains(msg, index_));
  EXPECT_TRUE(contains(msg, "tensor 'c.weight'"));
  EXPECT_TRUE(contains(msg, dir_.file("model-00001-of-00002.safetensors")));
}

TEST_F(ShardedCheckpointTest, BadIndexJson) {
  write_index(R"({"weight_map": {"a.weight": )");
  const std::string msg = error_of([&] { Checkpoint::open(dir_.path().string()); });
  EXPECT_TRUE(contains(msg, index_));
  EXPECT_TRUE(contains(msg, "not valid JSON"));
}

TEST_F(ShardedCheckpointTest, IndexWithoutWeightMap) {
  write_index(R"({"metadata": {}})");
  const std::string msg = error_of([&] { Checkpoint::open(index_); });
  EXPECT_TRUE(contains(msg, index_));
  EXPECT_TRUE(contains(msg, "weight_map"));
  write_index(R"({"weight_map": {"a.weight": 3}})");
  EXPECT_TRUE(contains(error_of([&] { Checkpoint::open(index_); }), "tensor 'a.weight'"));
}

TEST_F(ShardedCheckpointTest, CorruptShardNamesTheShard) {
  write_bytes(dir_.file("model-00002-of-00002.safetensors"), "garbage");
  const std::string msg = error_of([&] { Checkpoint::open(index_); });
  EXPECT_TRUE(contains(msg, dir_.file("model-00002-of-00002.safetensors")));
}

TEST_F(ShardedCheckpointTest, SeveralIndexFilesAreAmbiguous) {
  write_bytes(dir_.file("other.safetensors.index.json"), R"({"weight_map": {}})");
  const std::string msg = error_of([&] { Checkpoint::open(dir_.path().string()); });
  EXPECT_TRUE(contains(msg, dir_.path().string()));
  EXPECT_TRUE(contains(msg, "several"));
}

TEST_F(ShardedCheckpointTest, BadConfigJson) {
  write_bytes(dir_.file("config.json"), "{dim: 128");
  const Checkpoint ckpt = Checkpoint::open(dir_.path().string());
  const std::string msg = error_of([&] { ckpt.config_json(); });
  EXPECT_TRUE(contains(msg, dir_.file("config.json")));
}

TEST(CheckpointTest, SingleFile) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_safetensors(path, {{"z", values({1})}, {"y", values({2, 3})}});
  const Checkpoint ckpt = Checkpoint::open(path);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"y", "z"}));
  EXPECT_EQ(ckpt.file_of("z"), path);
  EXPECT_FALSE(ckpt.config_path().has_value());
  EXPECT_FALSE(ckpt.config_json().has_value());
  const std::string msg = error_of([&] { ckpt.tensor("x"); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "'x'"));
  EXPECT_THROW(ckpt.file_of("x"), Error);
}

TEST(CheckpointTest, DirectoryOfPlainFiles) {
  TempDir dir;
  write_safetensors(dir.file("part1.safetensors"), {{"p.weight", values({1})}});
  write_safetensors(dir.file("part2.safetensors"), {{"q.weight", values({2})}});
  write_bytes(dir.file("notes.txt"), "not a checkpoint");
  const Checkpoint ckpt = Checkpoint::open(dir.path().string());
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"p.weight", "q.weight"}));
  EXPECT_EQ(ckpt.file_of("q.weight"), dir.file("part2.safetensors"));
  EXPECT_FALSE(ckpt.config_json().has_value());
}

TEST(CheckpointTest, TensorInTwoFiles) {
  TempDir dir;
  write_safetensors(dir.file("a.safetensors"), {{"shared", values({1})}});
  write_safetensors(dir.file("b.safetensors"), {{"shared", values({2})}});
  const std::string msg = error_of([&] { Checkpoint::open(dir.path().string()); });
  EXPECT_TRUE(contains(msg, "tensor 'shared'"));
  EXPECT_TRUE(contains(msg, dir.file("a.safetensors")));
  EXPECT_TRUE(contains(msg, dir.file("b.safetensors")));
}

TEST(CheckpointTest, PathDoesNotExist) {
  TempDir dir;
  const std::string path = dir.file("nowhere");
  const std::string msg = error_of([&] { Checkpoint::open(path); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "no such file or directory"));
}

TEST(CheckpointTest, DirectoryWithoutSafetensors) {
  TempDir dir;
  write_bytes(dir.file("config.json"), "{}");
  const std::string msg = error_of([&] { Checkpoint::open(dir.path().string()); });
  EXPECT_TRUE(contains(msg, dir.path().string()));
  EXPECT_TRUE(contains(msg, "no *.safetensors"));
}

TEST(CheckpointTest, TruncatedPthIsRefused) {
  // .pth files are read as torch.save zip archives (tests/io/pth_test.cpp); a zip that stops
  // after its first signature is refused naming the file.
  TempDir dir;
  const std::string path = dir.file("Wan2.1_VAE.pth");
  write_bytes(path, "PK\x03\x04");
  const std::string msg = error_of([&] { Checkpoint::open(path); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "bad zip archive"));
}

TEST(CheckpointTest, FromOpenFile) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, {{"w", values({7})}});
  const Checkpoint ckpt = Checkpoint::from_file(SafetensorsFile::open(path));
  EXPECT_EQ(ckpt.path(), path);
  EXPECT_EQ(ckpt.tensor_f32("w").to_vector(), (std::vector<float>{7}));
}

}  // namespace
}  // namespace fisdit
