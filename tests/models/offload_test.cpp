// Block offload (--gpu-memory-limit, models/offload.h): the placement, and the Wan DiT with its
// blocks streamed from host memory on the CPU backend, which applies the memory limit to the
// tensors it holds as a GPU of that size would.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "backend/backend.h"
#include "fisdit/error.h"
#include "io/safetensors.h"
#include "models/offload.h"
#include "models/wan/loader.h"

namespace fisdit {
namespace {

using models::OffloadPlan;
using models::plan_offload;

std::string fixture(const char* name) { return std::string(FISDIT_TEST_DATA) + "/wan/" + name; }

bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(OffloadPlan, EveryBlockResidentWithoutALimitOrWhenAllFit) {
  for (int64_t budget : {int64_t{-1}, int64_t{4050}, int64_t{100000}}) {
    const OffloadPlan p = plan_offload(40, 100, 50, budget);
    EXPECT_TRUE(p.fits);
    EXPECT_FALSE(p.active());
    EXPECT_EQ(p.device_bytes, 4050);
  }
}

TEST(OffloadPlan, StreamsTheBlocksBeyondTheBudgetEvenlySpaced) {
  // 2000 bytes: 50 outside the blocks, 2 slots, 17 resident blocks; 23 stream.
  const OffloadPlan p = plan_offload(40, 100, 50, 2000);
  ASSERT_TRUE(p.fits);
  EXPECT_EQ(p.slots, 2);
  EXPECT_EQ(p.streamed_count(), 23);
  EXPECT_EQ(p.device_bytes, 50 + (17 + 2) * 100);
  EXPECT_LE(p.device_bytes, 2000);
  // Evenly spaced: between two streamed blocks at most one resident block, and no run of more
  // than two streamed blocks in a row (23 of 40).
  int run = 0, gap = 0;
  for (bool s : p.streamed) {
    run = s ? run + 1 : 0;
    gap = s ? 0 : gap + 1;
    EXPECT_LE(run, 2);
    EXPECT_LE(gap, 1);
  }
  EXPECT_NE(p.describe().find("23 of 40 blocks streamed"), std::string::npos) << p.describe();
}

TEST(OffloadPlan, TheSmallestBudgetStreamsEveryBlockAndLessDoesNotFit) {
  const OffloadPlan least = plan_offload(40, 100, 50, 250);
  EXPECT_TRUE(least.fits);
  EXPECT_EQ(least.streamed_count(), 40);
  EXPECT_EQ(least.device_bytes, 250);
  const OffloadPlan none = plan_offload(40, 100, 50, 249);
  EXPECT_FALSE(none.fits);
  EXPECT_EQ(none.min_bytes, 250);
}

TEST(OffloadPlan, TheLimitErrorNamesTheSmallestLimitThatWouldWork) {
  auto backend = make_cpu_backend();
  const int64_t gib = int64_t{1} << 30;
  backend->set_memory_budget({2 * gib, gib});  // 1 GiB for activations, 1 GiB for weights
  try {
    models::plan_for_budget(*backend, 40, gib / 2, gib / 4, "the model");
    FAIL() << "expected the limit to be refused";
  } catch (const ParamError& e) {
    EXPECT_EQ(e.param(), "gpu-memory-limit");
    const std::string what = e.what();
    // 1 GiB reserve + 0.25 GiB outside the blocks + two slots of 0.5 GiB.
    EXPECT_NE(what.find("smallest limit that would work is 2.25 GiB"), std::string::npos) << what;
    EXPECT_NE(what.find("the model"), std::string::npos) << what;
  }
  backend->set_memory_budget({gib * 9 / 4, gib});
  EXPECT_EQ(models::plan_for_budget(*backend, 40, gib / 2, gib / 4, "the model").streamed_count(),
            40);
}

struct TinyRun {
  std::shared_ptr<SafetensorsFile> file =
      SafetensorsFile::open(fixture("dit_t2v_tiny.safetensors"));
  Tensor x = file->tensor_f32("input.x"), t = file->tensor_f32("input.t");
  Tensor context = file->tensor_f32("input.context");

  // Dense, FIS-sparse and MagCache-keeping forwards, in that order, as host tensors.
  std::vector<Tensor> run(wan::WanDiT& dit, Backend& backend) const {
    const auto text = dit.embed_text(context);
    const Tensor xd = backend.upload(x, DType::F32);
    std::vector<Tensor> out;
    out.push_back(backend.download(dit.forward(xd, t, text)));
    accel::FisConfig fis;
    fis.name = "custom";
    fis.stride = 2;
    fis.head = 1;
    fis.tail = 1;
    const accel::FisPlan plan(fis, dit.config().num_layers, 1, static_cast<int>(x.dim(1)));
    out.push_back(backend.download(dit.forward(xd, t, text, &plan, true)));
    Tensor residual;
    out.push_back(
        backend.download(dit.forward(xd, t, text, nullptr, true, {}, {nullptr, &residual})));
    out.push_back(backend.download(residual));
    return out;
  }
};

// In the default precision and in fp8 (the matrices streamed as E4M3 codes and scales).
class OffloadPrecision : public ::testing::TestWithParam<models::Precision> {};

TEST_P(OffloadPrecision, StreamedBlocksGiveTheResidentOutputsBitForBitWithinTheLimit) {
  const TinyRun in;
  const std::string path = fixture("dit_t2v_tiny.safetensors");
  // Resident, on a backend that counts what it holds (a limit far above the model).
  auto resident_backend = make_cpu_backend();
  resident_backend->set_memory_budget({int64_t{1} << 40, 0});
  const models::Precision precision = GetParam();
  auto resident = wan::load_dit(wan::open_model(path), *resident_backend, {}, precision);
  ASSERT_FALSE(resident->offload_plan().active());
  EXPECT_EQ(resident->placement(), "");
  const int64_t weights = resident_backend->memory_in_use();
  resident_backend->reset_memory_peak();
  const std::vector<Tensor> want = in.run(*resident, *resident_backend);
  const int64_t activations = resident_backend->memory_peak() - weights;
  ASSERT_GT(activations, 0);

  // The smallest limit: the weights outside the blocks, two block slots and those activations.
  auto backend = make_cpu_backend();
  backend->set_memory_budget({int64_t{1} << 40, activations});
  const OffloadPlan probe =
      wan::load_dit(wan::open_model(path), *backend, {}, precision)->offload_plan();
  ASSERT_EQ(backend->memory_in_use(), 0);
  EXPECT_FALSE(probe.active());
  const int64_t block_bytes = (probe.device_bytes - probe.min_bytes) / 2;  // 4 blocks vs 2 slots
  const int64_t limit = activations + probe.min_bytes;
  backend->set_memory_budget({limit, activations});
  auto streamed = wan::load_dit(wan::open_model(path), *backend, {}, precision);
  EXPECT_EQ(streamed->precision(), precision);
  const OffloadPlan& plan = streamed->offload_plan();
  ASSERT_TRUE(plan.active());
  EXPECT_EQ(plan.streamed_count(), 4);  // every block, through two slots
  EXPECT_EQ(plan.device_bytes, probe.min_bytes);
  EXPECT_NE(streamed->placement().find("4 of 4 blocks streamed"), std::string::npos);
  EXPECT_LE(backend->memory_in_use(), probe.min_bytes);
  backend->reset_memory_peak();
  const std::vector<Tensor> got = in.run(*streamed, *backend);
  EXPECT_LE(backend->memory_peak(), limit);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_identical(got[i], want[i])) << i;
  // Three forwards of four blocks, plus the two blocks copied ahead at load.
  EXPECT_EQ(streamed->bytes_streamed(), (3 * 4 + 2) * block_bytes);

  // One byte less and the model does not fit: the error names the limit that would.
  auto small = make_cpu_backend();
  small->set_memory_budget({limit - 1, activations});
  try {
    wan::load_dit(wan::open_model(path), *small, {}, precision);
    FAIL() << "expected the limit to be refused";
  } catch (const ParamError& e) {
    EXPECT_EQ(e.param(), "gpu-memory-limit");
    EXPECT_NE(std::string(e.what()).find("smallest limit that would work"), std::string::npos);
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, OffloadPrecision,
                         ::testing::Values(models::Precision::Default, models::Precision::Fp8),
                         [](const auto& info) {
                           return info.param == models::Precision::Fp8 ? "fp8" : "default";
                         });

TEST(Offload, AForwardThatFailsMidBlockLeavesTheNextOneRight) {
  const TinyRun in;
  const std::string path = fixture("dit_t2v_tiny.safetensors");
  auto resident_backend = make_cpu_backend();
  auto resident = wan::load_dit(wan::open_model(path), *resident_backend);
  const auto text_r = resident->embed_text(in.context);
  const Tensor want =
      resident_backend->download(resident->forward(resident_backend->upload(in.x), in.t, text_r));

  // A budget of the smallest placement: every block streams.
  const int64_t least = resident->offload_plan().min_bytes, limit = int64_t{1} << 40;
  auto backend = make_cpu_backend();
  backend->set_memory_budget({limit, limit - least});
  auto dit = wan::load_dit(wan::open_model(path), *backend);
  ASSERT_EQ(dit->offload_plan().streamed_count(), 4);
  const auto text = dit->embed_text(in.context);
  const Tensor xd = backend->upload(in.x);
  // The observer throws after block 1: blocks 2 and 3 never run, the rotation is left mid-way.
  const auto stop = [](const std::string& name, const Tensor&) {
    if (name == "block_1") throw Error("stopped");
  };
  EXPECT_THROW(dit->forward(xd, in.t, text, nullptr, true, stop), Error);
  EXPECT_TRUE(bit_identical(backend->download(dit->forward(xd, in.t, text)), want));
  EXPECT_TRUE(bit_identical(backend->download(dit->forward(xd, in.t, text)), want));
}

}  // namespace
}  // namespace fisdit
