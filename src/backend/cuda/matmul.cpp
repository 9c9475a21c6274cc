// The CUDA backend's matrix-multiply ops: linear (bf16) and linear_fp8 (E4M3 with per-row
// scales, quantize_rows making its operands) through cuBLASLt (gemm.cpp) with fused
// bias / GELU epilogues, or a GEMV for the few fp32 rows of the timestep embedding; attention
// through cuDNN's fused flash attention (attention.cpp), falling back to the reference kernel
// (attention.cu) for a shape cuDNN declines; fp8 attention through the own Hopper kernel
// (attention_fp8.cu) or cuDNN's fp8 graph. All count their FLOPs (Backend::flops).
#include <array>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/profile.h"
#include "backend/measured_choice.h"
#include "fisdit/error.h"

namespace fisdit::cuda {

namespace {
// A fallback's notice on stderr, the first time its flag is false (once per process).
void say_once(bool& said, const std::string& message) {
  if (!said) std::fputs(message.c_str(), stderr);
  said = true;
}
}  // namespace

void CudaBackend::do_linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                            Activation act) {
  const char* op = "linear";
  require_device(x, op, "input");
  require_device(w, op, "weight");
  require_device(y, op, "output");
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  const std::string ctx = "x " + desc(x) + ", w " + desc(w) + ", y " + desc(y);
  require(w.dtype() == DType::BF16, op, ctx + ": weights must be BF16 on the CUDA backend");
  if (bias) require_device(*bias, op, "bias");
  const EType xt = etype(x.dtype(), op, "input"), yt = etype(y.dtype(), op, "output");
  const EType bt = bias ? etype(bias->dtype(), op, "bias") : EType::F32;
  flops_.linear += 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (m == 0 || n == 0) return;
  OpScope scope(stream(), op,
                profiling() ? "N=" + std::to_string(n) + " K=" + std::to_string(k) +
                                  (xt == EType::F32 && m <= 8 ? " gemv" : "") +
                                  (act == Activation::GeluTanh ? " gelu" : "")
                            : std::string());
  if (xt == EType::F32 && m <= 8) {  // timestep embeddings: fp32 activations, exact-ish GEMV
    launch_gemv_rows(x.data_as<float>(), w.raw(), bias ? bias->raw() : nullptr, bt, y.raw(), yt, m,
                     n, k, act, stream());
    return;
  }
  Tensor xb = x;
  if (xt == EType::F32) {  // bf16 operands, as the official code under autocast
    xb = alloc_device(ctx_, x.shape(), DType::BF16, op);
    launch_convert(x.raw(), EType::F32, xb.raw(), EType::BF16, x.numel(), stream());
  }
  const bool fuse = yt == EType::BF16 && bt == EType::BF16 &&
                    (act == Activation::None || act == Activation::GeluTanh);
  if (fuse) {
    gemm_bf16(*gemm_, xb.raw(), w.raw(), y.raw(), false, m, n, k, bias ? bias->raw() : nullptr,
              act == Activation::GeluTanh, ctx);
  } else {
    gemm_bf16(*gemm_, xb.raw(), w.raw(), y.raw(), yt == EType::F32, m, n, k, nullptr, false, ctx);
    launch_bias_act(y.raw(), yt, bias ? bias->raw() : nullptr, bt, m, n, act, stream());
  }
}

Fp8Rows CudaBackend::do_quantize_rows(const Tensor& x) {
  const char* op = "quantize_rows";
  require_device(x, op, "input");
  const EType xt = etype(x.dtype(), op, "input");
  const int64_t rows = x.dim(0), cols = x.dim(1);
  Fp8Rows q{alloc_device(ctx_, {rows, cols}, DType::F8_E4M3, op),
            alloc_device(ctx_, {rows}, DType::F32, op)};
  OpScope scope(stream(), op, profiling() ? "K=" + std::to_string(cols) : std::string());
  launch_quantize_rows_e4m3(x.raw(), xt, q.codes.data_as<uint8_t>(), q.scales.data_as<float>(),
                            rows, cols, stream());
  return q;
}

// E4M3 GEMMs with per-row scales (cuBLASLt's outer-vector scaling) and the bias / GELU epilogue
// fused where cuBLASLt has it for fp8, else run after the GEMM.
void CudaBackend::do_linear_fp8(const Fp8Rows& x, const Fp8Rows& w, const Tensor* bias, Tensor& y,
                                Activation act) {
  const char* op = "linear_fp8";
  require_device(x.codes, op, "input codes");
  require_device(x.scales, op, "input scales");
  require_device(w.codes, op, "weight codes");
  require_device(w.scales, op, "weight scales");
  require_device(y, op, "output");
  if (bias) require_device(*bias, op, "bias");
  const int64_t m = x.codes.dim(0), k = x.codes.dim(1), n = w.codes.dim(0);
  const std::string ctx = "x " + desc(x.codes) + ", w " + desc(w.codes) + ", y " + desc(y);
  const EType yt = etype(y.dtype(), op, "output");
  const EType bt = bias ? etype(bias->dtype(), op, "bias") : EType::BF16;
  flops_.linear += 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  if (m == 0 || n == 0) return;
  OpScope scope(stream(), op,
                profiling() ? "fp8 N=" + std::to_string(n) + " K=" + std::to_string(k) +
                                  (act == Activation::GeluTanh ? " gelu" : "")
                            : std::string());
  const float* xs = x.scales.data_as<float>();
  const float* ws = w.scales.data_as<float>();
  const bool fuse = yt == EType::BF16 && bt == EType::BF16 &&
                    (act == Activation::None || act == Activation::GeluTanh);
  const void* b = bias ? bias->raw() : nullptr;
  switch (gemm_fp8(*gemm_, x.codes.raw(), xs, w.codes.raw(), ws, y.raw(), yt == EType::F32, m, n, k,
                   fuse ? b : nullptr, fuse && act == Activation::GeluTanh, ctx)) {
    case Fp8Gemm::Done:
      if (fuse) return;  // the epilogue ran in the GEMM
      [[fallthrough]];
    case Fp8Gemm::NeedsEpilogue:
      launch_bias_act(y.raw(), yt, b, bt, m, n, act, stream());
      return;
    case Fp8Gemm::NeedsScales: {
      static bool said = false;  // once per process: it costs a pass over each output
      say_once(said,
               "fisdit: cuBLASLt has no per-row scaled fp8 GEMM on this GPU; the scales are "
               "applied in a pass after each fp8 GEMM\n");
      launch_scale_bias_act(y.raw(), yt, xs, ws, b, bt, m, n, act, stream());
      return;
    }
  }
}

namespace {
// q, k, v and out on the GPU in BF16 (the CUDA backend's attention types); their description.
std::string attention_args(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& out) {
  require_device(q, op, "q");
  require_device(k, op, "k");
  require_device(v, op, "v");
  require_device(out, op, "out");
  const std::string ctx = "q " + desc(q) + ", k " + desc(k) + ", v " + desc(v);
  require(q.dtype() == DType::BF16 && k.dtype() == DType::BF16 && v.dtype() == DType::BF16 &&
              out.dtype() == DType::BF16,
          op, ctx + ": the CUDA backend takes BF16 q, k, v and output");
  return ctx;
}
}  // namespace

void CudaBackend::do_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const std::string ctx = attention_args("attention", q, k, v, out);
  flops_.attention += 4.0 * static_cast<double>(q.dim(0)) * static_cast<double>(k.dim(0)) *
                      static_cast<double>(q.dim(1)) * static_cast<double>(q.dim(2));
  attention_bf16(q, k, v, out, ctx);
}

// cuDNN's bf16 flash attention, or the reference kernel for a shape cuDNN declines; counts no
// FLOPs (its callers do).
void CudaBackend::attention_bf16(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                 const std::string& ctx) {
  const char* op = "attention";
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  if (lq == 0) return;
  OpScope scope(stream(), op,
                profiling()
                    ? (lq == lk ? "self" : "Lk=" + std::to_string(lk)) + " d=" + std::to_string(d)
                    : std::string());
  if (!attention_cudnn(*attn_, q.raw(), k.raw(), v.raw(), out.raw(), lq, lk, heads, d, ctx))
    launch_attention_naive(q.raw(), k.raw(), v.raw(), out.raw(), lq, lk, heads, d, stream());
}

// A text encoder's attention: a few hundred to a thousand tokens, once per prompt, so the fp32
// reference kernel (attention.cu) rather than a cuDNN graph per prompt length.
void CudaBackend::do_causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                      Tensor& out) {
  const char* op = "causal_attention";
  attention_args(op, q, k, v, out);
  const int64_t len = q.dim(0), heads = q.dim(1), d = q.dim(2);
  flops_.attention += 4.0 * static_cast<double>(len) * static_cast<double>(len + 1) / 2.0 *
                      static_cast<double>(heads) * static_cast<double>(d);
  if (len == 0) return;
  OpScope scope(stream(), op);
  launch_causal_attention(q.raw(), k.raw(), v.raw(), out.raw(), len, heads, k.dim(1), d, stream());
}

// FISDIT_FP8_ATTENTION picks the fp8 attention: "own-poly" / "own-mufu": the own wgmma kernel,
// block-synchronous, with half of the softmax's exponentials by a polynomial / all on the
// special-function unit; "own-ws" / "own-ws-mufu": its warp-specialized variant so; "own-ws224":
// the warp-specialized one with tiles of 224 keys (all exponentials there; one of kMeasured);
// "own": the fastest own variant measured (kOwn); "cudnn": cuDNN's fp8 graph; "bf16": the bf16
// attention of the unrounded inputs; "auto" (unset): the fastest of kMeasured for each call shape,
// measured on its first call (fp8_attention_measured). The own kernel runs where it can (head_dim
// 128, compute capability 9.0, sm_90a build), cuDNN's elsewhere. Read at each call, so a benchmark
// can time them all in one process.
CudaBackend::Fp8AttentionKernel CudaBackend::fp8_attention_kernel() {
  constexpr Fp8AttentionKernel kOwn = Fp8AttentionKernel::OwnPoly;
  const char* env = std::getenv("FISDIT_FP8_ATTENTION");
  const std::string name = env ? env : "";
  if (name.empty() || name == "auto") return Fp8AttentionKernel::Measured;
  if (name == "own") return kOwn;
  if (name == "own-poly") return Fp8AttentionKernel::OwnPoly;
  if (name == "own-mufu") return Fp8AttentionKernel::OwnMufu;
  if (name == "own-ws") return Fp8AttentionKernel::OwnWs;
  if (name == "own-ws-mufu") return Fp8AttentionKernel::OwnWsMufu;
  if (name == "own-ws224") return Fp8AttentionKernel::OwnWs224;
  if (name == "cudnn") return Fp8AttentionKernel::Cudnn;
  if (name == "bf16") return Fp8AttentionKernel::Bf16;
  throw Error("FISDIT_FP8_ATTENTION=" + name +
              ": expected auto, own, own-poly, own-mufu, own-ws, own-ws-mufu, own-ws224, cudnn or "
              "bf16");
}

// The scalars both fp8 attentions start from: k's and v's means over the keys (one per channel;
// softmax(q (k - mean)^T) is softmax(q k^T), and P (v - mean) + mean is P v, but the centered
// values use E4M3's range for what differs between tokens), the amaxes of q, k - mean and v - mean,
// and the scales made from them (attention.h's slots), all on the stream.
CudaBackend::Fp8AttentionScalars CudaBackend::fp8_attention_scalars(const Tensor& q,
                                                                    const Tensor& k,
                                                                    const Tensor& v, bool fp8_out,
                                                                    const std::string& ctx) {
  const char* op = "attention_fp8";
  const int64_t lk = k.dim(0), cols = q.dim(1) * q.dim(2);
  Fp8AttentionScalars f;
  f.slots_tensor = alloc_device(ctx_, {kFp8AttnSlots * kFp8AttnSlotFloats}, DType::F32, op);
  f.slots = f.slots_tensor.data_as<float>();
  check(cudaMemsetAsync(f.slots, 0, f.slots_tensor.nbytes(), stream()), op, ctx);
  f.means = alloc_device(ctx_, {2, cols}, DType::F32, op);
  Tensor scratch = alloc_device(ctx_, {column_mean_scratch_floats(lk, cols)}, DType::F32, op);
  f.kmean = f.means.data_as<float>();
  f.vmean = f.kmean + cols;
  launch_column_mean(k.raw(), EType::BF16, lk, cols, f.kmean, scratch.data_as<float>(), stream());
  launch_column_mean(v.raw(), EType::BF16, lk, cols, f.vmean, scratch.data_as<float>(), stream());
  const Tensor* in[3] = {&q, &k, &v};
  const float* mean[3] = {nullptr, f.kmean, f.vmean};
  const int amax_slot[3] = {kAmaxQ, kAmaxK, kAmaxV};
  for (int i = 0; i < 3; ++i)
    launch_amax_tensor(in[i]->raw(), EType::BF16, in[i]->numel(), mean[i], cols, f.slots,
                       amax_slot[i], stream());
  launch_attention_fp8_scalars(f.slots, fp8_out, stream());
  return f;
}

// The own kernel's path: q and k rounded as for cuDNN; v less its means rounded into the
// transposed, key-ordered layout the kernel reads (launch_quantize_vt_e4m3); the kernel adds v's
// means back as it writes the bf16 output.
void CudaBackend::attention_fp8_own(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                    Fp8AttentionKernel kernel, const std::string& ctx) {
  const char* op = "attention_fp8";
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  OpScope scope(stream(), op,
                profiling() ? (lq == lk ? "fp8 own self" : "fp8 own Lk=" + std::to_string(lk)) +
                                  " d=" + std::to_string(d)
                            : std::string());
  const Fp8AttentionScalars f = fp8_attention_scalars(q, k, v, false, ctx);
  float* sl = f.slots;
  const float *kmean = f.kmean, *vmean = f.vmean;
  const int64_t cols = heads * d;
  Tensor q8 = alloc_device(ctx_, q.shape(), DType::F8_E4M3, op);
  Tensor k8 = alloc_device(ctx_, k.shape(), DType::F8_E4M3, op);
  Tensor vt = alloc_device(ctx_, {heads, d, attention_fp8_own_vt_keys(lk)}, DType::F8_E4M3, op);
  launch_quantize_tensor_e4m3(q.raw(), EType::BF16, q8.data_as<uint8_t>(), q.numel(), nullptr, cols,
                              sl, kDescaleQ, stream());
  launch_quantize_tensor_e4m3(k.raw(), EType::BF16, k8.data_as<uint8_t>(), k.numel(), kmean, cols,
                              sl, kDescaleK, stream());
  launch_quantize_vt_e4m3(v.raw(), vmean, sl + kFp8AttnSlotFloats * kDescaleV,
                          vt.data_as<uint8_t>(), lk, heads, stream());
  const bool wide = kernel == Fp8AttentionKernel::OwnWs224;
  const bool poly =
      kernel != Fp8AttentionKernel::OwnMufu && kernel != Fp8AttentionKernel::OwnWsMufu && !wide;
  const bool ws =
      kernel == Fp8AttentionKernel::OwnWs || kernel == Fp8AttentionKernel::OwnWsMufu || wide;
  const auto launch = [&](bool warp_specialized) {
    return launch_attention_fp8_own(q8.data_as<uint8_t>(), k8.data_as<uint8_t>(),
                                    vt.data_as<uint8_t>(), out.raw(), vmean, sl, lq, lk, heads,
                                    poly, warp_specialized, warp_specialized && wide, stream());
  };
  if (ws && launch(true)) return;
  if (ws) {
    static bool said = false;
    say_once(said, "fisdit: the driver describes no tensor-memory-accelerator copies for " + ctx +
                       "; the own fp8 attention runs block-synchronous\n");
  }
  launch(false);
}

// cuDNN's path: q, k and v rounded to E4M3 with one scale each on the GPU (k and v less their
// channel means over the keys; amax, then the scales, then the codes), then cuDNN's fp8 flash
// attention. Where cuDNN has no bf16 output for it the output comes in E4M3 and is widened here.
bool CudaBackend::attention_fp8_with(Fp8AttentionKernel kernel, const Tensor& q, const Tensor& k,
                                     const Tensor& v, Tensor& out, const std::string& ctx) {
  const char* op = "attention_fp8";
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  if (kernel == Fp8AttentionKernel::Bf16) {
    attention_bf16(q, k, v, out, ctx);
    return true;
  }
  if (kernel != Fp8AttentionKernel::Cudnn) {
    if (!attention_fp8_own_supported(d)) return false;
    attention_fp8_own(q, k, v, out, kernel, ctx);
    return true;
  }
  for (const bool fp8_out : {false, true}) {
    if (!attention_cudnn_fp8_ready(*attn_, fp8_out, lq, lk, heads, d)) continue;
    OpScope scope(stream(), op,
                  profiling() ? (lq == lk ? "fp8 self" : "fp8 Lk=" + std::to_string(lk)) +
                                    " d=" + std::to_string(d)
                              : std::string());
    const Fp8AttentionScalars f = fp8_attention_scalars(q, k, v, fp8_out, ctx);
    float* sl = f.slots;
    const float* vmean = f.vmean;
    const int64_t cols = heads * d;
    const Tensor* in[3] = {&q, &k, &v};
    const float* mean[3] = {nullptr, f.kmean, f.vmean};
    const int scale_slot[3] = {kDescaleQ, kDescaleK, kDescaleV};
    Tensor codes[3];
    for (int i = 0; i < 3; ++i) {
      codes[i] = alloc_device(ctx_, in[i]->shape(), DType::F8_E4M3, op);
      launch_quantize_tensor_e4m3(in[i]->raw(), EType::BF16, codes[i].data_as<uint8_t>(),
                                  in[i]->numel(), mean[i], cols, sl, scale_slot[i], stream());
    }
    Tensor o8 = fp8_out ? alloc_device(ctx_, out.shape(), DType::F8_E4M3, op) : Tensor();
    attention_cudnn_fp8(*attn_, codes[0].raw(), codes[1].raw(), codes[2].raw(),
                        fp8_out ? o8.raw() : out.raw(), fp8_out, sl, lq, lk, heads, d, ctx);
    if (fp8_out)
      launch_dequantize_e4m3_slot(o8.data_as<uint8_t>(), sl, kDescaleO, vmean, cols, out.raw(),
                                  EType::BF16, out.numel(), stream());
    else
      launch_add_column(out.raw(), EType::BF16, out.numel(), vmean, cols, stream());
    return true;
  }
  return false;
}

// The ways FISDIT_FP8_ATTENTION=auto chooses among, by their time on each call shape (the first
// call of a shape runs each twice, then the fastest; the choice is kept in the tuning cache of
// this GPU and library versions). bf16 is one of them: below a few thousand tokens the fp8
// preparation (means, amaxes, scales, rounding: about ten small launches) costs more than the fp8
// products save (on an H100, 1,280 tokens x 24 heads took 0.16-0.17 ms in fp8 against 0.05 in
// bf16; 32,760 x 40 took 29.0 against 37.7). The own kernel with 224-key tiles is the third
// (H100, 2026-12-08: 135.4 ms at 75,600 x 40 against cuDNN's 142.2, 26.8 against 28.4 at
// 32,760); where it cannot run (head_dim other than 128, no sm_90a) it is never chosen. The own
// kernel's other variants were slower than cuDNN's at every shape measured: they can be named.
CudaBackend::Fp8AttentionKernel CudaBackend::fp8_attention_measured(const Tensor& q,
                                                                    const Tensor& k,
                                                                    const Tensor& v, Tensor& out,
                                                                    const std::string& ctx) {
  static constexpr std::array<std::pair<Fp8AttentionKernel, const char*>, 3> kMeasured = {{
      {Fp8AttentionKernel::Bf16, "bf16"},
      {Fp8AttentionKernel::Cudnn, "cudnn"},
      {Fp8AttentionKernel::OwnWs224, "own-ws224"},
  }};
  if (!attention_tuning_)
    attention_tuning_ =
        std::make_unique<TuningCache>(TuningCache::default_dir(), "fp8-attention", device_key());
  // The candidates are part of the key: a choice made among fewer is measured again.
  char key[160];
  std::snprintf(key, sizeof key, "lq=%lld lk=%lld heads=%lld d=%lld among=bf16,cudnn,own-ws224",
                static_cast<long long>(q.dim(0)), static_cast<long long>(k.dim(0)),
                static_cast<long long>(q.dim(1)), static_cast<long long>(q.dim(2)));
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& [kernel, name] : kMeasured) v.emplace_back(name);
    return v;
  }();
  std::optional<EventTimer> timer;  // made only when the shape is measured
  const size_t chosen = choose_fastest(*attention_tuning_, key, names, [&](size_t i) {
    if (!timer) timer.emplace(*this);
    timer->start();
    if (!attention_fp8_with(kMeasured[i].first, q, k, v, out, ctx)) return -1.0;
    return timer->stop_ms();
  });
  return kMeasured[chosen].first;
}

// The fp8 attention FISDIT_FP8_ATTENTION names, or the fastest measured for the call's shape.
// A named own kernel that cannot run here runs cuDNN's, and where cuDNN has no fp8 attention
// for the call the bf16 attention runs on the unrounded inputs; either is said once.
void CudaBackend::do_attention_fp8(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const char* op = "attention_fp8";
  const std::string ctx = attention_args(op, q, k, v, out);
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  if (lq == 0) return;
  const double flops = 4.0 * static_cast<double>(lq) * static_cast<double>(lk) *
                       static_cast<double>(heads) * static_cast<double>(d);
  Fp8AttentionKernel kernel = fp8_attention_kernel();
  if (kernel == Fp8AttentionKernel::Measured) kernel = fp8_attention_measured(q, k, v, out, ctx);
  flops_.attention += flops;
  if (attention_fp8_with(kernel, q, k, v, out, ctx)) return;
  if (kernel != Fp8AttentionKernel::Cudnn) {
    static bool said_own = false;
    say_once(said_own,
             "fisdit: FISDIT_FP8_ATTENTION: the own fp8 attention needs head_dim 128 on a compute "
             "capability 9.0 GPU (sm_90a build); " +
                 ctx + " runs on cuDNN\n");
    if (attention_fp8_with(Fp8AttentionKernel::Cudnn, q, k, v, out, ctx)) return;
  }
  static bool said = false;
  say_once(said, "fisdit: cuDNN has no fp8 attention for " + ctx +
                     " on this GPU; attention runs in bf16\n");
  attention_fp8_with(Fp8AttentionKernel::Bf16, q, k, v, out, ctx);
}

}  // namespace fisdit::cuda
