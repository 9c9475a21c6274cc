// fisdit generate with HunyuanVideo 1.5 on the GPU: the tiny download of the pipeline tests run on
// CUDA (text encoder, glyph encoder, SigLIP, VAE encode, DiT in bf16, tiled VAE decode) against
// the same request on the CPU reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "../io/io_test_util.h"
#include "cuda_test_util.h"

#ifdef FISDIT_TEST_HUNYUAN_RELEASE
#include "../pipeline/tiny_hunyuan15_release.h"
#include "analysis/metrics.h"
#include "media/image.h"
#include "pipeline/generate.h"
#endif

namespace fisdit {
namespace {

TEST(CudaHunyuan15Generate, MatchesTheCpuRun) {
  FISDIT_REQUIRE_GPU();
  (void)gpu;
#ifndef FISDIT_TEST_HUNYUAN_RELEASE
  GTEST_SKIP() << "built without the pipeline or the Qwen2 tokenizer";
#else
  // --device cuda reaches the backend through the registry, as the fisdit binary fills it.
  register_cuda_backend(&make_cuda_backend, &cuda_device_count);
  iotest::TempDir dir;
  pipeline::tiny_hunyuan15::make_release(dir.path());
  Tensor rgb = Tensor::zeros({48, 64, 3}, DType::U8);
  for (int64_t i = 0; i < rgb.numel(); ++i)
    rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>((i * 7) % 253);
  write_png(dir.file("first.png"), rgb);
  pipeline::GenerateOptions o;
  o.model = dir.path().string();
  o.prompt = "A neon sign reads \"OPEN\" above a door.";
  o.image = dir.file("first.png");
  o.frames = 5;
  o.steps = 2;
  o.shift = 7.0;
  o.progress = false;
  for (const char* version : {"480p_i2v_step_distilled", "480p_t2v"}) {
    o.parts["version"] = version;
    if (std::string(version) == "480p_t2v") {
      o.image.clear();
      o.guidance = 6.0f;  // CFG, with the negative prompt
    }
    o.device = "cpu";
    const pipeline::GenerateResult cpu = pipeline::generate(o);
    o.device = "cuda";
    const pipeline::GenerateResult cuda = pipeline::generate(o);
    ASSERT_EQ(cuda.video.shape(), cpu.video.shape());
    const double err = rel_l2(cuda.latent, cpu.latent);
    const double db = analysis::psnr(cuda.video, cpu.video);
    std::fprintf(stderr, "hunyuan15 generate %s: latent rel L2 %.3g, frames %.1f dB PSNR\n",
                 version, err, db);
    EXPECT_LT(err, 0.03) << version;  // bf16 DiT and encoders vs fp32
    EXPECT_GT(db, 35.0) << version;
  }
#endif
}

}  // namespace
}  // namespace fisdit
