// Every CUDA op against the fp32 CPU reference on random inputs. Operands that the GPU keeps in
// bf16 are rounded to bf16 before the CPU sees them, so the error measures the kernel (its
// accumulation order and the rounding of its output), not the storage format. Outputs start as
// NaN. Sizes are deliberately not multiples of any tile.
//
// Tolerances (rel L2): 1e-2 where the output is stored as bf16 (one rounding, unit roundoff 2^-9,
// plus bf16 probabilities inside cuDNN attention); 1e-4 for fp32 outputs of bf16 GEMMs (fp32
// accumulation in another order); 1e-6 for fp32 elementwise ops; 0 for pure data movement.
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "../io/io_test_util.h"
#include "cuda_test_util.h"

namespace fisdit {
namespace {

using test::gpu_err;
using test::poisoned;
using test::randn;
using test::round_bf16;

constexpr double kBf16Out = 1e-2;
constexpr double kF32Gemm = 1e-4;
constexpr double kF32Elementwise = 1e-6;

struct LinearCase {
  int64_t m, k, n;
  DType x, y;
  bool bias;
  Activation act;
};

class CudaLinear : public ::testing::TestWithParam<LinearCase> {};

TEST_P(CudaLinear, MatchesTheCpuReference) {
  FISDIT_REQUIRE_GPU();
  const LinearCase c = GetParam();
  auto cpu = make_cpu_backend();
  const bool gemv = c.x == DType::F32 && c.m <= 8;  // fp32 activations stay fp32 there
  Tensor x = randn({c.m, c.k}, 1);
  if (!gemv) x = round_bf16(x);
  const Tensor w = round_bf16(randn({c.n, c.k}, 2, 1.0f / std::sqrt(static_cast<float>(c.k))));
  const Tensor b = round_bf16(randn({c.n}, 3, 0.1f));
  Tensor y_ref = Tensor::zeros({c.m, c.n});
  cpu->linear(x, w, c.bias ? &b : nullptr, y_ref, c.act);

  const Tensor xd = gpu.upload(x, c.x), wd = gpu.upload(w, DType::BF16),
               bd = gpu.upload(b, DType::BF16);
  Tensor yd = poisoned(gpu, {c.m, c.n}, c.y);
  gpu.flops().reset();
  gpu.linear(xd, wd, c.bias ? &bd : nullptr, yd, c.act);
  const double err = gpu_err(gpu, yd, y_ref);
  EXPECT_LE(err, c.y == DType::BF16 ? kBf16Out : kF32Gemm)
      << "m=" << c.m << " k=" << c.k << " n=" << c.n;
  EXPECT_DOUBLE_EQ(gpu.flops().linear, cpu->flops().linear);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaLinear,
    ::testing::Values(
        LinearCase{37, 200, 72, DType::BF16, DType::BF16, true, Activation::None},
        LinearCase{37, 200, 72, DType::BF16, DType::BF16, true, Activation::GeluTanh},
        LinearCase{130, 136, 300, DType::BF16, DType::BF16, false, Activation::None},
        LinearCase{130, 64, 256, DType::F32, DType::F32, true, Activation::None},  // patch embed
        LinearCase{257, 128, 64, DType::F32, DType::F32, true, Activation::None},  // head
        LinearCase{33, 48, 128, DType::F32, DType::BF16, true, Activation::GeluTanh},  // text
        LinearCase{1, 256, 128, DType::F32, DType::F32, true, Activation::Silu},       // time emb
        LinearCase{3, 128, 768, DType::F32, DType::F32, true, Activation::None},       // projection
        LinearCase{1000, 1536, 1000, DType::BF16, DType::BF16, true, Activation::GeluTanh},
        LinearCase{77, 512, 1536, DType::BF16, DType::F32, true, Activation::Silu},
        LinearCase{40, 96, 88, DType::F32, DType::F32, true, Activation::Gelu}));  // vision/byT5

// The GEMM algorithm a shape's first call times is kept in the tuning cache (FISDIT_CACHE_DIR),
// named by its configuration: a new backend (as a new process would) reads it instead of timing,
// so it runs the same algorithm and makes the same bits.
TEST(CudaLinearTuning, TheTimedAlgorithmIsKeptForTheNextProcess) {
  FISDIT_REQUIRE_GPU();
  (void)gpu;
  if (const char* v = std::getenv("FISDIT_GEMM_AUTOTUNE"); v && std::string(v) == "0")
    GTEST_SKIP() << "FISDIT_GEMM_AUTOTUNE=0: no timed choice";
  iotest::TempDir dir;
  test::EnvScope cache_dir("FISDIT_CACHE_DIR", dir.path().c_str());
  const Tensor x = round_bf16(randn({130, 136}, 11)), w = round_bf16(randn({300, 136}, 12, 0.1f));
  const auto run = [&] {
    const std::unique_ptr<Backend> be = make_cuda_backend();
    Tensor y = be->empty({130, 300}, DType::BF16);
    be->linear(be->upload(x, DType::BF16), be->upload(w, DType::BF16), nullptr, y);
    return be->download(y);
  };
  const Tensor first = run();
  std::string text;
  for (const auto& f : std::filesystem::directory_iterator(dir.path()))
    if (f.path().filename().string().rfind("cublaslt-gemm-", 0) == 0) {
      std::ifstream in(f.path());
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
  EXPECT_NE(text.find("m=130 n=300 k=136 out=bf16"), std::string::npos) << text;
  const Tensor second = run();
  EXPECT_EQ(std::memcmp(first.raw(), second.raw(), static_cast<size_t>(first.nbytes())), 0);
  std::printf("cuBLASLt tuning cache:\n%s", text.c_str());
}

struct AttnCase {
  int64_t lq, lk, heads, d;
};
class CudaAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CudaAttention, MatchesTheCpuReference) {
  FISDIT_REQUIRE_GPU();
  const AttnCase c = GetParam();
  auto cpu = make_cpu_backend();
  const Tensor q = round_bf16(randn({c.lq, c.heads, c.d}, 11, 1.5f));
  const Tensor k = round_bf16(randn({c.lk, c.heads, c.d}, 12, 1.5f));
  const Tensor v = round_bf16(randn({c.lk, c.heads, c.d}, 13));
  Tensor ref = Tensor::zeros({c.lq, c.heads, c.d});
  cpu->attention(q, k, v, ref);
  Tensor out = poisoned(gpu, {c.lq, c.heads, c.d}, DType::BF16);
  gpu.flops().reset();
  gpu.attention(gpu.upload(q, DType::BF16), gpu.upload(k, DType::BF16), gpu.upload(v, DType::BF16),
                out);
  EXPECT_LE(gpu_err(gpu, out, ref), kBf16Out)
      << "lq=" << c.lq << " lk=" << c.lk << " heads=" << c.heads << " d=" << c.d;
  EXPECT_DOUBLE_EQ(gpu.flops().attention, cpu->flops().attention);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention,
                         ::testing::Values(AttnCase{144, 144, 2, 64},  // fixture self-attention
                                           AttnCase{144, 32, 2, 64},   // fixture cross-attention
                                           AttnCase{77, 33, 3, 64}, AttnCase{300, 512, 2, 128},
                                           AttnCase{1000, 1000, 2, 128},
                                           AttnCase{129, 77, 5, 128}));

TEST(CudaOps, LayerNormWithModulationAndRowIndex) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (int64_t d : {128, 130, 200, 5120}) {  // 130: the non-vectorised path
    const int64_t rows = 37;
    const Tensor x = randn({rows, d}, 21, 2.0f, 0.5f);
    const Tensor table = randn({2, 6, d}, 22, 0.3f);
    Tensor idx = Tensor::zeros({rows}, DType::I32);
    for (int64_t i = 0; i < rows; ++i) idx.data_as<int32_t>()[i] = static_cast<int32_t>(i % 3 == 0);
    const Modulation mod_c{table, idx};
    const Tensor table_d = gpu.upload(table, DType::F32);
    const Modulation mod_g{table_d, gpu.upload(idx, DType::I32)};
    for (DType yt : {DType::BF16, DType::F32}) {
      Tensor ref = Tensor::zeros({rows, d});
      cpu->layer_norm(x, nullptr, nullptr, 1e-6f, ref, {&mod_c, 3}, {&mod_c, 4});
      Tensor y = poisoned(gpu, {rows, d}, yt);
      gpu.layer_norm(gpu.upload(x, DType::F32), nullptr, nullptr, 1e-6f, y, {&mod_g, 3},
                     {&mod_g, 4});
      EXPECT_LE(gpu_err(gpu, y, ref), yt == DType::BF16 ? kBf16Out : 1e-5) << "d=" << d;
    }
    // Affine (norm3), no modulation, bf16 weights.
    const Tensor w = round_bf16(randn({d}, 23, 0.1f, 1.0f)), b = round_bf16(randn({d}, 24, 0.1f));
    Tensor ref = Tensor::zeros({rows, d});
    cpu->layer_norm(x, &w, &b, 1e-6f, ref);
    Tensor y = poisoned(gpu, {rows, d}, DType::BF16);
    const Tensor wd = gpu.upload(w, DType::BF16), bd = gpu.upload(b, DType::BF16);
    gpu.layer_norm(gpu.upload(x, DType::F32), &wd, &bd, 1e-6f, y);
    EXPECT_LE(gpu_err(gpu, y, ref), kBf16Out) << "affine d=" << d;
  }
}

TEST(CudaOps, RmsNormInPlace) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (int64_t d : {128, 330, 5120}) {  // 330: the non-vectorised path
    const Tensor x = round_bf16(randn({41, d}, 31, 3.0f));
    const Tensor w = round_bf16(randn({d}, 32, 0.1f, 1.0f));
    Tensor ref = Tensor::zeros({41, d});
    cpu->rms_norm(x, w, 1e-6f, ref);
    Tensor xd = gpu.upload(x, DType::BF16);
    gpu.rms_norm(xd, gpu.upload(w, DType::BF16), 1e-6f, xd);
    EXPECT_LE(gpu_err(gpu, xd, ref), kBf16Out) << "d=" << d;
  }
}

TEST(CudaOps, Rope3dAtGatheredFrames) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (int64_t d : {64, 128}) {
    const RopeGrid grid{{0, 3, 6, 8, 20}, 3, 5};
    const int64_t tokens = grid.tokens(), heads = 3;
    Tensor x = round_bf16(randn({tokens, heads, d}, 41));
    Tensor ref = x.clone();
    cpu->rope_3d(ref, grid);
    Tensor xd = gpu.upload(x, DType::BF16);
    gpu.rope_3d(xd, grid);
    EXPECT_LE(gpu_err(gpu, xd, ref), kBf16Out) << "d=" << d;
  }
}

TEST(CudaOps, Rope3dWithHunyuanAxisSplit) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  RopeGrid grid{{0, 3, 6, 8, 30}, 4, 6};
  grid.axis_pairs = {8, 28, 28};  // HunyuanVideo 1.5: 16/56/56 channels, theta 256
  grid.theta = 256.0;
  const int64_t tokens = grid.tokens(), heads = 3, d = 128;
  Tensor x = round_bf16(randn({tokens, heads, d}, 42));
  Tensor ref = x.clone();
  cpu->rope_3d(ref, grid);
  Tensor xd = gpu.upload(x, DType::BF16);
  gpu.rope_3d(xd, grid);
  EXPECT_LE(gpu_err(gpu, xd, ref), kBf16Out);
  // The table is rebuilt for Wan's split after it (the cache is keyed by split and theta).
  const RopeGrid wan{{0, 3, 6, 8, 30}, 4, 6};
  Tensor ref2 = x.clone();
  cpu->rope_3d(ref2, wan);
  Tensor xd2 = gpu.upload(x, DType::BF16);
  gpu.rope_3d(xd2, wan);
  EXPECT_LE(gpu_err(gpu, xd2, ref2), kBf16Out);
  // And the fused RMSNorm + RoPE with the split.
  const Tensor x2 = round_bf16(randn({tokens, heads * d}, 43, 2.0f));
  const Tensor w = round_bf16(randn({heads * d}, 44, 0.1f, 1.0f));
  Tensor ref3 = x2.clone();
  cpu->rms_norm_rope(ref3, w, 1e-6f, heads, grid);
  Tensor xd3 = gpu.upload(x2, DType::BF16);
  gpu.rms_norm_rope(xd3, gpu.upload(w, DType::BF16), 1e-6f, heads, grid);
  EXPECT_LE(gpu_err(gpu, xd3, ref3), kBf16Out);
}

TEST(CudaOps, FusedRmsNormRopeMatchesTheTwoReferenceOps) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  // (heads, head_dim): fused bf16 kernel for 2x64 and 40x128 (Wan), fallback for 3x66 (d % 8).
  for (const auto& [heads, hd] :
       std::vector<std::pair<int64_t, int64_t>>{{2, 64}, {40, 128}, {3, 66}}) {
    const RopeGrid grid{{0, 3, 6, 8, 20}, 3, 5};  // gathered anchors: true frame indices
    const int64_t tokens = grid.tokens(), d = heads * hd;
    const Tensor x = round_bf16(randn({tokens, d}, 51, 2.0f));
    const Tensor w = round_bf16(randn({d}, 52, 0.1f, 1.0f));
    Tensor ref = x.clone();
    cpu->rms_norm_rope(ref, w, 1e-6f, heads, grid);
    Tensor xd = gpu.upload(x, DType::BF16);
    gpu.flops().reset();
    gpu.rms_norm_rope(xd, gpu.upload(w, DType::BF16), 1e-6f, heads, grid);
    EXPECT_LE(gpu_err(gpu, xd, ref), kBf16Out) << heads << "x" << hd;
  }
}

TEST(CudaOps, GatedAddMulGateAndArithmetic) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (int64_t d : {128, 66}) {  // vectorised and scalar paths
    const int64_t rows = 29;
    const Tensor x = randn({rows, d}, 51), y = round_bf16(randn({rows, d}, 52));
    const Tensor table = randn({3, 6, d}, 53);
    Tensor idx = Tensor::zeros({rows}, DType::I32);
    for (int64_t i = 0; i < rows; ++i) idx.data_as<int32_t>()[i] = static_cast<int32_t>(i % 3);
    for (bool with_rows : {false, true}) {
      const Modulation mc{table, with_rows ? idx : Tensor()};
      const Modulation mg{gpu.upload(table, DType::F32),
                          with_rows ? gpu.upload(idx, DType::I32) : Tensor()};
      for (DType yt : {DType::BF16, DType::F32}) {
        Tensor ref = x.clone();
        cpu->add(ref, y, {&mc, 2});
        Tensor xd = gpu.upload(x, DType::F32);
        gpu.add(xd, gpu.upload(y, yt), {&mg, 2});
        EXPECT_LE(gpu_err(gpu, xd, ref), kF32Elementwise) << "add d=" << d;
      }
      Tensor ref = y.clone();
      cpu->mul_gate(ref, {&mc, 5});
      Tensor yd = gpu.upload(y, DType::BF16);
      gpu.mul_gate(yd, {&mg, 5});
      EXPECT_LE(gpu_err(gpu, yd, ref), kBf16Out) << "mul_gate d=" << d;
    }
    Tensor ref = x.clone();
    cpu->add(ref, y);
    Tensor xd = gpu.upload(x, DType::F32);
    gpu.add(xd, gpu.upload(y, DType::BF16));
    EXPECT_LE(gpu_err(gpu, xd, ref), kF32Elementwise) << "plain add";
  }
  const Tensor a = randn({7, 33}, 61), b = randn({7, 33}, 62), row = randn({33}, 63);
  Tensor ref = Tensor::zeros({7, 33});
  cpu->sub(a, b, ref);
  Tensor out = poisoned(gpu, {7, 33}, DType::F32);
  gpu.sub(gpu.upload(a, DType::F32), gpu.upload(b, DType::F32), out);
  EXPECT_LE(gpu_err(gpu, out, ref), kF32Elementwise) << "sub";
  cpu->add_row(a, row, ref);
  out = poisoned(gpu, {7, 33}, DType::F32);
  gpu.add_row(gpu.upload(a, DType::F32), gpu.upload(row, DType::F32), out);
  EXPECT_LE(gpu_err(gpu, out, ref), kF32Elementwise) << "add_row";
  ref = a.clone();
  cpu->add_scaled(ref, b, -0.375f);
  Tensor ad = gpu.upload(a, DType::F32);
  gpu.add_scaled(ad, gpu.upload(b, DType::F32), -0.375f);
  EXPECT_LE(gpu_err(gpu, ad, ref), kF32Elementwise) << "add_scaled";
  for (Activation act : {Activation::Silu, Activation::GeluTanh, Activation::Gelu}) {
    cpu->activation(a, ref, act);
    out = poisoned(gpu, {7, 33}, DType::F32);
    gpu.activation(gpu.upload(a, DType::F32), out, act);
    EXPECT_LE(gpu_err(gpu, out, ref), kF32Elementwise) << "activation";
  }
}

TEST(CudaOps, GatherAndInterpolateFrames) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const int64_t frames = 9, per_frame = 5, d = 24;
  const std::vector<int32_t> anchors = {0, 3, 6, 8};
  const int64_t a = static_cast<int64_t>(anchors.size());
  // F32 rows, odd row sizes (scalar word path) and I32 row indices.
  for (int64_t width : {d, int64_t{3}}) {
    const Tensor src = randn({frames * per_frame, width}, 71);
    Tensor ref = Tensor::zeros({a * per_frame, width});
    cpu->gather_frames(src, anchors, per_frame, ref);
    Tensor dst = poisoned(gpu, {a * per_frame, width}, DType::F32);
    gpu.gather_frames(gpu.upload(src, DType::F32), anchors, per_frame, dst);
    EXPECT_EQ(gpu_err(gpu, dst, ref), 0.0) << "gather width " << width;
  }
  Tensor rows = Tensor::zeros({frames * per_frame}, DType::I32);
  for (int64_t i = 0; i < rows.numel(); ++i)
    rows.data_as<int32_t>()[i] = static_cast<int32_t>(i * 7 % 5);
  Tensor rows_ref = Tensor::zeros({a * per_frame}, DType::I32);
  cpu->gather_frames(rows, anchors, per_frame, rows_ref);
  Tensor rows_d = gpu.empty({a * per_frame}, DType::I32);
  gpu.gather_frames(gpu.upload(rows, DType::I32), anchors, per_frame, rows_d);
  EXPECT_EQ(rel_l2(gpu.download(rows_d), rows_ref.to_f32()), 0.0) << "gather I32";

  for (DType st : {DType::BF16, DType::F32}) {
    const Tensor src = round_bf16(randn({a * per_frame, d}, 72));
    const Tensor base = randn({frames * per_frame, d}, 73);
    for (bool acc : {false, true}) {
      Tensor ref = base.clone();
      cpu->interpolate_frames(src, anchors, per_frame, ref, acc);
      Tensor dst = acc ? gpu.upload(base, DType::F32) : poisoned(gpu, base.shape(), DType::F32);
      gpu.interpolate_frames(gpu.upload(src, st), anchors, per_frame, dst, acc);
      EXPECT_LE(gpu_err(gpu, dst, ref), kF32Elementwise) << "interpolate acc=" << acc;
    }
  }
}

TEST(CudaOps, DeltaReconstructionMatchesTheCpuReference) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const int64_t frames = 21, per_frame = 6;
  // A multiple of 4 channels (vectorised kernel) and an odd count (scalar kernel).
  for (int64_t d : {int64_t{40}, int64_t{7}}) {
    for (const std::vector<int32_t>& anchors :
         {std::vector<int32_t>{0, 3, 6, 9, 12, 15, 18, 20}, std::vector<int32_t>{0, 20},
          std::vector<int32_t>{0, 2, 7, 12, 17, 20}}) {
      const int64_t a = static_cast<int64_t>(anchors.size());
      const Tensor x = randn({frames * per_frame, d}, 81), y = randn({a * per_frame, d}, 82);
      Tensor ref = x.clone();
      cpu->reconstruct_frames_delta(y, anchors, per_frame, ref);
      Tensor dst = gpu.upload(x, DType::F32);
      gpu.reconstruct_frames_delta(gpu.upload(y, DType::F32), anchors, per_frame, dst);
      EXPECT_LE(gpu_err(gpu, dst, ref), kF32Elementwise) << "d " << d << ", " << a << " anchors";
    }
  }
}

TEST(CudaOps, PatchifyAndUnpatchify) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const std::array<int, 3> patch = {1, 2, 2};
  const Tensor x = randn({5, 3, 6, 10}, 81);
  const int64_t tokens = 3 * 3 * 5, k = 5 * 4;
  Tensor ref = Tensor::zeros({tokens, k});
  cpu->patchify(x, patch, ref);
  Tensor out = poisoned(gpu, {tokens, k}, DType::F32);
  gpu.patchify(gpu.upload(x, DType::F32), patch, out);
  EXPECT_EQ(gpu_err(gpu, out, ref), 0.0);
  const Tensor h = randn({tokens, 4 * 7}, 82);
  Tensor uref = Tensor::zeros({7, 3, 6, 10});
  cpu->unpatchify(h, patch, 3, 3, 5, uref);
  Tensor uout = poisoned(gpu, {7, 3, 6, 10}, DType::F32);
  gpu.unpatchify(gpu.upload(h, DType::F32), patch, 3, 3, 5, uout);
  EXPECT_EQ(gpu_err(gpu, uout, uref), 0.0);
}

TEST(CudaOps, UploadDownloadAndRandom) {
  FISDIT_REQUIRE_GPU();
  const Tensor x = randn({3, 17}, 91);
  const Tensor xb = gpu.upload(x, DType::BF16);
  EXPECT_EQ(rel_l2(gpu.download(xb), round_bf16(x)), 0.0);
  EXPECT_EQ(gpu.upload(xb, DType::BF16).raw(), xb.raw()) << "device tensors pass through";
  EXPECT_EQ(rel_l2(gpu.download(gpu.upload(xb, DType::F32)), round_bf16(x)), 0.0);
  const Tensor r = gpu.download(gpu.random_normal({1 << 20}, DType::BF16, 1.0f, 0.5f, 7));
  double mean = 0, var = 0;
  for (float v : r.to_vector()) mean += v;
  mean /= r.numel();
  for (float v : r.to_vector()) var += (v - mean) * (v - mean);
  var /= r.numel();
  EXPECT_NEAR(mean, 1.0, 0.01);
  EXPECT_NEAR(std::sqrt(var), 0.5, 0.01);
}

// The LoRA merge op: w += scale * up @ down in fp32 (no TF32), a 3-D w seen as [rows, cols].
TEST(CudaOps, AddLowRankMatchesTheCpuInFp32) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  for (const Shape& ws : {Shape{48, 70}, Shape{6, 5, 14}}) {
    const int64_t rows = ws[0], cols = shape_numel(ws) / rows, rank = 8;
    const Tensor w = randn(ws, 93), up = randn({rows, rank}, 94, 0.5f),
                 down = randn({rank, cols}, 95, 0.5f);
    Tensor ref = w.clone();
    cpu->add_low_rank(ref, up, down, 0.37f);
    Tensor got = gpu.upload(w, DType::F32);
    gpu.add_low_rank(got, gpu.upload(up, DType::F32), gpu.upload(down, DType::F32), 0.37f);
    const double err = gpu_err(gpu, got, ref);
    std::printf("add_low_rank %s rank %lld rel L2 %.3g\n", shape_str(ws).c_str(),
                static_cast<long long>(rank), err);
    EXPECT_LE(err, 1e-6);  // fp32 summation order only; TF32 would be ~1e-3
    EXPECT_GT(rel_l2(ref, w), 0.1) << "the update is not negligible";
  }
  Tensor w = gpu.empty({4, 6}, DType::F32);
  EXPECT_THROW(gpu.add_low_rank(w, gpu.empty({4, 2}, DType::F32), gpu.empty({3, 6}, DType::F32), 1),
               Error);
}

// fp8 codes widened with a scale on the GPU: the same bits as the CPU reference for every code of
// both formats, from host or device codes, an odd element count and an unaligned device view.
TEST(CudaOps, DequantizeMatchesTheCpuBitForBit) {
  FISDIT_REQUIRE_GPU();
  auto cpu = make_cpu_backend();
  const int64_t n = (int64_t{1} << 20) + 7;  // many blocks, and a tail past the 4-code groups
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  std::mt19937 rng(97);
  for (int64_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(i < 256 ? i : rng() & 0xff);
  const auto same = [](const Tensor& got, const Tensor& ref) {
    const std::vector<float> g = got.to_vector(), r = ref.to_vector();
    if (g.size() != r.size()) return std::string("sizes differ");
    for (size_t i = 0; i < g.size(); ++i)
      if (!(g[i] == r[i] || (std::isnan(g[i]) && std::isnan(r[i]))))
        return "element " + std::to_string(i) + ": " + std::to_string(g[i]) + " vs " +
               std::to_string(r[i]);
    return std::string();
  };
  for (const DType format : {DType::F8_E4M3, DType::F8_E5M2}) {
    Tensor c = Tensor::zeros({n, 1}, format);
    std::memcpy(c.raw(), bytes.data(), bytes.size());
    const Tensor on_device = gpu.upload(c, format);
    for (const DType dtype : {DType::F32, DType::BF16})
      for (const float scale : {1.0f, 0.0137f}) {
        const Tensor ref = cpu->dequantize(c, scale, dtype).to_f32();  // bf16 widens exactly
        const std::string what = std::string(dtype_name(format)) + " -> " +
                                 std::string(dtype_name(dtype)) + " scale " + std::to_string(scale);
        const Tensor from_host = gpu.dequantize(c, scale, dtype);
        EXPECT_EQ(from_host.device(), Device::CUDA);
        EXPECT_EQ(from_host.dtype(), dtype);
        EXPECT_EQ(same(gpu.download(from_host), ref), "") << what << " from host codes";
        const Tensor view = gpu.dequantize(on_device.slice_rows(1, n), scale, dtype);
        EXPECT_EQ(same(gpu.download(view), ref.slice_rows(1, n)), "")
            << what << " from an unaligned device view";
      }
  }
  EXPECT_THROW(gpu.dequantize(Tensor::zeros({4}), 1.0f, DType::BF16), Error);
}

// Asking for more memory than the GPU has is an Error naming the size and what is in use (not a
// CUDA abort), and the backend keeps working afterwards.
TEST(CudaOps, OutOfMemoryIsAClearErrorAndTheBackendRecovers) {
  FISDIT_REQUIRE_GPU();
  try {
    gpu.empty({int64_t{1} << 40}, DType::F32);  // 4 TiB
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("out of GPU memory allocating 4096.000 GiB"), std::string::npos) << msg;
    EXPECT_NE(msg.find("GiB in use by fisdit"), std::string::npos) << msg;
  }
  const Tensor x = randn({5, 7}, 96);
  EXPECT_EQ(rel_l2(gpu.download(gpu.upload(x, DType::F32)), x), 0.0);
}

TEST(CudaOps, ErrorsNameTheOpAndShapes) {
  FISDIT_REQUIRE_GPU();
  const Tensor x = gpu.empty({4, 8}, DType::BF16), w = gpu.empty({16, 9}, DType::BF16);
  Tensor y = gpu.empty({4, 16}, DType::BF16);
  try {
    gpu.linear(x, w, nullptr, y);
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("linear"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[16, 9]"), std::string::npos) << msg;
  }
  Tensor host = Tensor::zeros({4, 8});
  EXPECT_THROW(gpu.rms_norm(host, host, 1e-6f, host), Error);
}

}  // namespace
}  // namespace fisdit
