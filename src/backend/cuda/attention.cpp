// Attention through cuDNN's fused flash-attention runtime engine, driven directly through the
// cuDNN 9 backend C API (cudnnBackendCreateDescriptor / SetAttribute / Finalize / Execute; the
// helpers shared with the VAE convolutions are in cudnn_graph.h).
//
// q/k/v/out are bf16 [tokens, heads, head_dim], which is BHSD with b = 1 and strides
// (tokens * heads * d, d, heads * d, 1): no transposes. The operation graph is the flash
// attention forward pattern of the cuDNN graph API documentation:
//
//   S  = matmul(Q, K^T)                 K^T: a strided view of K, dims (1, h, d, Lk)
//   S' = S * scale                      pointwise MUL with a by-value fp32 scalar
//   M  = reduce_max(S') over keys       softmax, written out as reductions and pointwise ops
//   E  = exp(S' - M)
//   Z  = reduce_add(E) over keys
//   P  = E / Z                          bf16 (the second matmul takes the I/O type)
//   O  = matmul(P, V)
//
// Every intermediate is virtual (never stored) and fp32 except P; all compute types are fp32.
// --precision fp8 (attention_cudnn_fp8): Q, K and V are E4M3 with one scale per tensor, and the
// graph is cuDNN's fp8 forward pattern (graph_fp8): the scores descaled, the same softmax, P
// scaled into E4M3 for the second matmul, the result descaled; both amaxes reported.
//
// One execution plan per graph and (Lq, Lk, heads, head_dim), built once and cached; the
// workspace grows on demand on the engine's stream (a superseded one is kept until the engine
// goes: a recorded graph, Backend::capture, may still use it). A shape cuDNN cannot run is
// remembered as declined and the caller takes its fallback.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/cuda/attention.h"
#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/cudnn_graph.h"

#if FISDIT_HAVE_CUDNN
#include <cudnn.h>

namespace fisdit::cuda {

namespace {

// Tensor uids of the variant pack (the virtual tensors get uids too; they must be unique).
constexpr int64_t kQ = 1, kK = 2, kV = 3, kO = 4, kScale = 5;
// The softmax's virtual tensors take the six uids from kSoftmax (GraphBuilder::softmax).
constexpr int64_t kS = 101, kScaled = 102, kSoftmax = 103, kP = 110;

using Dims = std::array<int64_t, 4>;

struct Plan {
  bool ok = false;  // false: cuDNN declined this shape
  float scale = 1.0f;
  int64_t workspace = 0;
  std::vector<Descriptor> keep;  // tensors, ops, the graph and the engine configs the plans use
  Descriptor plan;
  // With FISDIT_ATTENTION_AUTOTUNE=1, more engine configs that finalized, after `plan` (the
  // heuristics' first): all are timed on the first execution (AttentionEngine::tune).
  std::vector<ExecPlan> others;
};

bool attention_autotune() {
  static const bool on = [] {
    const char* v = std::getenv("FISDIT_ATTENTION_AUTOTUNE");
    return v && std::string(v) == "1";
  }();
  return on;
}

// Engine configs kept per graph: the heuristics' first, and with autotuning up to three more
// that finalize (each finalized plan costs time at the graph's first call).
size_t max_engines() { return attention_autotune() ? 4 : 1; }

// Builds one operation graph into a Plan: tensors and operations are kept in plan.keep (indexed,
// not referenced: keep may reallocate), then heuristics pick the engine config.
class GraphBuilder {
 public:
  GraphBuilder(Plan& p, cudnnHandle_t handle) : p_(p), handle_(handle) { p_.keep.reserve(64); }

  size_t tensor(const char* name, int64_t uid, cudnnDataType_t t, Dims dim, Dims stride, bool virt,
                bool by_value = false) {
    return add(tensor_desc(name, uid, t, dim, stride, virt, by_value));
  }
  void matmul(size_t a, size_t b, size_t c, const char* name) {
    Descriptor mm(CUDNN_BACKEND_MATMUL_DESCRIPTOR, name);
    mm.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &kF32, "MATMUL_COMP_TYPE");
    mm.finalize();
    const size_t mm_i = add(std::move(mm));
    Descriptor op(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, name);
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, keep()[a], "ADESC");
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, keep()[b], "BDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, keep()[c], "CDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, keep()[mm_i], "DESC");
    op.finalize();
    ops_.push_back(add(std::move(op)));
  }
  void pointwise(cudnnPointwiseMode_t mode, size_t x, const size_t* b, size_t y, const char* name) {
    Descriptor pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, name);
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "POINTWISE_MODE");
    pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &kF32, "POINTWISE_MATH_PREC");
    pw.finalize();
    const size_t pw_i = add(std::move(pw));
    Descriptor op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, name);
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, keep()[pw_i], "PW_DESCRIPTOR");
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, keep()[x], "XDESC");
    if (b) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, keep()[*b], "BDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, keep()[y], "YDESC");
    op.finalize();
    ops_.push_back(add(std::move(op)));
  }
  void mul(size_t x, size_t b, size_t y, const char* name) {
    pointwise(CUDNN_POINTWISE_MUL, x, &b, y, name);
  }
  void reduction(cudnnReduceTensorOp_t mode, size_t x, size_t y, const char* name) {
    Descriptor rd(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, name);
    rd.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode,
           "REDUCTION_OPERATOR");
    rd.set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &kF32, "REDUCTION_COMP_TYPE");
    rd.finalize();
    const size_t rd_i = add(std::move(rd));
    Descriptor op(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, name);
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, keep()[rd_i], "DESC");
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, keep()[x], "XDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, keep()[y], "YDESC");
    op.finalize();
    ops_.push_back(add(std::move(op)));
  }

  // The softmax over the keys of the fp32 scores [1, h, lq, lk] at `scores` into `probs`, with the
  // (virtual) statistics tail: the fused engines' pattern matcher recognizes the softmax with it.
  // `uid` is the first of 6 unused uids.
  void softmax(size_t scores, size_t probs, int64_t h, int64_t lq, int64_t lk, int64_t uid,
               bool with_stats) {
    const Dims s_dim = {1, h, lq, lk}, s_stride = {h * lq * lk, lq * lk, lk, 1};
    const Dims r_dim = {1, h, lq, 1}, r_stride = {h * lq, lq, 1, 1};
    const size_t M = tensor("tensor rowmax", uid, kF32, r_dim, r_stride, true);
    const size_t C = tensor("tensor S-max", uid + 1, kF32, s_dim, s_stride, true);
    const size_t E = tensor("tensor exp", uid + 2, kF32, s_dim, s_stride, true);
    const size_t Z = tensor("tensor rowsum", uid + 3, kF32, r_dim, r_stride, true);
    reduction(CUDNN_REDUCE_TENSOR_MAX, scores, M, "reduction max");
    pointwise(CUDNN_POINTWISE_SUB, scores, &M, C, "pointwise sub");
    pointwise(CUDNN_POINTWISE_EXP, C, nullptr, E, "pointwise exp");
    reduction(CUDNN_REDUCE_TENSOR_ADD, E, Z, "reduction add");
    if (with_stats) {
      const size_t L = tensor("tensor log(rowsum)", uid + 4, kF32, r_dim, r_stride, true);
      const size_t ST = tensor("tensor stats", uid + 5, kF32, r_dim, r_stride, true);
      pointwise(CUDNN_POINTWISE_LOG, Z, nullptr, L, "pointwise log");
      pointwise(CUDNN_POINTWISE_ADD, M, &L, ST, "pointwise add");
    }
    pointwise(CUDNN_POINTWISE_DIV, E, &Z, probs, "pointwise div");
  }

  // The operation graph of every op added, then an execution plan from heuristics: mode A first,
  // then FALLBACK; the first config that finalizes wins. Throws BuildError saying why none did.
  void finish() {
    std::vector<cudnnBackendDescriptor_t> raw_ops;
    for (size_t i : ops_) raw_ops.push_back(keep()[i].get());
    Descriptor graph = operation_graph(handle_, raw_ops);
    std::string why;
    std::vector<PlanCandidate> found = find_plans(handle_, graph, max_engines(), why);
    if (found.empty()) throw BuildError{why.empty() ? std::string("no engine config") : why};
    p_.plan = std::move(found.front().exec.plan);
    p_.workspace = found.front().exec.workspace;
    for (size_t i = 1; i < found.size(); ++i) p_.others.push_back(std::move(found[i].exec));
    for (PlanCandidate& c : found) keep().push_back(std::move(c.config));
    keep().push_back(std::move(graph));
  }

 private:
  static constexpr cudnnDataType_t kF32 = CUDNN_DATA_FLOAT;
  std::vector<Descriptor>& keep() { return p_.keep; }
  size_t add(Descriptor&& d) {
    p_.keep.push_back(std::move(d));
    return p_.keep.size() - 1;
  }
  Plan& p_;
  cudnnHandle_t handle_;
  std::vector<size_t> ops_;
};

// Dims and strides of q, k^T, v and out: [tokens, heads, d] rows, BHSD with b = 1.
struct Layout {
  Dims q_dim, q_stride, kt_dim, kt_stride, v_dim, v_stride;
};
Layout layout(int64_t lq, int64_t lk, int64_t h, int64_t d) {
  return {{1, h, lq, d}, {lq * h * d, d, h * d, 1}, {1, h, d, lk}, {lk * h * d, d, 1, h * d},
          {1, h, lk, d}, {lk * h * d, d, h * d, 1}};
}

}  // namespace

class AttentionEngine {
 public:
  explicit AttentionEngine(cudaStream_t stream) : stream_(stream) {
    const cudnnStatus_t st = cudnnCreate(&handle_);
    if (st != CUDNN_STATUS_SUCCESS)
      fail("attention", "",
           std::string("cudnnCreate failed: ") + cudnnGetErrorString(st) +
               " (is libcudnn.so.9 and its engines on the library path?)");
    const cudnnStatus_t ss = cudnnSetStream(handle_, stream_);
    if (ss != CUDNN_STATUS_SUCCESS)
      fail("attention", "", std::string("cudnnSetStream failed: ") + cudnnGetErrorString(ss));
  }
  ~AttentionEngine() {
    if (workspace_) cudaFreeAsync(workspace_, stream_);
    for (void* w : retired_) cudaFreeAsync(w, stream_);
    plans_.clear();  // descriptors go before the handle
    cudnnDestroy(handle_);
  }
  AttentionEngine(const AttentionEngine&) = delete;
  AttentionEngine& operator=(const AttentionEngine&) = delete;

  bool run(const void* q, const void* k, const void* v, void* out, int64_t lq, int64_t lk,
           int64_t heads, int64_t d, const std::string& ctx) {
    Plan& p = plan(Kind::Bf16, lq, lk, heads, d);
    if (!p.ok) return false;
    const int64_t uids[5] = {kQ, kK, kV, kO, kScale};
    void* ptrs[5] = {const_cast<void*>(q), const_cast<void*>(k), const_cast<void*>(v), out,
                     &p.scale};  // the by-value scalar is read from host memory
    execute(p, uids, ptrs, 5, ctx + " " + shape_text(lq, lk, heads, d));
    return true;
  }

  bool ready_fp8(bool fp8_out, int64_t lq, int64_t lk, int64_t heads, int64_t d) {
    return plan(fp8_out ? Kind::Fp8Out : Kind::Fp8, lq, lk, heads, d).ok;
  }

  bool run_fp8(const void* q8, const void* k8, const void* v8, void* out, bool fp8_out,
               float* slots, int64_t lq, int64_t lk, int64_t heads, int64_t d,
               const std::string& ctx) {
    Plan& p = plan(fp8_out ? Kind::Fp8Out : Kind::Fp8, lq, lk, heads, d);
    if (!p.ok) return false;
    auto at = [&](int slot) -> void* { return slots + kFp8AttnSlotFloats * slot; };
    const int64_t uids[13] = {kQ,         kK,         kV,         kO,         kScale,
                              kDescaleQ_, kDescaleK_, kDescaleV_, kDescaleS_, kScaleS_,
                              kScaleO_,   kAmaxS_,    kAmaxO_};
    void* ptrs[13] = {const_cast<void*>(q8),
                      const_cast<void*>(k8),
                      const_cast<void*>(v8),
                      out,
                      &p.scale,
                      at(kDescaleQ),
                      at(kDescaleK),
                      at(kDescaleV),
                      at(kDescaleS),
                      at(kScaleS),
                      at(kScaleO),
                      at(kAmaxS),
                      at(kAmaxO)};
    execute(p, uids, ptrs, 13, ctx + " fp8 " + shape_text(lq, lk, heads, d));
    return true;
  }

 private:
  // The graphs: bf16 in and out; E4M3 in with a bf16 output; E4M3 in and out.
  enum class Kind { Bf16, Fp8, Fp8Out };
  // Uids of the fp8 graph's scalars (device tensors [1,1,1,1] F32).
  static constexpr int64_t kDescaleQ_ = 6, kDescaleK_ = 7, kDescaleV_ = 8, kDescaleS_ = 9,
                           kScaleS_ = 10, kScaleO_ = 11, kAmaxS_ = 12, kAmaxO_ = 13;

  static std::string shape_text(int64_t lq, int64_t lk, int64_t heads, int64_t d) {
    return "(Lq=" + std::to_string(lq) + " Lk=" + std::to_string(lk) +
           " heads=" + std::to_string(heads) + " head_dim=" + std::to_string(d) + ")";
  }

  Plan& plan(Kind kind, int64_t lq, int64_t lk, int64_t heads, int64_t d) {
    const auto key = std::make_tuple(static_cast<int>(kind), lq, lk, heads, d);
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, build(kind, lq, lk, heads, d)).first;
    return it->second;
  }

  void execute(Plan& p, const int64_t* uids, void** ptrs, int64_t n, const std::string& where) {
    if (!p.others.empty()) tune(p, uids, ptrs, n, where);
    launch(p.plan, p.workspace, uids, ptrs, n, where);
  }

  // FISDIT_ATTENTION_AUTOTUNE=1 (the only way a plan has others): times every engine config that
  // finalized (one warm-up and one timed run each, on the call's own tensors) and keeps the
  // fastest where it beats the heuristics' first by 3% or more, said on stderr. Off by default:
  // at the A14B shapes no config came within reach of that (H100, 2026-12-06: 0.1% at most), and
  // timing them costs the first call of each shape several runs.
  void tune(Plan& p, const int64_t* uids, void** ptrs, int64_t n, const std::string& where) {
    std::vector<ExecPlan> all;
    all.push_back({std::move(p.plan), p.workspace});
    for (ExecPlan& e : p.others) all.push_back(std::move(e));
    p.others.clear();
    size_t best = 0;
    std::vector<float> ms(all.size(), 0.0f);
    for (size_t i = 0; i < all.size(); ++i) {
      ms[i] = time_launches(
          stream_, 1, 1, [&] { launch(all[i].plan, all[i].workspace, uids, ptrs, n, where); },
          "attention", where);
      if (ms[i] < 0.97f * ms[0] && ms[i] < ms[best]) best = i;
    }
    if (best != 0)
      std::fprintf(stderr,
                   "fisdit: cuDNN attention %s: engine config %zu of %zu runs in %.3f ms against "
                   "%.3f ms for the heuristics' first; it is kept\n",
                   where.c_str(), best + 1, all.size(), static_cast<double>(ms[best]),
                   static_cast<double>(ms[0]));
    p.plan = std::move(all[best].plan);
    p.workspace = all[best].workspace;
  }

  void launch(const Descriptor& plan, int64_t workspace, const int64_t* uids, void** ptrs,
              int64_t n, const std::string& where) {
    if (workspace > workspace_bytes_) {
      refuse_in_capture(stream_, "attention", where, "growing the cuDNN workspace");
      if (workspace_) retired_.push_back(workspace_);
      workspace_ = nullptr;
      workspace_bytes_ = 0;
      check(cudaMallocAsync(&workspace_, static_cast<size_t>(workspace), stream_), "attention",
            where + " (workspace)");
      workspace_bytes_ = workspace;
    }
    void* ws = workspace > 0 ? workspace_ : nullptr;
    const auto count = static_cast<size_t>(n);
    try {
      const cudnnStatus_t st = execute_plan(handle_, plan, {uids, count}, {ptrs, count}, ws);
      if (st != CUDNN_STATUS_SUCCESS)
        fail("attention", where, "cudnnBackendExecute failed: " + status_text(st));
    } catch (const BuildError& e) {
      fail("attention", where, "cuDNN " + e.what);
    }
    check_launch("attention", where, stream_);
  }

  Plan build(Kind kind, int64_t lq, int64_t lk, int64_t heads, int64_t d) {
    Plan p;
    // The graph with the (virtual) softmax statistics tail first, then the bare softmax.
    std::string why;
    for (bool with_stats : {true, false}) {
      try {
        p.scale = 1.0f / std::sqrt(static_cast<float>(d));
        GraphBuilder g(p, handle_);
        if (kind == Kind::Bf16)
          graph_bf16(g, lq, lk, heads, d, with_stats);
        else
          graph_fp8(g, lq, lk, heads, d, with_stats, kind == Kind::Fp8Out);
        g.finish();
        p.ok = true;
        return p;
      } catch (const BuildError& e) {
        why += std::string(why.empty() ? "" : "; ") +
               (with_stats ? "graph with stats: " : "graph without stats: ") + e.what;
        p = Plan();
      }
    }
    static const char* const names[] = {"", " fp8 with a bf16 output", " fp8 with an fp8 output"};
    static const char* const next[] = {
        "using the fallback kernel",
        "its output comes in E4M3 and is widened after (said for the first shape only)",
        "using bf16 attention"};
    // A bf16 output of the fp8 graph is missing from whole cuDNN versions: said once.
    if (kind == Kind::Fp8 && said_bf16_out_) return p;
    if (kind == Kind::Fp8) said_bf16_out_ = true;
    std::fprintf(stderr,
                 "fisdit: cuDNN attention%s declined Lq=%lld Lk=%lld heads=%lld head_dim=%lld "
                 "(%s); %s\n",
                 names[static_cast<int>(kind)], static_cast<long long>(lq),
                 static_cast<long long>(lk), static_cast<long long>(heads),
                 static_cast<long long>(d), why.c_str(), next[static_cast<int>(kind)]);
    return p;
  }

  static void graph_bf16(GraphBuilder& g, int64_t lq, int64_t lk, int64_t h, int64_t d,
                         bool with_stats) {
    const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    const Layout l = layout(lq, lk, h, d);
    const size_t Q = g.tensor("tensor Q", kQ, bf16, l.q_dim, l.q_stride, false);
    const size_t KT = g.tensor("tensor K^T", kK, bf16, l.kt_dim, l.kt_stride, false);
    const size_t V = g.tensor("tensor V", kV, bf16, l.v_dim, l.v_stride, false);
    const size_t O = g.tensor("tensor O", kO, bf16, l.q_dim, l.q_stride, false);
    const size_t SC =
        g.tensor("tensor scale", kScale, f32, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
    const Dims s_dim = {1, h, lq, lk}, s_stride = {h * lq * lk, lq * lk, lk, 1};
    const size_t S = g.tensor("tensor S", kS, f32, s_dim, s_stride, true);
    const size_t S2 = g.tensor("tensor S*scale", kScaled, f32, s_dim, s_stride, true);
    const size_t P = g.tensor("tensor P", kP, bf16, s_dim, s_stride, true);
    g.matmul(Q, KT, S, "matmul Q*K^T");
    g.mul(S, SC, S2, "pointwise scale");
    g.softmax(S2, P, h, lq, lk, kSoftmax, with_stats);
    g.matmul(P, V, O, "matmul P*V");
  }

  // The fp8 forward pattern of cuDNN's graph API: the scores descaled by q's and k's scales, the
  // softmax in fp32, its amax reported, P * scale_s rounded to E4M3 for the second matmul, whose
  // fp32 result is descaled by P's and v's scales, its amax reported, and scaled by scale_o
  // into the output.
  static void graph_fp8(GraphBuilder& g, int64_t lq, int64_t lk, int64_t h, int64_t d,
                        bool with_stats, bool fp8_out) {
    const cudnnDataType_t e4m3 = CUDNN_DATA_FP8_E4M3, f32 = CUDNN_DATA_FLOAT;
    const Layout l = layout(lq, lk, h, d);
    const size_t Q = g.tensor("tensor Q", kQ, e4m3, l.q_dim, l.q_stride, false);
    const size_t KT = g.tensor("tensor K^T", kK, e4m3, l.kt_dim, l.kt_stride, false);
    const size_t V = g.tensor("tensor V", kV, e4m3, l.v_dim, l.v_stride, false);
    const size_t O =
        g.tensor("tensor O", kO, fp8_out ? e4m3 : CUDNN_DATA_BFLOAT16, l.q_dim, l.q_stride, false);
    const Dims one = {1, 1, 1, 1};
    const size_t SC = g.tensor("tensor scale", kScale, f32, one, one, false, true);
    auto scalar = [&](const char* name, int64_t uid) {
      return g.tensor(name, uid, f32, one, one, false);
    };
    const size_t DQ = scalar("tensor descale_q", kDescaleQ_);
    const size_t DK = scalar("tensor descale_k", kDescaleK_);
    const size_t DV = scalar("tensor descale_v", kDescaleV_);
    const size_t DS = scalar("tensor descale_s", kDescaleS_);
    const size_t SS = scalar("tensor scale_s", kScaleS_);
    const size_t SO = scalar("tensor scale_o", kScaleO_);
    const size_t AS = scalar("tensor amax_s", kAmaxS_);
    const size_t AO = scalar("tensor amax_o", kAmaxO_);
    const Dims s_dim = {1, h, lq, lk}, s_stride = {h * lq * lk, lq * lk, lk, 1};
    auto virt = [&](const char* name, int64_t uid, cudnnDataType_t t, const Dims& dim,
                    const Dims& stride) { return g.tensor(name, uid, t, dim, stride, true); };
    const size_t S = virt("tensor S", kS, f32, s_dim, s_stride);
    const size_t S1 = virt("tensor S*scale", kScaled, f32, s_dim, s_stride);
    const size_t S2 = virt("tensor S*descale_q", 120, f32, s_dim, s_stride);
    const size_t S3 = virt("tensor S*descale_k", 121, f32, s_dim, s_stride);
    const size_t P = virt("tensor P", kP, f32, s_dim, s_stride);
    const size_t P8 = virt("tensor P*scale_s", 122, e4m3, s_dim, s_stride);
    const size_t O1 = virt("tensor P*V", 123, f32, l.q_dim, l.q_stride);
    const size_t O2 = virt("tensor P*V*descale_s", 124, f32, l.q_dim, l.q_stride);
    const size_t O3 = virt("tensor P*V*descale_v", 125, f32, l.q_dim, l.q_stride);
    g.matmul(Q, KT, S, "matmul Q*K^T");
    g.mul(S, SC, S1, "pointwise attn scale");
    g.mul(S1, DQ, S2, "pointwise descale q");
    g.mul(S2, DK, S3, "pointwise descale k");
    g.softmax(S3, P, h, lq, lk, kSoftmax, with_stats);
    g.reduction(CUDNN_REDUCE_TENSOR_AMAX, P, AS, "reduction amax s");
    g.mul(P, SS, P8, "pointwise scale s");
    g.matmul(P8, V, O1, "matmul P*V");
    g.mul(O1, DS, O2, "pointwise descale s");
    g.mul(O2, DV, O3, "pointwise descale v");
    g.mul(O3, SO, O, "pointwise scale o");
    g.reduction(CUDNN_REDUCE_TENSOR_AMAX, O3, AO, "reduction amax o");
  }

  cudaStream_t stream_;
  cudnnHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  int64_t workspace_bytes_ = 0;
  std::vector<void*> retired_;  // workspaces outgrown
  std::map<std::tuple<int, int64_t, int64_t, int64_t, int64_t>, Plan> plans_;
  bool said_bf16_out_ = false;
};

AttentionEngine* make_attention_engine(cudaStream_t stream) { return new AttentionEngine(stream); }
void destroy(AttentionEngine* e) { delete e; }

bool attention_cudnn(AttentionEngine& e, const void* q, const void* k, const void* v, void* out,
                     int64_t lq, int64_t lk, int64_t heads, int64_t head_dim,
                     const std::string& ctx) {
  return e.run(q, k, v, out, lq, lk, heads, head_dim, ctx);
}

bool attention_cudnn_fp8_ready(AttentionEngine& e, bool fp8_out, int64_t lq, int64_t lk,
                               int64_t heads, int64_t head_dim) {
  return e.ready_fp8(fp8_out, lq, lk, heads, head_dim);
}

bool attention_cudnn_fp8(AttentionEngine& e, const void* q8, const void* k8, const void* v8,
                         void* out, bool fp8_out, float* slots, int64_t lq, int64_t lk,
                         int64_t heads, int64_t head_dim, const std::string& ctx) {
  return e.run_fp8(q8, k8, v8, out, fp8_out, slots, lq, lk, heads, head_dim, ctx);
}

}  // namespace fisdit::cuda

#else  // built without cuDNN: every shape goes to the fallback kernel

namespace fisdit::cuda {
class AttentionEngine {};
AttentionEngine* make_attention_engine(cudaStream_t) { return new AttentionEngine; }
void destroy(AttentionEngine* e) { delete e; }
bool attention_cudnn(AttentionEngine&, const void*, const void*, const void*, void*, int64_t,
                     int64_t, int64_t, int64_t, const std::string&) {
  return false;
}
bool attention_cudnn_fp8_ready(AttentionEngine&, bool, int64_t, int64_t, int64_t, int64_t) {
  return false;
}
bool attention_cudnn_fp8(AttentionEngine&, const void*, const void*, const void*, void*, bool,
                         float*, int64_t, int64_t, int64_t, int64_t, const std::string&) {
  return false;
}
}  // namespace fisdit::cuda

#endif
