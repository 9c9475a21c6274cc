// bf16 and E4M3 GEMMs through cuBLASLt with fused bias / bias+GELU(tanh) epilogues. Row-major
// y[M,N] = x[M,K] w[N,K]^T is the column-major D[N,M] = W^T[N,K] X[K,M]: A = w (transposed),
// B = x, so the bias runs along D's rows (the output features), as cuBLASLt's epilogue wants.
// Descriptors and the algorithm are cached per shape; the algorithm chosen by timing is also kept
// in the tuning cache of this GPU and library versions, so a later process runs the same one
// without timing again (and so makes the same bits).
#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/gemm.h"
#include "backend/measured_choice.h"
#include "fisdit/error.h"

namespace fisdit::cuda {

namespace {
std::string status_name(cublasStatus_t st) {
  switch (st) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "cublasStatus " + std::to_string(static_cast<int>(st));
  }
}

void check_lt(cublasStatus_t st, const char* what, const std::string& ctx) {
  if (st == CUBLAS_STATUS_SUCCESS) return;
  fail("linear", ctx, std::string("cuBLASLt ") + what + " failed: " + status_name(st));
}

constexpr size_t kWorkspaceBytes = 64ull << 20;

struct Plan {
  bool declined = false;  // no algorithm for fp8 with per-row scales: the caller goes another way
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's list, best guess first
};

Plan declined_plan() {
  Plan p;
  p.declined = true;
  return p;
}

// Frees the descriptors a plan holds (those it got); it holds none afterwards.
void free_plan(Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  p.a = p.b = p.d = nullptr;
  p.op = nullptr;
}

// FISDIT_GEMM_AUTOTUNE=0 keeps the heuristic's first choice; otherwise the first call of each
// shape times the heuristic's top candidates on the real operands and keeps the fastest (or reads
// the choice an earlier process made from the tuning cache).
bool autotune_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("FISDIT_GEMM_AUTOTUNE");
    return !(v && std::string(v) == "0");
  }();
  return on;
}
constexpr int kCandidates = 6;

// A candidate's name in the tuning cache: its configuration (algorithm, tile, stages, split-K,
// reduction, swizzle, custom option, inner and cluster shapes), which the heuristic's rank is not.
std::string algo_name(const cublasLtMatmulAlgo_t& algo) {
  static constexpr std::pair<cublasLtMatmulAlgoConfigAttributes_t, char> kFields[] = {
      {CUBLASLT_ALGO_CONFIG_ID, 'a'},
      {CUBLASLT_ALGO_CONFIG_TILE_ID, 't'},
      {CUBLASLT_ALGO_CONFIG_STAGES_ID, 's'},
      {CUBLASLT_ALGO_CONFIG_SPLITK_NUM, 'k'},
      {CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, 'r'},
      {CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, 'w'},
      {CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, 'c'},
      {CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, 'i'},
      {CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, 'g'}};
  std::string name;
  for (const auto& [attr, tag] : kFields) {
    size_t bytes = 0;  // each attribute's own width, asked first
    uint64_t value = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, nullptr, 0, &bytes) !=
            CUBLAS_STATUS_SUCCESS ||
        bytes == 0 || bytes > sizeof value)
      continue;
    unsigned char raw[sizeof value] = {};
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, raw, bytes, &written) !=
        CUBLAS_STATUS_SUCCESS)
      continue;
    std::memcpy(&value, raw, sizeof value);  // little-endian: the low bytes hold it
    if (!name.empty()) name += '-';
    name += tag;
    name += std::to_string(value);
  }
  return name.empty() ? "unnamed" : name;
}

int alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  for (int a : {256, 128, 64, 32, 16, 8, 4})
    if (v % a == 0) return a;
  return 2;
}
}  // namespace

class GemmEngine {
 public:
  explicit GemmEngine(cudaStream_t stream) : stream_(stream) {
    check_lt(cublasLtCreate(&handle_), "create", "");
    check(cudaMallocAsync(&workspace_, kWorkspaceBytes, stream_), "linear", "cuBLASLt workspace");
  }
  ~GemmEngine() {
    for (auto& [key, p] : plans_) free_plan(p);
    if (workspace_) cudaFreeAsync(workspace_, stream_);
    cublasLtDestroy(handle_);
  }

  // What the operands are: bf16; E4M3 with cuBLASLt applying the per-row scales (outer-vector
  // scaling); E4M3 with the plain sums written out (the caller applies the scales).
  enum Mode { kBf16 = 0, kFp8Scaled = 1, kFp8Unscaled = 2 };
  // key: m, n, k, y_f32, epilogue, alignment of (x, w, y, bias), mode
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, int, int, int, int, int, int>;

  // y = x w^T (+ bias, GELU) in `mode`; x_scales / w_scales are kFp8Scaled's per-row scales.
  // Returns false when cuBLASLt has no algorithm for kFp8Scaled with this epilogue (remembered
  // per shape); throws when it has none for the other modes.
  bool run(Mode mode, const void* x, const float* x_scales, const void* w, const float* w_scales,
           void* y, bool y_f32, int64_t m, int64_t n, int64_t k, const void* bias, bool gelu,
           const std::string& ctx) {
    const cublasLtEpilogue_t epi =
        bias ? (gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
             : (gelu ? CUBLASLT_EPILOGUE_GELU : CUBLASLT_EPILOGUE_DEFAULT);
    const Key key{m,
                  n,
                  k,
                  y_f32,
                  static_cast<int>(epi),
                  alignment_of(x),
                  alignment_of(w),
                  alignment_of(y),
                  bias ? alignment_of(bias) : 256,
                  static_cast<int>(mode)};
    auto it = plans_.find(key);
    const bool fresh = it == plans_.end();
    if (fresh) refuse_in_capture(stream_, "linear", ctx, "choosing a GEMM algorithm (timed)");
    if (fresh) it = plans_.emplace(key, make_plan(key, epi, ctx, x_scales, w_scales)).first;
    Plan& p = it->second;
    if (p.declined) return false;
    if (bias)
      check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                              sizeof bias),
               "bias pointer", ctx);
    if (mode == kFp8Scaled) set_scales(p, x_scales, w_scales, ctx);
    const float alpha = 1.0f, beta = 0.0f;
    if (fresh && p.candidates.size() > 1) autotune(p, key, x, w, y, ctx);
    check_lt(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d, &p.algo,
                            workspace_, kWorkspaceBytes, stream_),
             "matmul", ctx);
    check_launch("linear", ctx, stream_);
    return true;
  }

 private:
  // A is w, B is x (see the top of this file).
  void set_scales(Plan& p, const float* x_scales, const float* w_scales, const std::string& ctx) {
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scales,
                                            sizeof w_scales),
             "A scale pointer", ctx);
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scales,
                                            sizeof x_scales),
             "B scale pointer", ctx);
  }

  Plan make_plan(const Key& key, cublasLtEpilogue_t epi, const std::string& ctx,
                 const float* x_scales, const float* w_scales) {
    const auto [m, n, k, y_f32, e, ax, aw, ay, ab, mode] = key;
    const bool fp8 = mode != kBf16;
    Plan p;
    check_lt(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc", ctx);
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta),
             "transa", ctx);
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb),
             "transb", ctx);
    check_lt(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
             "epilogue", ctx);
    if (epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_GELU_BIAS) {
      const cudaDataType_t bt = CUDA_R_16BF;
      check_lt(
          cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt),
          "bias type", ctx);
    }
    if (mode == kFp8Scaled) {  // the scale pointers are set before the heuristic looks
      const cublasLtMatmulMatrixScale_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      if (cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec,
                                         sizeof vec) != CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec,
                                         sizeof vec) != CUBLAS_STATUS_SUCCESS) {
        free_plan(p);
        return declined_plan();
      }
      set_scales(p, x_scales, w_scales, ctx);
    }
    const cudaDataType_t dt = y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    const cudaDataType_t in = fp8 ? CUDA_R_8F_E4M3 : CUDA_R_16BF;
    check_lt(cublasLtMatrixLayoutCreate(&p.a, in, k, n, k), "layout A", ctx);
    check_lt(cublasLtMatrixLayoutCreate(&p.b, in, k, m, k), "layout B", ctx);
    check_lt(cublasLtMatrixLayoutCreate(&p.d, dt, n, m, n), "layout D", ctx);
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "preference", ctx);
    const size_t ws = kWorkspaceBytes;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                         sizeof ws);
    const uint32_t al_a = static_cast<uint32_t>(aw), al_b = static_cast<uint32_t>(ax),
                   al_d = static_cast<uint32_t>(ay);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                         sizeof al_a);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                         sizeof al_b);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d,
                                         sizeof al_d);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d,
                                         sizeof al_d);
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int found = 0;
    const cublasStatus_t st =
        cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref,
                                       autotune_enabled() ? kCandidates : 1, results, &found);
    const cublasLtMatmulHeuristicResult_t& result = results[0];
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
      if (mode == kFp8Scaled) {  // the caller takes another way
        free_plan(p);
        return declined_plan();
      }
      char what[256];
      std::snprintf(what, sizeof what,
                    "cuBLASLt has no algorithm for M=%lld N=%lld K=%lld (%s in, %s out, epilogue "
                    "%d): %s%s",
                    static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                    fp8 ? "E4M3" : "BF16", y_f32 ? "F32" : "BF16", e, status_name(st).c_str(),
                    fp8 ? "; --precision fp8 needs a GPU with FP8 tensor cores (compute "
                          "capability 8.9 or later)"
                        : "");
      fail("linear", ctx, what);
    }
    p.algo = result.algo;
    for (int i = 0; i < found; ++i)
      if (results[i].state == CUBLAS_STATUS_SUCCESS) p.candidates.push_back(results[i].algo);
    return p;
  }

  // Keeps the fastest candidate in p.algo: the one the tuning cache names for this shape, else
  // each timed on the call's operands (one warm run, then the best of two) and the choice kept.
  void autotune(Plan& p, const Key& key, const void* x, const void* w, void* y,
                const std::string& ctx) {
    if (!tuning_)
      tuning_ = std::make_unique<TuningCache>(
          TuningCache::default_dir(), "cublaslt-gemm",
          device_key() + " cublasLt " + std::to_string(cublasLtGetVersion()));
    const auto [m, n, k, y_f32, epi, ax, aw, ay, ab, mode] = key;
    char shape[192];
    std::snprintf(shape, sizeof shape,
                  "m=%lld n=%lld k=%lld out=%s epilogue=%d align=%d,%d,%d,%d mode=%d",
                  static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                  y_f32 ? "f32" : "bf16", epi, ax, aw, ay, ab, mode);
    std::vector<std::string> names;
    for (const cublasLtMatmulAlgo_t& algo : p.candidates) names.push_back(algo_name(algo));
    const float alpha = 1.0f, beta = 0.0f;
    bool cuda_failed = false;  // a CUDA error while timing, not a candidate that cannot run
    try {
      const size_t best = choose_fastest(
          *tuning_, shape, names,
          [&](size_t i) -> double {
            cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
            cuda_failed = true;
            const float ms = time_launches(
                stream_, 0, 1,
                [&] {
                  st = cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d,
                                      &p.candidates[i], workspace_, kWorkspaceBytes, stream_);
                },
                "linear", ctx);
            cuda_failed = false;
            return st == CUBLAS_STATUS_SUCCESS ? ms : -1.0;
          },
          /*runs=*/3);
      p.algo = p.candidates[best];
    } catch (const Error&) {
      if (cuda_failed) throw;
      // None ran: the heuristic's first stays, and the call below says why it cannot run.
    }
    cudaGetLastError();
  }

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::map<Key, Plan> plans_;
  std::unique_ptr<TuningCache> tuning_;  // made on the first timed choice
};

GemmEngine* make_gemm_engine(cudaStream_t stream) { return new GemmEngine(stream); }
void destroy(GemmEngine* e) { delete e; }

void gemm_bf16(GemmEngine& e, const void* x, const void* w, void* y, bool y_f32, int64_t m,
               int64_t n, int64_t k, const void* bias, bool gelu, const std::string& ctx) {
  e.run(GemmEngine::kBf16, x, nullptr, w, nullptr, y, y_f32, m, n, k, bias, gelu, ctx);
}

Fp8Gemm gemm_fp8(GemmEngine& e, const void* x, const float* x_scales, const void* w,
                 const float* w_scales, void* y, bool y_f32, int64_t m, int64_t n, int64_t k,
                 const void* bias, bool gelu, const std::string& ctx) {
  if (e.run(GemmEngine::kFp8Scaled, x, x_scales, w, w_scales, y, y_f32, m, n, k, bias, gelu, ctx))
    return Fp8Gemm::Done;
  if ((bias || gelu) && e.run(GemmEngine::kFp8Scaled, x, x_scales, w, w_scales, y, y_f32, m, n, k,
                              nullptr, false, ctx))
    return Fp8Gemm::NeedsEpilogue;
  e.run(GemmEngine::kFp8Unscaled, x, nullptr, w, nullptr, y, y_f32, m, n, k, nullptr, false, ctx);
  return Fp8Gemm::NeedsScales;
}

}  // namespace fisdit::cuda
