// Standalone check of src/backend/cuda/attention.cpp (cuDNN backend-API flash attention):
// correctness against a naive fp32 GPU reference on sampled query rows, poisoned outputs, and
// timing.
//   sdpa_check [--quick]
// Exit status 0 when every case ran on cuDNN with finite outputs and rel L2 error < 2e-2.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cuda_internal.h"

// The few helpers of cuda_internal.h that attention.cpp uses (the real ones live in the backend).
namespace fisdit::cuda {
void fail(const char* op, const std::string& ctx, const std::string& what) {
  throw std::runtime_error(std::string(op) + " " + ctx + ": " + what);
}
void check(cudaError_t err, const char* op, const std::string& ctx) {
  if (err != cudaSuccess) fail(op, ctx, cudaGetErrorString(err));
}
void check_launch(const char* op, const std::string& ctx, cudaStream_t stream) {
  check(cudaGetLastError(), op, ctx);
  const char* sync = std::getenv("FISDIT_CUDA_SYNC");
  if (sync && std::strcmp(sync, "1") == 0) check(cudaStreamSynchronize(stream), op, ctx);
}
}  // namespace fisdit::cuda

// sdpa_ref.cu
void sdpa_fill_random(void* p, int64_t n, uint64_t seed, float amp, cudaStream_t s);
bool sdpa_reference(const void* q, const void* k, const void* v, float* ref, const int64_t* rows,
                    int nrows, int64_t lk, int64_t heads, int64_t d, cudaStream_t s);
void sdpa_gather_rows(const void* out, float* dst, const int64_t* rows, int nrows, int64_t width,
                      cudaStream_t s);
void sdpa_count_nonfinite(const void* p, int64_t n, unsigned long long* count, cudaStream_t s);

namespace {

void cu(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

struct Case {
  const char* name;
  int64_t lq, lk, heads, d;
  bool check;  // compare with the reference (sampled rows for long sequences)
  bool time;
};

struct Result {
  bool ran = false;
  double first_call_ms = 0, rel_l2 = -1, max_abs = -1, median_ms = 0, tflops = 0;
  unsigned long long nonfinite = 0;
  int rows_checked = 0;
};

Result run_case(fisdit::cuda::AttentionEngine& eng, const Case& c, cudaStream_t s) {
  Result r;
  const int64_t nq = c.lq * c.heads * c.d, nk = c.lk * c.heads * c.d;
  void *q, *k, *v, *o;
  cu(cudaMalloc(&q, nq * 2), "malloc q");
  cu(cudaMalloc(&k, nk * 2), "malloc k");
  cu(cudaMalloc(&v, nk * 2), "malloc v");
  cu(cudaMalloc(&o, nq * 2), "malloc out");
  const uint64_t seed = 1000003ULL * c.lq + 7919ULL * c.lk + 31ULL * c.heads + c.d;
  sdpa_fill_random(q, nq, seed + 1, std::sqrt(3.0f), s);
  sdpa_fill_random(k, nk, seed + 2, std::sqrt(3.0f), s);
  sdpa_fill_random(v, nk, seed + 3, std::sqrt(3.0f), s);
  cu(cudaMemsetAsync(o, 0xFF, nq * 2, s), "poison out");  // bf16 0xFFFF is NaN
  cu(cudaStreamSynchronize(s), "sync inputs");

  const std::string ctx = std::string("[") + c.name + "]";
  auto t0 = std::chrono::steady_clock::now();
  const bool ok = fisdit::cuda::attention_cudnn(eng, q, k, v, o, c.lq, c.lk, c.heads, c.d, ctx);
  cu(cudaStreamSynchronize(s), "sync first call");
  r.first_call_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (ok) {
    r.ran = true;
    unsigned long long* cnt;
    cu(cudaMalloc(&cnt, sizeof(*cnt)), "malloc count");
    cu(cudaMemsetAsync(cnt, 0, sizeof(*cnt), s), "memset count");
    sdpa_count_nonfinite(o, nq, cnt, s);
    cu(cudaMemcpyAsync(&r.nonfinite, cnt, sizeof(*cnt), cudaMemcpyDeviceToHost, s), "copy count");
    cu(cudaStreamSynchronize(s), "sync count");
    cu(cudaFree(cnt), "free count");

    if (c.check) {
      std::vector<int64_t> rows;
      const int64_t max_rows = 256;
      if (c.lq <= 4096) {
        for (int64_t i = 0; i < c.lq; ++i) rows.push_back(i);
      } else {
        for (int64_t i = 0; i < max_rows; ++i) rows.push_back(i * (c.lq - 1) / (max_rows - 1));
      }
      const int nrows = static_cast<int>(rows.size());
      const int64_t width = c.heads * c.d;
      int64_t* drows;
      float *ref, *got;
      cu(cudaMalloc(&drows, rows.size() * sizeof(int64_t)), "malloc rows");
      cu(cudaMalloc(&ref, nrows * width * sizeof(float)), "malloc ref");
      cu(cudaMalloc(&got, nrows * width * sizeof(float)), "malloc got");
      cu(cudaMemcpyAsync(drows, rows.data(), rows.size() * sizeof(int64_t), cudaMemcpyHostToDevice,
                         s),
         "copy rows");
      if (!sdpa_reference(q, k, v, ref, drows, nrows, c.lk, c.heads, c.d, s))
        throw std::runtime_error("reference: unsupported head_dim");
      cu(cudaGetLastError(), "reference launch");
      sdpa_gather_rows(o, got, drows, nrows, width, s);
      std::vector<float> href(nrows * width), hgot(nrows * width);
      cu(cudaMemcpyAsync(href.data(), ref, href.size() * 4, cudaMemcpyDeviceToHost, s), "copy ref");
      cu(cudaMemcpyAsync(hgot.data(), got, hgot.size() * 4, cudaMemcpyDeviceToHost, s), "copy got");
      cu(cudaStreamSynchronize(s), "sync reference");
      double num = 0, den = 0, mx = 0;
      for (size_t i = 0; i < href.size(); ++i) {
        const double dlt = double(hgot[i]) - double(href[i]);
        num += dlt * dlt;
        den += double(href[i]) * double(href[i]);
        mx = std::max(mx, std::isfinite(dlt) ? std::fabs(dlt) : INFINITY);
      }
      r.rel_l2 = std::sqrt(num / std::max(den, 1e-30));
      if (!std::isfinite(num)) r.rel_l2 = INFINITY;
      r.max_abs = mx;
      r.rows_checked = nrows;
      cu(cudaFree(drows), "free");
      cu(cudaFree(ref), "free");
      cu(cudaFree(got), "free");
    }

    if (c.time) {
      cudaEvent_t a, b;
      cu(cudaEventCreate(&a), "event");
      cu(cudaEventCreate(&b), "event");
      std::vector<float> ms;
      for (int it = 0; it < 7; ++it) {
        cu(cudaEventRecord(a, s), "record");
        fisdit::cuda::attention_cudnn(eng, q, k, v, o, c.lq, c.lk, c.heads, c.d, ctx);
        cu(cudaEventRecord(b, s), "record");
        cu(cudaEventSynchronize(b), "sync event");
        float t = 0;
        cu(cudaEventElapsedTime(&t, a, b), "elapsed");
        if (it >= 2) ms.push_back(t);  // 2 warm-ups
      }
      std::sort(ms.begin(), ms.end());
      r.median_ms = ms[ms.size() / 2];
      r.tflops = 4.0 * c.lq * c.lk * c.heads * c.d / (r.median_ms * 1e-3) / 1e12;
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
  }
  cu(cudaFree(q), "free");
  cu(cudaFree(k), "free");
  cu(cudaFree(v), "free");
  cu(cudaFree(o), "free");
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  try {
    cudaDeviceProp prop{};
    cu(cudaGetDeviceProperties(&prop, 0), "device properties");
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    std::printf("cuDNN: header %d, library %zu\n", CUDNN_VERSION, cudnnGetVersion());
    cudaStream_t s;
    cu(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
    fisdit::cuda::AttentionEngine* eng = fisdit::cuda::make_attention_engine(s);

    std::vector<Case> cases = {
        {"self 144 h2 d64", 144, 144, 2, 64, true, true},
        {"37x29 h3 d64", 37, 29, 3, 64, true, true},
        {"self 1000 h4 d128", 1000, 1000, 4, 128, true, true},
        {"cross 700x512 h40 d128", 700, 512, 40, 128, true, true},
        {"self 28800 h40 d128", 28800, 28800, 40, 128, true, true},
        {"cross 75600x512 h40 d128", 75600, 512, 40, 128, true, true},
        {"self 75600 h40 d128", 75600, 75600, 40, 128, !quick, true},
        {"self 144 h2 d64 (cached plan)", 144, 144, 2, 64, true, false},
    };
    bool all_ok = true;
    std::printf("%-30s %6s %6s %4s %4s | %9s %10s %9s %6s %9s | %9s %8s\n", "case", "Lq", "Lk", "h",
                "d", "first ms", "rel L2", "max abs", "rows", "nonfinite", "median ms", "TFLOP/s");
    for (const Case& c : cases) {
      Result r;
      try {
        r = run_case(*eng, c, s);
      } catch (const std::exception& e) {
        std::printf("%-30s ERROR: %s\n", c.name, e.what());
        all_ok = false;
        continue;
      }
      bool ok = r.ran && r.nonfinite == 0 && (!c.check || (r.rel_l2 >= 0 && r.rel_l2 < 2e-2));
      all_ok = all_ok && ok;
      if (!r.ran) {
        std::printf("%-30s %6lld %6lld %4lld %4lld | DECLINED by cuDNN (fallback would run)\n",
                    c.name, (long long)c.lq, (long long)c.lk, (long long)c.heads, (long long)c.d);
        continue;
      }
      std::printf("%-30s %6lld %6lld %4lld %4lld | %9.1f %10.3e %9.3e %6d %9llu | %9.3f %8.1f %s\n",
                  c.name, (long long)c.lq, (long long)c.lk, (long long)c.heads, (long long)c.d,
                  r.first_call_ms, r.rel_l2, r.max_abs, r.rows_checked, r.nonfinite, r.median_ms,
                  r.tflops, ok ? "PASS" : "FAIL");
      std::fflush(stdout);
    }
    fisdit::cuda::destroy(eng);
    cu(cudaStreamDestroy(s), "stream destroy");
    std::printf("%s\n", all_ok ? "ALL PASS" : "SOME FAILED");
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sdpa_check: %s\n", e.what());
    return 2;
  }
}
