// FIS executed inside the Wan DiT (FIS.md, invariants), on the tiny fixture model (4 blocks,
// 9 latent frames of 4x4 tokens).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "models/flops.h"
#include "models/wan/flops.h"
#include "models/wan/loader.h"

namespace fisdit {
namespace {

using accel::FisConfig;
using accel::FisPlan;

std::string fixture(const char* name) { return std::string(FISDIT_TEST_DATA) + "/wan/" + name; }

FisConfig custom(int stride, int head, int tail, accel::Granularity g = accel::Granularity::Module,
                 accel::Reconstruct r = accel::Reconstruct::Linear) {
  FisConfig c;
  c.name = "custom";
  c.stride = stride;
  c.head = head;
  c.tail = tail;
  c.granularity = g;
  c.reconstruct = r;
  return c;
}

struct Harness {
  std::unique_ptr<Backend> backend = make_cpu_backend();
  std::shared_ptr<SafetensorsFile> file;
  std::unique_ptr<wan::WanDiT> dit;
  Tensor text, t;
  explicit Harness(const char* name) {
    file = SafetensorsFile::open(fixture(name));
    dit = wan::load_dit(wan::open_model(fixture(name)), *backend);
    text = dit->embed_text(file->tensor_f32("input.context"));
    t = file->tensor_f32("input.t");
  }
  Tensor run(const Tensor& x, const FisConfig* fis, bool step_open = true) {
    const int frames = static_cast<int>(x.dim(1));
    if (!fis) return backend->download(dit->forward(x, t, text));
    const FisPlan plan(*fis, dit->config().num_layers, 1, frames);
    return backend->download(dit->forward(x, t, text, &plan, step_open));
  }
};

bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

bool all_finite(const Tensor& t) {
  const auto v = t.to_vector();
  return std::all_of(v.begin(), v.end(), [](float f) { return std::isfinite(f); });
}

// A latent that changes slowly and smoothly over its frames (video-like temporal redundancy).
Tensor smooth_latent(int64_t c, int64_t f, int64_t h, int64_t w, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Tensor base = Tensor::zeros({c, 1, h, w}), drift = Tensor::zeros({c, 1, h, w});
  for (int64_t i = 0; i < base.numel(); ++i) {
    base.f32()[i] = n(rng);
    drift.f32()[i] = n(rng);
  }
  Tensor x = Tensor::zeros({c, f, h, w});
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t fr = 0; fr < f; ++fr)
      for (int64_t p = 0; p < h * w; ++p)
        x.f32()[(ch * f + fr) * h * w + p] =
            base.f32()[ch * h * w + p] +
            0.3f * std::sin(0.35f * static_cast<float>(fr)) * drift.f32()[ch * h * w + p];
  return x;
}

TEST(WanFis, StrideOneIsBitIdenticalToDense) {
  Harness h("dit_t2v_tiny.safetensors");
  const Tensor x = h.file->tensor_f32("input.x");
  const Tensor dense = h.run(x, nullptr);
  const FisConfig s1 = custom(1, 0, 0);
  EXPECT_TRUE(bit_identical(h.run(x, &s1), dense));
  // No sparse (step, block) pair: a closed step gate, or head + tail covering every block.
  const FisConfig s3 = custom(3, 1, 1), covered = custom(3, 2, 2);
  EXPECT_TRUE(bit_identical(h.run(x, &s3, /*step_open=*/false), dense));
  EXPECT_TRUE(bit_identical(h.run(x, &covered), dense));
}

TEST(WanFis, TwoFramesOrFewerIsBitIdenticalToDense) {
  Harness h("dit_t2v_tiny.safetensors");
  const Tensor full = h.file->tensor_f32("input.x");  // [16, 9, 8, 8]: keep the first 2 frames
  Tensor x = Tensor::zeros({16, 2, 8, 8});
  for (int64_t c = 0; c < 16; ++c)
    std::memcpy(x.f32() + c * 2 * 64, full.f32() + c * 9 * 64, 2 * 64 * sizeof(float));
  const FisConfig s3 = custom(3, 0, 0);
  EXPECT_TRUE(bit_identical(h.run(x, &s3), h.run(x, nullptr)));
}

TEST(WanFis, SparseOutputDiffersFromDenseButStaysCloseOnSmoothVideo) {
  Harness h("dit_t2v_tiny.safetensors");
  const Tensor x = smooth_latent(16, 9, 8, 8, 7);
  const Tensor dense = h.run(x, nullptr);
  const FisConfig balanced = custom(3, 1, 1);
  const Tensor sparse = h.run(x, &balanced);
  ASSERT_TRUE(all_finite(sparse));
  const double err = rel_l2(sparse, dense);
  EXPECT_GT(err, 1e-4) << "FIS changed nothing: are the sparse blocks running?";
  // Random weights, 2 of 4 blocks sparse at s = 3: a bound that still catches broken
  // reconstruction (wrong frames, missing residual) which gives errors of order 1.
  EXPECT_LT(err, 0.05);  // measured 0.0095
  // Temporal redundancy is what FIS exploits: frames with no relation to each other lose more.
  std::mt19937 rng(11);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Tensor noise = Tensor::zeros(x.shape());
  for (int64_t i = 0; i < noise.numel(); ++i) noise.f32()[i] = n(rng);
  const double noise_err = rel_l2(h.run(noise, &balanced), h.run(noise, nullptr));
  EXPECT_GT(noise_err, err);
  std::printf("FIS s=3 rel L2 vs dense: smooth %.4f, noise %.4f\n", err, noise_err);
}

TEST(WanFis, EveryGranularityAndReconstructionRunsAndDiffers) {
  Harness h("dit_t2v_tiny.safetensors");
  const Tensor x = smooth_latent(16, 9, 8, 8, 3);
  const Tensor dense = h.run(x, nullptr);
  const FisConfig cfgs[] = {custom(3, 1, 1, accel::Granularity::Module, accel::Reconstruct::Linear),
                            custom(3, 1, 1, accel::Granularity::Block, accel::Reconstruct::Linear),
                            custom(3, 1, 1, accel::Granularity::Block, accel::Reconstruct::Delta)};
  std::vector<Tensor> outs;
  for (const auto& c : cfgs) {
    outs.push_back(h.run(x, &c));
    ASSERT_TRUE(all_finite(outs.back()));
    EXPECT_GT(rel_l2(outs.back(), dense), 1e-4);
  }
  EXPECT_GT(rel_l2(outs[0], outs[1]), 1e-5);  // module and block granularity differ
  EXPECT_GT(rel_l2(outs[1], outs[2]), 1e-5);  // linear and delta differ
}

TEST(WanFis, OneReconstructionPerBlockEqualsReconstructingEachBranch) {
  // The engine reconstructs a module-granularity block's total update once; FIS.md words it as
  // three branch reconstructions. Linear interpolation makes them equal up to float rounding.
  for (const char* name : {"dit_t2v_tiny.safetensors", "dit_ti2v_tiny.safetensors"}) {
    Harness h(name);
    const Tensor x = h.file->tensor_f32("input.x");
    for (const FisConfig& c : {custom(3, 1, 1), custom(2, 0, 0), custom(5, 1, 0)}) {
      h.dit->set_literal_module_reconstruction(false);
      const Tensor fused = h.run(x, &c);
      h.dit->set_literal_module_reconstruction(true);
      const Tensor literal = h.run(x, &c);
      h.dit->set_literal_module_reconstruction(false);
      const Tensor dense = h.run(x, nullptr);
      ASSERT_GT(rel_l2(literal, dense), 1e-4) << name << ": no sparse block ran";
      // fp32 rounding of a sum taken in another order: ~1e-7 per op, 4 blocks.
      EXPECT_LE(rel_l2(fused, literal), 1e-6) << name << " stride " << c.stride;
    }
  }
}

TEST(WanFis, PerTokenTimestepsAreGatheredWithTheAnchors) {
  // TI2V: frame 0 tokens have t = 0, the rest t = 700. With block granularity and every frame an
  // anchor of some block, a wrong modulation row would change the result; here we check that a
  // stride-2 plan on the per-token model runs, differs from dense and stays close.
  Harness h("dit_ti2v_tiny.safetensors");
  const Tensor x = h.file->tensor_f32("input.x");
  const Tensor dense = h.run(x, nullptr);
  const FisConfig s2 = custom(2, 1, 1);
  const Tensor sparse = h.run(x, &s2);
  ASSERT_TRUE(all_finite(sparse));
  const double err = rel_l2(sparse, dense);
  EXPECT_GT(err, 1e-4);
  EXPECT_LT(err, 0.5);
}

TEST(WanFis, ExecutedFlopsEqualTheAnalyticCount) {
  Harness h("dit_t2v_tiny.safetensors");
  const Tensor x = h.file->tensor_f32("input.x");
  const wan::WanConfig& cfg = h.dit->config();
  const FisConfig cases[] = {custom(1, 0, 0), custom(3, 1, 1), custom(2, 0, 0),
                             custom(3, 1, 1, accel::Granularity::Block)};
  // The text side, counted separately (once per prompt): the embedding, and with a TextContext
  // every block's cross-attention keys and values of it.
  h.backend->flops().reset();
  h.dit->embed_text(h.file->tensor_f32("input.context"));
  EXPECT_EQ(h.backend->flops().total(), wan::text_embedding_flops(cfg));
  h.backend->flops().reset();
  const models::TextEmbedding text =
      h.dit->embed_text(models::TextContext(h.file->tensor_f32("input.context")));
  EXPECT_EQ(h.backend->flops().total(), wan::text_embedding_flops(cfg) + wan::text_kv_flops(cfg));
  ASSERT_EQ(text.blocks.size(), static_cast<size_t>(cfg.num_layers));
  for (const auto& c : cases) {
    const FisPlan plan(c, cfg.num_layers, 1, 9);
    const double analytic = wan::forward_flops(cfg, 9, 4, 4, &plan, true).total();
    h.backend->flops().reset();
    h.dit->forward(x, models::Timestep{h.t, std::nullopt}, text, {&plan, true, {}, {}});
    EXPECT_EQ(h.backend->flops().total(), analytic) << c.describe();
    // The Tensor forward projects the text in every block.
    h.backend->flops().reset();
    h.dit->forward(x, h.t, h.text, &plan, true);
    EXPECT_EQ(h.backend->flops().total(), analytic + wan::text_kv_flops(cfg)) << c.describe();
  }
}

// The blocks' text keys and values made once in embed_text give the forward the Tensor forward
// gives (which projects the text in every block), bit for bit, dense and with every FIS variant;
// a forward refuses them once the weights changed.
TEST(WanFis, TextKeysAndValuesMadeOncePerPromptChangeNothing) {
  for (const char* model : {"dit_t2v_tiny.safetensors", "dit_ti2v_tiny.safetensors"}) {
    Harness h(model);
    const Tensor x = h.file->tensor_f32("input.x");
    const models::TextEmbedding text =
        h.dit->embed_text(models::TextContext(h.file->tensor_f32("input.context")));
    ASSERT_EQ(text.blocks.size(), static_cast<size_t>(h.dit->config().num_layers));
    const models::Timestep time{h.t, std::nullopt};
    const FisConfig cases[] = {
        custom(3, 1, 1), custom(2, 0, 0, accel::Granularity::Block),
        custom(2, 0, 0, accel::Granularity::Block, accel::Reconstruct::Delta)};
    EXPECT_TRUE(
        bit_identical(h.backend->download(h.dit->forward(x, time, text, {})), h.run(x, nullptr)))
        << model;
    for (const auto& c : cases) {
      const FisPlan plan(c, h.dit->config().num_layers, 1, static_cast<int>(x.dim(1)));
      EXPECT_TRUE(bit_identical(
          h.backend->download(h.dit->forward(x, time, text, {&plan, true, {}, {}})), h.run(x, &c)))
          << model << " " << c.describe();
    }
  }
}

TEST(WanFis, TextKeysAndValuesOfOtherWeightsAreRefused) {
  Harness h("dit_t2v_tiny.safetensors");
  const Tensor x = h.file->tensor_f32("input.x");
  const models::TextContext context(h.file->tensor_f32("input.context"));
  const models::Timestep time{h.t, std::nullopt};
  models::TextEmbedding text = h.dit->embed_text(context);
  // Fewer blocks than the model has.
  models::TextEmbedding other = text;
  other.blocks.pop_back();
  EXPECT_THROW(h.dit->forward(x, time, other, {}), Error);
  // Another DiT's, though it has the same weights and blocks (an A14B expert's for the other).
  Harness twin("dit_t2v_tiny.safetensors");
  EXPECT_THROW(h.dit->forward(x, time, twin.dit->embed_text(context), {}), Error);
  EXPECT_NO_THROW(twin.dit->forward(x, time, twin.dit->embed_text(context), {}));
  // Under a memory limit the text is projected in the forward (the activation reserve has no
  // room for the kept keys and values): no blocks, the same output.
  Backend::MemoryBudget budget;
  budget.limit = int64_t{64} << 30;
  h.backend->set_memory_budget(budget);
  const models::TextEmbedding limited = h.dit->embed_text(context);
  EXPECT_TRUE(limited.blocks.empty());
  EXPECT_TRUE(bit_identical(h.backend->download(h.dit->forward(x, time, limited, {})),
                            h.backend->download(h.dit->forward(x, time, text, {}))));
  h.backend->set_memory_budget({});
  try {  // fp8 GEMMs where the CPU backend has them: the old keys and values are refused
    h.dit->set_precision(models::Precision::Fp8Gemm);
  } catch (const Error&) {
    GTEST_SKIP() << "no fp8 GEMM on this backend";
  }
  try {
    h.dit->forward(x, time, text, {});
    ADD_FAILURE() << "a text embedding made before set_precision was taken";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("embed the text again"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(h.dit->forward(x, time, h.dit->embed_text(context), {}));
}

TEST(WanFis, AnalyticFlopsOfA14B720pMatchFisMd) {
  const models::ModelInfo info = wan::model_info(wan::preset_config("wan2.2-t2v-a14b"));
  const auto r = models::run_flops(info, 1280, 720, 81, 4, accel::fis_preset("balanced"));
  // FIS.md: about 26.0 P dense and 11.6 P balanced (paper 26.09 / 11.55). The anchor rule of
  // FIS.md (boundaries always anchors) gives 11.70 P, within 1% of 11.6.
  EXPECT_NEAR(r.dense / 1e15, 26.09, 0.05);
  EXPECT_NEAR(r.planned / 1e15, 11.6, 0.15);
  const auto fast = models::run_flops(info, 1280, 720, 81, 4, accel::fis_preset("fast"));
  EXPECT_LT(fast.planned, r.planned);
}

}  // namespace
}  // namespace fisdit
