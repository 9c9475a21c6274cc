// Block offload on the GPU (--gpu-memory-limit, models/offload.h): blocks streamed from page-locked
// host memory on the copy stream give exactly the resident model's output (same kernels, same
// bf16 weights: any race between a copy and the blocks that read its slot shows as a
// difference), the measured peak stays within the limit, and allocations past the limit fail as
// running out of GPU memory does. Run without FISDIT_CUDA_SYNC too (bench/device.sh offload), so
// that the copies really overlap the compute.
#include <cstdio>
#include <cstring>

#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "models/family.h"
#include "models/wan/loader.h"

namespace fisdit {
namespace {

bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Its own backend (the shared one of the other tests keeps no budget).
std::unique_ptr<Backend> fresh_gpu() { return test::gpu_or_null() ? make_cuda_backend() : nullptr; }

// In the default precision and in fp8 (the block matrices streamed as E4M3 codes and scales).
TEST(CudaOffload, TinyModelStreamedMatchesResidentBitForBit) {
  for (const models::Precision precision : {models::Precision::Default, models::Precision::Fp8}) {
    SCOPED_TRACE(precision == models::Precision::Fp8 ? "fp8" : "default precision");
    auto gpu = fresh_gpu();
    if (!gpu) GTEST_SKIP() << "no usable CUDA GPU";
    const std::string path = std::string(FISDIT_TEST_DATA) + "/wan/dit_t2v_tiny.safetensors";
    const auto f = SafetensorsFile::open(path);
    const Tensor x = gpu->upload(f->tensor_f32("input.x"), DType::F32),
                 t = f->tensor_f32("input.t");
    accel::FisConfig fis;
    fis.name = "custom";
    fis.stride = 2;
    fis.head = fis.tail = 1;
    const auto run = [&](wan::WanDiT& dit) {
      const Tensor text = dit.embed_text(f->tensor_f32("input.context"));
      const accel::FisPlan plan(fis, dit.config().num_layers, 1, static_cast<int>(x.dim(1)));
      std::vector<Tensor> out;
      for (int rep = 0; rep < 2; ++rep) {
        out.push_back(gpu->download(dit.forward(x, t, text)));
        out.push_back(gpu->download(dit.forward(x, t, text, &plan, true)));
      }
      return out;
    };
    auto resident = wan::load_dit(wan::open_model(path), *gpu, {}, precision);
    const std::vector<Tensor> want = run(*resident);
    const int64_t least = resident->offload_plan().min_bytes;
    resident.reset();
    gpu->synchronize();
    const int64_t in_use = gpu->memory_in_use();
    const int64_t room = int64_t{64} << 20;  // for the tiny model's activations and workspaces
    gpu->set_memory_budget({in_use + room + least, room});
    auto streamed = wan::load_dit(wan::open_model(path), *gpu, {}, precision);
    ASSERT_EQ(streamed->offload_plan().streamed_count(), 4) << streamed->placement();
    gpu->reset_memory_peak();
    const std::vector<Tensor> got = run(*streamed);
    EXPECT_LE(gpu->memory_peak(), in_use + room + least);
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_identical(got[i], want[i])) << i;
  }
}

// A real block size (Wan2.1-1.3B: 30 blocks of 1536, 2.6 GiB of bf16 weights) at 8 latent frames
// of 30x52: copies of ~90 MB race the blocks; half the blocks stream.
TEST(CudaOffload, RealBlockSizeStreamedMatchesResidentBitForBit) {
  auto gpu = fresh_gpu();
  if (!gpu) GTEST_SKIP() << "no usable CUDA GPU";
  const std::string config = "wan2.1-t2v-1.3b";
  const models::Family& family = models::family_for_config(config);
  const models::ModelInfo info = family.config_info(config);
  const Tensor x = gpu->upload(test::randn({info.in_channels, 8, 60, 104}, 7), DType::F32);
  const Tensor context = test::randn({info.text_tokens, info.text_dim}, 8);
  const Tensor t = Tensor::from_vector({875.0f}, {1});
  const auto run = [&](models::VelocityModel& m) {
    const auto text = m.embed_text(context);
    std::vector<Tensor> out;
    for (int rep = 0; rep < 3; ++rep)
      out.push_back(gpu->download(m.forward(x, {t, std::nullopt}, text, {})));
    return out;
  };
  auto resident = family.random(config, *gpu, models::Precision::Default);
  gpu->synchronize();
  const int64_t weights = gpu->memory_in_use();
  gpu->reset_memory_peak();
  const std::vector<Tensor> want = run(*resident);
  const int64_t activations = gpu->memory_peak() - weights;
  resident.reset();
  gpu->synchronize();
  const int64_t in_use = gpu->memory_in_use();
  const int64_t limit = in_use + activations + weights / 2;
  gpu->set_memory_budget({limit, activations});
  auto streamed = family.random(config, *gpu, models::Precision::Default);
  std::fprintf(stderr, "offload: 1.3B weights %.2f GiB, activations %.2f GiB, limit %.2f GiB: %s\n",
               weights / 1073741824.0, activations / 1073741824.0, limit / 1073741824.0,
               streamed->placement().c_str());
  ASSERT_NE(streamed->placement(), "");
  gpu->reset_memory_peak();
  const std::vector<Tensor> got = run(*streamed);
  EXPECT_LE(gpu->memory_peak(), limit);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_identical(got[i], want[i])) << i;
  // Past the limit an allocation fails as running out of memory does, naming the limit.
  try {
    gpu->empty({limit}, DType::U8);
    FAIL() << "expected an allocation past the limit to fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of GPU memory"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("memory limit"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace fisdit
