// Recorded forwards (Backend::capture, GraphCache) on the CPU backend, whose recording keeps the
// body and runs it again at each replay: the keying, refilling and text slots of the Wan DiT's
// graphs, tested without a GPU (tests/cuda/graph_test.cpp runs the same checks on CUDA graphs).
#include <gtest/gtest.h>

#include "backend/graph_cache.h"
#include "graph_checks.h"

namespace fisdit {
namespace {

std::string fixture(const char* name) { return std::string(FISDIT_TEST_DATA) + "/wan/" + name; }

TEST(GraphCache, RunsThenRecordsThenReplaysEachKey) {
  GraphCache cache(2);
  using S = GraphCache::Step;
  const auto entry = [] {
    GraphCache::Entry e;
    e.graph.handle = std::make_shared<int>(0);
    return e;
  };
  EXPECT_EQ(cache.next("a"), S::Run);
  EXPECT_EQ(cache.next("b"), S::Run);
  EXPECT_EQ(cache.next("a"), S::Record);
  EXPECT_THROW(cache.entry("a"), Error);  // not stored yet
  cache.store("a", entry());
  EXPECT_NO_THROW(cache.entry("a"));
  EXPECT_EQ(cache.next("a"), S::Replay);
  EXPECT_EQ(cache.next("b"), S::Record);
  cache.store("b", entry());
  EXPECT_EQ(cache.next("a"), S::Replay);  // a is now used more recently than b
  EXPECT_EQ(cache.next("c"), S::Run);
  EXPECT_EQ(cache.next("c"), S::Record);
  cache.store("c", entry());  // full: b, the least recently used, goes and starts over
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.next("a"), S::Replay);
  EXPECT_EQ(cache.next("b"), S::Run);
  EXPECT_EQ(cache.next("b"), S::Record);
  // A failed recording: op by op from then on, one notice.
  EXPECT_TRUE(cache.failed("b", "no graphs here"));
  EXPECT_EQ(cache.last_failure(), "no graphs here");
  EXPECT_EQ(cache.next("b"), S::Run);
  EXPECT_EQ(cache.next("b"), S::Run);
  EXPECT_EQ(cache.next("d"), S::Run);
  EXPECT_EQ(cache.next("d"), S::Record);
  EXPECT_FALSE(cache.failed("d", "again"));  // the notice was given
  const GraphCache::Stats s = cache.stats();
  EXPECT_EQ(s.failed, 2);
  EXPECT_EQ(s.replayed, 3);
  EXPECT_EQ(s.recorded, 3);  // a, b (the first time), c
  EXPECT_EQ(s.runs, 9);
  EXPECT_THROW(cache.store("d", GraphCache::Entry{}), Error);  // no graph
  cache.clear();
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.next("a"), S::Run);
}

TEST(GraphCache, ForgetsTheStalestKeysItNeverRecorded) {
  GraphCache cache(1);  // knows at most 16 keys
  const auto key = [](int i) { return std::to_string(i); };
  for (int i = 0; i < 100; ++i) EXPECT_EQ(cache.next(key(i)), GraphCache::Step::Run);
  EXPECT_EQ(cache.next(key(99)), GraphCache::Step::Record);  // recent: still known
  EXPECT_EQ(cache.next(key(0)), GraphCache::Step::Run);      // stale: forgotten
}

TEST(CpuGraphs, ARecordingRunsNothingAndEachReplayRunsTheOps) {
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  EXPECT_FALSE(cpu->graphs());  // off unless asked for
  test::check_capture_and_replay(*cpu);
}

TEST(CpuGraphs, WanForwardsRecordedGiveTheOpByOpOutputs) {
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  for (const char* model : {"dit_t2v_tiny.safetensors", "dit_ti2v_tiny.safetensors"})
    test::check_graphed_forwards(*cpu, fixture(model));
  // The block matrices in E4M3 (the CPU's emulation of the fp8 GEMMs).
  test::check_graphed_forwards(*cpu, fixture("dit_t2v_tiny.safetensors"),
                               models::Precision::Fp8Gemm);
}

TEST(CpuGraphs, NewRequestsReplayTheGraphsOfTheLastOne) {
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  test::check_requests_replay_the_last_ones(*cpu, fixture("dit_ti2v_tiny.safetensors"));
}

// What a recording cannot hold runs op by op: an observer, MagCache's residual, a memory limit.
// New weights (set_precision) drop the graphs of the old ones.
TEST(CpuGraphs, WanForwardsThatCannotBeRecordedRunOpByOp) {
  const std::unique_ptr<Backend> cpu = make_cpu_backend();
  const std::string model = fixture("dit_t2v_tiny.safetensors");
  const auto file = SafetensorsFile::open(model);
  const std::unique_ptr<wan::WanDiT> dit = wan::load_dit(wan::open_model(model), *cpu);
  const models::TextContext context(file->tensor_f32("input.context"));
  const models::TextEmbedding text = dit->embed_text(context);
  const Tensor x = cpu->upload(file->tensor_f32("input.x"), DType::F32);
  const models::Timestep time{file->tensor_f32("input.t"), std::nullopt};
  test::GraphsOn on(*cpu);
  int observed = 0;
  Tensor residual;
  for (int i = 0; i < 3; ++i) {
    dit->forward(x, time, text,
                 {nullptr, true, [&](const std::string&, const Tensor&) { ++observed; }, {}});
    dit->forward(x, time, text, {nullptr, true, {}, {nullptr, &residual}});
    dit->forward(x, time, text, {nullptr, true, {}, {&residual, nullptr}});
  }
  EXPECT_GT(observed, 0);
  GraphCache::Stats s = dit->graph_stats();
  EXPECT_EQ(s.runs + s.recorded + s.replayed, 0);
  // More tokens than a recorded forward may have (the tiny latent has 144).
  dit->set_graph_tokens(143);
  for (int i = 0; i < 3; ++i) dit->forward(x, time, text, {});
  s = dit->graph_stats();
  EXPECT_EQ(s.runs + s.recorded + s.replayed, 0);
  dit->set_graph_tokens(144);
  // A memory limit: graph memory is outside what it counts.
  Backend::MemoryBudget budget;
  budget.limit = int64_t{64} << 30;
  cpu->set_memory_budget(budget);
  const models::TextEmbedding limited_text = dit->embed_text(context);
  for (int i = 0; i < 3; ++i) dit->forward(x, time, text, {});
  s = dit->graph_stats();
  EXPECT_EQ(s.runs + s.recorded + s.replayed, 0);
  cpu->set_memory_budget({});
  // Recorded, then the weights change: the new ones' forwards start over and match op by op.
  for (int i = 0; i < 3; ++i) dit->forward(x, time, text, {});
  EXPECT_EQ(dit->graph_stats().replayed, 1);
  try {
    dit->set_precision(models::Precision::Fp8Gemm);
  } catch (const Error&) {
    GTEST_SKIP() << "no fp8 GEMM on this backend";
  }
  const models::TextEmbedding fp8_text = dit->embed_text(context);
  Tensor graphed;
  for (int i = 0; i < 3; ++i) graphed = cpu->download(dit->forward(x, time, fp8_text, {}));
  s = dit->graph_stats();
  EXPECT_EQ(s.runs, 2);
  EXPECT_EQ(s.replayed, 2);
  cpu->set_graphs(false);
  EXPECT_TRUE(test::same_bits(graphed, cpu->download(dit->forward(x, time, fp8_text, {}))));
}

}  // namespace
}  // namespace fisdit
