// CudaBackend: device memory (stream-ordered pool), host<->device transfers, and the checks and
// dispatch of every op to cuBLASLt (gemm.cpp), cuDNN (attention.cpp) or the own kernels.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>

#include "backend/cuda/cuda_internal.h"
#include "fisdit/error.h"

namespace fisdit::cuda {

// ---------------------------------------------------------------- errors
void fail(const char* op, const std::string& ctx, const std::string& what) {
  throw Error(std::string(op) + (ctx.empty() ? "" : " " + ctx) + ": " + what);
}

void check(cudaError_t err, const char* op, const std::string& ctx) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  fail(op, ctx,
       std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

namespace {
bool sync_after_ops() {
  static const bool on = [] {
    const char* v = std::getenv("FISDIT_CUDA_SYNC");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}
}  // namespace

void check_launch(const char* op, const std::string& ctx, cudaStream_t stream) {
  check(cudaGetLastError(), op, ctx);
  if (sync_after_ops()) check(cudaStreamSynchronize(stream), op, ctx + " (FISDIT_CUDA_SYNC)");
}

EType etype(DType t, const char* op, const char* what) {
  if (t == DType::F32) return EType::F32;
  if (t == DType::BF16) return EType::BF16;
  fail(op, "", std::string(what) + " must be F32 or BF16, got " + std::string(dtype_name(t)));
}

DeviceContext::~DeviceContext() {
  if (stream) {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
}

namespace {

std::string desc(const Tensor& t) {
  return shape_str(t.shape()) + " " + std::string(dtype_name(t.dtype()));
}

void require_device(const Tensor& t, const char* op, const char* what) {
  if (!t.defined()) fail(op, "", std::string(what) + " is undefined");
  if (t.device() != Device::CUDA)
    fail(op, "", std::string(what) + " " + desc(t) + " is not on the GPU");
}

Tensor alloc_device(const std::shared_ptr<DeviceContext>& ctx, const Shape& shape, DType dtype,
                    const char* op) {
  for (int64_t d : shape)
    if (d < 0) fail(op, shape_str(shape), "negative dimension");
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  const size_t padded = ((bytes > 0 ? bytes : 1) + 255) / 256 * 256;
  void* p = nullptr;
  const cudaError_t err = cudaMallocAsync(&p, padded, ctx->stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t used = 0;
    cudaMemPoolGetAttribute(ctx->pool, cudaMemPoolAttrUsedMemCurrent, &used);
    char what[256];
    std::snprintf(what, sizeof what,
                  "out of GPU memory allocating %.3f GiB (%.2f GiB in use by fisdit, %.2f GiB "
                  "device)",
                  bytes / 1073741824.0, used / 1073741824.0, ctx->device_total / 1073741824.0);
    fail(op, shape_str(shape) + " " + std::string(dtype_name(dtype)), what);
  }
  check(err, op, "allocating " + shape_str(shape));
  std::shared_ptr<DeviceContext> keep = ctx;
  std::shared_ptr<const void> owner(
      p, [keep](const void* q) { cudaFreeAsync(const_cast<void*>(q), keep->stream); });
  return Tensor::view_of(std::move(owner), p, shape, dtype, Device::CUDA);
}

ModArg mod_arg(const ModChunk& m, int64_t tokens, int64_t dim, const char* op) {
  ModArg a;
  if (!m.mod) return a;
  const Tensor& table = m.mod->table;
  require_device(table, op, "modulation table");
  require(table.dtype() == DType::F32 && table.ndim() == 3 && table.dim(2) == dim, op,
          "modulation table " + desc(table) + " does not match channels " + std::to_string(dim));
  require(m.chunk >= 0 && m.chunk < table.dim(1), op, "modulation chunk out of range");
  a.table = table.data_as<float>();
  a.chunks = static_cast<int>(table.dim(1));
  a.chunk = m.chunk;
  if (m.mod->token_rows.defined()) {
    const Tensor& rows = m.mod->token_rows;
    require_device(rows, op, "modulation row index");
    require(rows.dtype() == DType::I32 && rows.numel() == tokens, op,
            "modulation row index " + desc(rows) + " does not have " + std::to_string(tokens) +
                " I32 entries");
    a.token_rows = rows.data_as<int32_t>();
  }
  return a;
}

FrameList frame_list(const std::vector<int32_t>& frames, int64_t num_frames, const char* op) {
  require(frames.size() <= static_cast<size_t>(kMaxFrames), op,
          std::to_string(frames.size()) + " frames, the CUDA backend takes at most " +
              std::to_string(kMaxFrames));
  FrameList l;
  l.count = static_cast<int>(frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    require(frames[i] >= 0 && frames[i] < num_frames, op,
            "frame index " + std::to_string(frames[i]) + " out of range [0, " +
                std::to_string(num_frames) + ")");
    l.frame[i] = frames[i];
  }
  return l;
}

}  // namespace

// ---------------------------------------------------------------- op profile
namespace {
bool profiling() {
  static const bool on = [] {
    const char* v = std::getenv("FISDIT_CUDA_PROFILE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}
struct OpStats {
  int64_t calls = 0;
  double ms = 0;
};
std::map<std::string, OpStats>& op_stats() {
  static std::map<std::string, OpStats> m;
  return m;
}
class OpScope {
 public:
  OpScope(cudaStream_t s, const char* op) : stream_(s) {
    if (!profiling()) return;
    name_ = op;
    start();
  }
  OpScope(cudaStream_t s, const char* op, const std::string& detail) : stream_(s) {
    if (!profiling()) return;
    name_ = std::string(op) + " " + detail;
    start();
  }
  ~OpScope() {
    if (name_.empty()) return;
    cudaStreamSynchronize(stream_);
    OpStats& st = op_stats()[name_];
    st.calls++;
    st.ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  void start() {
    cudaStreamSynchronize(stream_);
    t0_ = std::chrono::steady_clock::now();
  }
  cudaStream_t stream_;
  std::string name_;
  std::chrono::steady_clock::time_point t0_;
};
}  // namespace

std::string op_profile_report(bool reset) {
  if (!profiling()) return "";
  std::vector<std::pair<double, std::string>> rows;
  double total = 0;
  for (const auto& [name, st] : op_stats()) {
    char line[256];
    std::snprintf(line, sizeof line, "%-40s %7lld calls %10.1f ms %8.3f ms/call", name.c_str(),
                  static_cast<long long>(st.calls), st.ms, st.ms / st.calls);
    rows.emplace_back(st.ms, line);
    total += st.ms;
  }
  std::sort(rows.rbegin(), rows.rend());
  std::string out = "op profile (synchronized per op):\n";
  for (const auto& [ms, line] : rows) {
    char pct[32];
    std::snprintf(pct, sizeof pct, " %5.1f%%\n", 100.0 * ms / (total > 0 ? total : 1));
    out += "  " + line + pct;
  }
  if (reset) op_stats().clear();
  return out;
}

// ---------------------------------------------------------------- backend
CudaBackend::CudaBackend() : ctx_(std::make_shared<DeviceContext>()) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0)
    throw Error(std::string("--device cuda: no usable CUDA GPU (") +
                (err != cudaSuccess ? cudaGetErrorString(err) : "no device") + ")");
  const char* dev = std::getenv("FISDIT_CUDA_DEVICE");
  ctx_->device = dev ? std::atoi(dev) : 0;
  check(cudaSetDevice(ctx_->device), "cuda backend", "cudaSetDevice");
  check(cudaStreamCreateWithFlags(&ctx_->stream, cudaStreamNonBlocking), "cuda backend",
        "creating the stream");
  check(cudaDeviceGetDefaultMemPool(&ctx_->pool, ctx_->device), "cuda backend", "memory pool");
  uint64_t keep_all = std::numeric_limits<uint64_t>::max();  // cache freed blocks in the pool
  check(cudaMemPoolSetAttribute(ctx_->pool, cudaMemPoolAttrReleaseThreshold, &keep_all),
        "cuda backend", "memory pool release threshold");
  size_t free_bytes = 0;
  check(cudaMemGetInfo(&free_bytes, &ctx_->device_total), "cuda backend", "cudaMemGetInfo");
  gemm_ = make_gemm_engine(ctx_->stream);
  attn_ = make_attention_engine(ctx_->stream);
}

CudaBackend::~CudaBackend() {
  cudaStreamSynchronize(ctx_->stream);
  if (video_) destroy(video_);
  destroy(attn_);
  destroy(gemm_);
}

Tensor CudaBackend::empty(const Shape& shape, DType dtype) {
  return alloc_device(ctx_, shape, dtype, "empty");
}

Tensor CudaBackend::random_normal(const Shape& shape, DType dtype, float mean, float stddev,
                                  uint64_t seed) {
  Tensor t = alloc_device(ctx_, shape, dtype, "random_normal");
  launch_random_normal(t.raw(), etype(dtype, "random_normal", "dtype"), t.numel(), mean, stddev,
                       seed, stream());
  return t;
}

Tensor CudaBackend::dequantize(const Tensor& stored, float scale, DType dtype) {
  const char* op = "dequantize";
  if (!stored.defined()) fail(op, "", "tensor is undefined");
  if (!is_fp8(stored.dtype())) fail(op, desc(stored), "takes an F8_E4M3 or F8_E5M2 tensor");
  const EType dt = etype(dtype, op, "destination");
  // The 1-byte codes go up as they are (a quarter of the fp32 bytes, half of bf16's).
  Tensor codes = upload(stored, stored.dtype());
  if (reinterpret_cast<uintptr_t>(codes.raw()) % 4 != 0) {  // a view: the kernel reads 4 at once
    Tensor aligned = alloc_device(ctx_, codes.shape(), codes.dtype(), op);
    copy(codes, aligned);
    codes = aligned;
  }
  Tensor out = alloc_device(ctx_, stored.shape(), dtype, op);
  launch_dequantize_fp8(static_cast<const uint8_t*>(codes.raw()), stored.dtype() == DType::F8_E5M2,
                        scale, out.raw(), dt, stored.numel(), stream());
  return out;
}

Tensor CudaBackend::upload(const Tensor& host, DType dtype) {
  const char* op = "upload";
  if (!host.defined()) fail(op, "", "tensor is undefined");
  if (host.device() == Device::CUDA) {  // already here: as is, or converted on the device
    if (host.dtype() == dtype) return host;
    Tensor out = alloc_device(ctx_, host.shape(), dtype, op);
    launch_convert(host.raw(), etype(host.dtype(), op, "source"), out.raw(),
                   etype(dtype, op, "destination"), host.numel(), stream());
    return out;
  }
  Tensor staged;  // host bytes in the device dtype
  if (dtype == host.dtype()) {
    staged = host;
  } else if (dtype == DType::F32) {
    staged = host.to_f32();
  } else if (dtype == DType::BF16) {
    const Tensor f = host.dtype() == DType::F32 ? host : host.to_f32();
    staged = Tensor::zeros(host.shape(), DType::BF16);
    const float* src = f.data_as<float>();
    auto* dst = staged.data_as<uint16_t>();
    const int64_t n = f.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 20))
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
  } else if (dtype == DType::I32 && host.dtype() == DType::I64) {
    staged = Tensor::zeros(host.shape(), DType::I32);
    for (int64_t i = 0; i < host.numel(); ++i)
      staged.data_as<int32_t>()[i] = static_cast<int32_t>(host.data_as<int64_t>()[i]);
  } else {
    fail(op, desc(host), "cannot store as " + std::string(dtype_name(dtype)));
  }
  Tensor out = alloc_device(ctx_, host.shape(), dtype, op);
  if (staged.nbytes()) {
    check(
        cudaMemcpyAsync(out.raw(), staged.raw(), staged.nbytes(), cudaMemcpyHostToDevice, stream()),
        op, desc(host));
    if (staged.raw() != host.raw())  // the staging buffer dies here: let the copy finish first
      check(cudaStreamSynchronize(stream()), op, desc(host));
  }
  return out;
}

Tensor CudaBackend::download(const Tensor& t) {
  const char* op = "download";
  if (!t.defined()) fail(op, "", "tensor is undefined");
  if (t.device() == Device::CPU) return t.dtype() == DType::F32 ? t.clone() : t.to_f32();
  Tensor host = Tensor::zeros(t.shape(), t.dtype());
  if (t.nbytes())
    check(cudaMemcpyAsync(host.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream()), op,
          desc(t));
  check(cudaStreamSynchronize(stream()), op, desc(t));
  return t.dtype() == DType::F32 ? host : host.to_f32();
}

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  const char* op = "copy";
  OpScope scope(stream(), op);
  require_device(src, op, "source");
  require_device(dst, op, "destination");
  require(src.numel() == dst.numel() && src.dtype() == dst.dtype(), op,
          "source " + desc(src) + " and destination " + desc(dst) + " differ in size or dtype");
  if (src.nbytes())
    check(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream()),
          op, desc(src));
}

void CudaBackend::synchronize() { check(cudaStreamSynchronize(stream()), "synchronize", ""); }

MemoryStats CudaBackend::memory_stats() const {
  MemoryStats s;
  uint64_t v = 0;
  check(cudaMemPoolGetAttribute(ctx_->pool, cudaMemPoolAttrUsedMemCurrent, &v), "memory_stats", "");
  s.in_use = v;
  check(cudaMemPoolGetAttribute(ctx_->pool, cudaMemPoolAttrUsedMemHigh, &v), "memory_stats", "");
  s.peak = v;
  check(cudaMemPoolGetAttribute(ctx_->pool, cudaMemPoolAttrReservedMemCurrent, &v), "memory_stats",
        "");
  s.reserved = v;
  s.device_total = ctx_->device_total;
  return s;
}

void CudaBackend::reset_peak_memory() {
  check(cudaStreamSynchronize(stream()), "reset_peak_memory", "");
  uint64_t zero = 0;
  check(cudaMemPoolSetAttribute(ctx_->pool, cudaMemPoolAttrUsedMemHigh, &zero), "reset_peak_memory",
        "");
}

// ---------------------------------------------------------------- matrix ops
void CudaBackend::linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y,
                         Activation act) {
  const char* op = "linear";
  require_device(x, op, "input");
  require_device(w, op, "weight");
  require_device(y, op, "output");
  require(x.ndim() == 2 && w.ndim() == 2 && y.ndim() == 2, op, "expects 2-D tensors");
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  const std::string ctx = "x " + desc(x) + ", w " + desc(w) + ", y " + desc(y);
  require(w.dim(1) == k, op, ctx + ": input does not match weight");
  require(y.dim(0) == m && y.dim(1) == n, op, ctx + ": output has the wrong shape");
  require(w.dtype() == DType::BF16, op, ctx + ": weights must be BF16 on the CUDA backend");
  if (bias) {
    require_device(*bias, op, "bias");
    require(bias->numel() == n, op, ctx + ": bias size does not match weight rows");
  }
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

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const char* op = "attention";
  require_device(q, op, "q");
  require_device(k, op, "k");
  require_device(v, op, "v");
  require_device(out, op, "out");
  require(q.ndim() == 3 && k.ndim() == 3 && v.ndim() == 3, op,
          "expects [tokens, heads, head_dim] tensors");
  const int64_t lq = q.dim(0), heads = q.dim(1), d = q.dim(2), lk = k.dim(0);
  const std::string ctx = "q " + desc(q) + ", k " + desc(k) + ", v " + desc(v);
  require(k.dim(1) == heads && k.dim(2) == d && v.shape() == k.shape(), op,
          ctx + ": shapes do not agree");
  require(out.shape() == q.shape(), op, ctx + ": output shape must equal q's");
  require(q.dtype() == DType::BF16 && k.dtype() == DType::BF16 && v.dtype() == DType::BF16 &&
              out.dtype() == DType::BF16,
          op, ctx + ": the CUDA backend takes BF16 q, k, v and output");
  require(lk > 0, op, "no keys");
  flops_.attention += 4.0 * static_cast<double>(lq) * static_cast<double>(lk) *
                      static_cast<double>(heads) * static_cast<double>(d);
  if (lq == 0) return;
  OpScope scope(stream(), op,
                profiling()
                    ? (lq == lk ? "self" : "Lk=" + std::to_string(lk)) + " d=" + std::to_string(d)
                    : std::string());
  if (!attention_cudnn(*attn_, q.raw(), k.raw(), v.raw(), out.raw(), lq, lk, heads, d, ctx))
    launch_attention_naive(q.raw(), k.raw(), v.raw(), out.raw(), lq, lk, heads, d, stream());
}

// ---------------------------------------------------------------- norms, rope
void CudaBackend::activation(const Tensor& x, Tensor& y, Activation act) {
  const char* op = "activation";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(y, op, "output");
  require(x.numel() == y.numel(), op, "input " + desc(x) + " and output " + desc(y) + " differ");
  launch_activation(x.raw(), etype(x.dtype(), op, "input"), y.raw(), etype(y.dtype(), op, "output"),
                    x.numel(), act, stream());
}

void CudaBackend::layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                             Tensor& y, ModChunk shift, ModChunk scale) {
  const char* op = "layer_norm";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(y, op, "output");
  require(x.ndim() == 2 && x.shape() == y.shape(), op,
          "input " + desc(x) + " and output " + desc(y) + " must be equal 2-D shapes");
  require(x.dtype() == DType::F32, op, "input " + desc(x) + " must be the F32 residual stream");
  const int64_t rows = x.dim(0), d = x.dim(1);
  require(!weight || weight->numel() == d, op, "weight size does not match channels");
  require(!bias || bias->numel() == d, op, "bias size does not match channels");
  require((weight == nullptr) == (bias == nullptr), op, "weight and bias come together");
  require((shift.mod == nullptr) == (scale.mod == nullptr), op, "shift and scale come together");
  EType wt = EType::F32;
  if (weight) {
    require_device(*weight, op, "weight");
    require_device(*bias, op, "bias");
    wt = etype(weight->dtype(), op, "weight");
    require(bias->dtype() == weight->dtype(), op, "weight and bias dtypes differ");
  }
  launch_layer_norm(x.data_as<float>(), y.raw(), etype(y.dtype(), op, "output"), rows, d,
                    weight ? weight->raw() : nullptr, bias ? bias->raw() : nullptr, wt, eps,
                    mod_arg(shift, rows, d, op), mod_arg(scale, rows, d, op), stream());
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const char* op = "rms_norm";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(y, op, "output");
  require_device(weight, op, "weight");
  require(x.ndim() == 2 && x.shape() == y.shape(), op,
          "input " + desc(x) + " and output " + desc(y) + " must be equal 2-D shapes");
  const int64_t rows = x.dim(0), d = x.dim(1);
  require(weight.numel() == d, op,
          "weight " + desc(weight) + " does not match channels " + std::to_string(d));
  launch_rms_norm(x.raw(), etype(x.dtype(), op, "input"), y.raw(), etype(y.dtype(), op, "output"),
                  weight.raw(), etype(weight.dtype(), op, "weight"), rows, d, eps, stream());
}

const float* CudaBackend::rope_table(int64_t head_dim, int positions) {
  if (rope_table_.defined() && rope_head_dim_ == head_dim && positions <= rope_positions_)
    return rope_table_.data_as<float>();
  positions = std::max(positions, 256);
  const int64_t d = head_dim, c = d / 2;
  const int64_t parts[3] = {c - 2 * (c / 3), c / 3, c / 3};
  const int64_t widths[3] = {d - 4 * (d / 6), 2 * (d / 6), 2 * (d / 6)};
  std::vector<double> freq;
  for (int p = 0; p < 3; ++p)
    for (int64_t i = 0; i < parts[p]; ++i)
      freq.push_back(
          std::pow(10000.0, -static_cast<double>(2 * i) / static_cast<double>(widths[p])));
  Tensor host = Tensor::zeros({positions, c, 2});
  float* t = host.f32();
  for (int pos = 0; pos < positions; ++pos)
    for (int64_t j = 0; j < c; ++j) {  // angles in float64, as the official rope_params
      const double a = pos * freq[static_cast<size_t>(j)];
      t[(pos * c + j) * 2] = static_cast<float>(std::cos(a));
      t[(pos * c + j) * 2 + 1] = static_cast<float>(std::sin(a));
    }
  synchronize();  // the old table may still be read by queued kernels
  rope_table_ = upload(host, DType::F32);
  rope_head_dim_ = head_dim;
  rope_positions_ = positions;
  return rope_table_.data_as<float>();
}

void CudaBackend::rope_3d(Tensor& x, const RopeGrid& grid) {
  const char* op = "rope_3d";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require(x.ndim() == 3, op, "expects [tokens, heads, head_dim], got " + desc(x));
  const int64_t tokens = x.dim(0), heads = x.dim(1), d = x.dim(2);
  require(d % 2 == 0, op, "head_dim must be even");
  require(grid.tokens() == tokens, op,
          "grid has " + std::to_string(grid.tokens()) + " tokens, tensor " + desc(x));
  int max_pos = std::max(grid.height, grid.width);
  for (int32_t f : grid.frames) {
    require(f >= 0, op, "negative frame index");
    max_pos = std::max(max_pos, f + 1);
  }
  const FrameList frames = frame_list(grid.frames, std::numeric_limits<int32_t>::max(), op);
  const float* table = rope_table(d, max_pos);
  launch_rope_3d(x.raw(), etype(x.dtype(), op, "input"), tokens, heads, d, frames, grid.height,
                 grid.width, table, stream());
}

void CudaBackend::rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                                const RopeGrid& grid) {
  const char* op = "rms_norm_rope";
  require_device(x, op, "input");
  require_device(weight, op, "weight");
  require(x.ndim() == 2 && heads > 0 && x.dim(1) % heads == 0 && (x.dim(1) / heads) % 2 == 0, op,
          "expects [tokens, heads * even head_dim], got " + desc(x) + " for " +
              std::to_string(heads) + " heads");
  const int64_t tokens = x.dim(0), d = x.dim(1), head_dim = d / heads;
  require(weight.numel() == d, op,
          "weight " + desc(weight) + " does not match channels " + std::to_string(d));
  require(grid.tokens() == tokens, op,
          "grid has " + std::to_string(grid.tokens()) + " tokens, tensor " + desc(x));
  int max_pos = std::max(grid.height, grid.width);
  for (int32_t f : grid.frames) {
    require(f >= 0, op, "negative frame index");
    max_pos = std::max(max_pos, f + 1);
  }
  const float* table = rope_table(head_dim, max_pos);
  bool fused = false;
  {
    OpScope scope(stream(), op);
    const FrameList frames = frame_list(grid.frames, std::numeric_limits<int32_t>::max(), op);
    fused = launch_rms_norm_rope(x.raw(), etype(x.dtype(), op, "input"), weight.raw(),
                                 etype(weight.dtype(), op, "weight"), tokens, d, head_dim, eps,
                                 frames, grid.height, grid.width, table, stream());
  }
  if (!fused) Backend::rms_norm_rope(x, weight, eps, heads, grid);
}

// ---------------------------------------------------------------- elementwise
void CudaBackend::add(Tensor& x, const Tensor& y, ModChunk gate) {
  const char* op = "add";
  OpScope scope(stream(), op);
  require_device(x, op, "x");
  require_device(y, op, "y");
  require(x.shape() == y.shape(), op, "shapes " + desc(x) + " and " + desc(y) + " differ");
  require(x.dtype() == DType::F32, op, "x " + desc(x) + " must be the F32 residual stream");
  const int64_t d = x.ndim() ? x.dim(-1) : 1, rows = d ? x.numel() / d : 0;
  launch_add(x.data_as<float>(), y.raw(), etype(y.dtype(), op, "y"), rows, d,
             mod_arg(gate, rows, d, op), stream());
}

void CudaBackend::mul_gate(Tensor& x, ModChunk gate) {
  const char* op = "mul_gate";
  OpScope scope(stream(), op);
  require_device(x, op, "x");
  require(gate.mod != nullptr, op, "no gate given");
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  launch_mul_gate(x.raw(), etype(x.dtype(), op, "x"), rows, d, mod_arg(gate, rows, d, op),
                  stream());
}

void CudaBackend::add_scaled(Tensor& x, const Tensor& y, float alpha) {
  const char* op = "add_scaled";
  OpScope scope(stream(), op);
  require_device(x, op, "x");
  require_device(y, op, "y");
  require(x.shape() == y.shape(), op, "shapes " + desc(x) + " and " + desc(y) + " differ");
  launch_add_scaled(x.raw(), etype(x.dtype(), op, "x"), y.raw(), etype(y.dtype(), op, "y"), alpha,
                    x.numel(), stream());
}

void CudaBackend::add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) {
  const char* op = "add_low_rank";
  require_device(w, op, "w");
  require_device(up, op, "up");
  require_device(down, op, "down");
  require(w.dtype() == DType::F32 && up.dtype() == DType::F32 && down.dtype() == DType::F32, op,
          "expects F32 tensors");
  const std::string ctx = "w " + desc(w) + ", up " + desc(up) + ", down " + desc(down);
  require(up.ndim() == 2 && down.ndim() == 2 && w.ndim() >= 1 && up.dim(1) == down.dim(0) &&
              w.dim(0) == up.dim(0) && w.numel() == up.dim(0) * down.dim(1),
          op, ctx + ": w is not up @ down");
  if (!w.numel() || !up.dim(1)) return;
  OpScope scope(stream(), op);
  low_rank_update(video(), w.data_as<float>(), up.data_as<float>(), down.data_as<float>(),
                  up.dim(0), down.dim(1), up.dim(1), scale, ctx);
}

void CudaBackend::sub(const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "sub";
  OpScope scope(stream(), op);
  require_device(a, op, "a");
  require_device(b, op, "b");
  require_device(out, op, "out");
  require(a.shape() == b.shape() && a.shape() == out.shape(), op,
          "shapes " + desc(a) + ", " + desc(b) + ", " + desc(out) + " differ");
  launch_sub(a.raw(), etype(a.dtype(), op, "a"), b.raw(), etype(b.dtype(), op, "b"), out.raw(),
             etype(out.dtype(), op, "out"), a.numel(), stream());
}

void CudaBackend::add_row(const Tensor& a, const Tensor& row, Tensor& out) {
  const char* op = "add_row";
  OpScope scope(stream(), op);
  require_device(a, op, "a");
  require_device(row, op, "row");
  require_device(out, op, "out");
  require(a.shape() == out.shape(), op, "shapes " + desc(a) + " and " + desc(out) + " differ");
  const int64_t d = row.numel();
  require(d > 0 && a.numel() % d == 0, op,
          "row of " + std::to_string(d) + " does not tile " + desc(a));
  launch_add_row(a.raw(), etype(a.dtype(), op, "a"), row.raw(), etype(row.dtype(), op, "row"),
                 out.raw(), etype(out.dtype(), op, "out"), a.numel(), d, stream());
}

// ---------------------------------------------------------------- frames
void CudaBackend::gather_frames(const Tensor& src, const std::vector<int32_t>& frames,
                                int64_t tokens_per_frame, Tensor& dst) {
  const char* op = "gather_frames";
  OpScope scope(stream(), op);
  require_device(src, op, "source");
  require_device(dst, op, "destination");
  require(src.ndim() >= 1 && tokens_per_frame > 0 && src.dim(0) % tokens_per_frame == 0, op,
          "source rows " + desc(src) + " are not whole frames of " +
              std::to_string(tokens_per_frame) + " tokens");
  const int64_t num_frames = src.dim(0) / tokens_per_frame;
  const int64_t frame_bytes = static_cast<int64_t>(src.nbytes()) / (num_frames ? num_frames : 1);
  require(dst.dtype() == src.dtype() && static_cast<int64_t>(dst.nbytes()) ==
                                            frame_bytes * static_cast<int64_t>(frames.size()),
          op,
          "destination " + desc(dst) + " does not hold " + std::to_string(frames.size()) +
              " frames of " + desc(src));
  launch_gather_frames(src.raw(), dst.raw(), frame_bytes, frame_list(frames, num_frames, op),
                       stream());
}

void CudaBackend::interpolate_frames(const Tensor& src, const std::vector<int32_t>& anchors,
                                     int64_t tokens_per_frame, Tensor& dst, bool accumulate) {
  const char* op = "interpolate_frames";
  OpScope scope(stream(), op);
  require_device(src, op, "source");
  require_device(dst, op, "destination");
  require(src.ndim() == 2 && dst.ndim() == 2 && src.dim(1) == dst.dim(1), op,
          "expects [rows, channels] tensors with equal channels, got " + desc(src) + " and " +
              desc(dst));
  require(dst.dtype() == DType::F32, op, "destination " + desc(dst) + " must be F32");
  const int64_t a = static_cast<int64_t>(anchors.size());
  require(tokens_per_frame > 0 && src.dim(0) == a * tokens_per_frame, op,
          "source rows do not match the anchor count");
  require(dst.dim(0) % tokens_per_frame == 0, op, "destination rows are not whole frames");
  const int64_t frames = dst.dim(0) / tokens_per_frame;
  require(a >= 1 && anchors.front() == 0 && anchors.back() == frames - 1, op,
          "anchors must include the first and last frame");
  for (int64_t i = 1; i < a; ++i)
    require(anchors[i] > anchors[i - 1], op, "anchors must be strictly increasing");
  require(frames <= kMaxFrames, op,
          std::to_string(frames) + " frames, the CUDA backend takes at most " +
              std::to_string(kMaxFrames));
  InterpPlan plan;
  plan.frames = static_cast<int>(frames);
  for (int64_t s = 0; s < a; ++s) {
    const int64_t end = s + 1 < a ? anchors[s + 1] : anchors[s] + 1;
    for (int64_t f = anchors[s]; f < end; ++f) {
      plan.slot[f] = static_cast<int32_t>(s);
      if (f == anchors[s]) {
        plan.wa[f] = 1.0f;
        plan.wb[f] = 0.0f;
        plan.span[f] = 1.0f;
      } else {
        plan.wa[f] = static_cast<float>(anchors[s + 1] - f);
        plan.wb[f] = static_cast<float>(f - anchors[s]);
        plan.span[f] = static_cast<float>(anchors[s + 1] - anchors[s]);
      }
    }
  }
  launch_interpolate_frames(src.raw(), etype(src.dtype(), op, "source"), dst.data_as<float>(),
                            tokens_per_frame * dst.dim(1), plan, accumulate, stream());
}

void CudaBackend::reconstruct_frames_delta(const Tensor& anchor_rows,
                                           const std::vector<int32_t>& anchors,
                                           int64_t tokens_per_frame, Tensor& x) {
  const char* op = "reconstruct_frames_delta";
  OpScope scope(stream(), op);
  require_device(anchor_rows, op, "anchor rows");
  require_device(x, op, "hidden state");
  require(anchor_rows.ndim() == 2 && x.ndim() == 2 && anchor_rows.dim(1) == x.dim(1), op,
          "expects [rows, channels] tensors with equal channels, got " + desc(anchor_rows) +
              " and " + desc(x));
  require(anchor_rows.dtype() == DType::F32 && x.dtype() == DType::F32, op,
          "expects F32 tensors, got " + desc(anchor_rows) + " and " + desc(x));
  const int64_t a = static_cast<int64_t>(anchors.size());
  require(tokens_per_frame > 0 && anchor_rows.dim(0) == a * tokens_per_frame, op,
          "anchor rows do not match the anchor count");
  require(x.dim(0) % tokens_per_frame == 0, op, "hidden state rows are not whole frames");
  const int64_t frames = x.dim(0) / tokens_per_frame;
  require(a >= 1 && anchors.front() == 0 && anchors.back() == frames - 1, op,
          "anchors must include the first and last frame");
  for (int64_t i = 1; i < a; ++i)
    require(anchors[i] > anchors[i - 1], op, "anchors must be strictly increasing");
  launch_reconstruct_delta(anchor_rows.data_as<float>(), x.data_as<float>(),
                           tokens_per_frame * x.dim(1), frame_list(anchors, frames, op), stream());
}

void CudaBackend::patchify(const Tensor& x, const std::array<int, 3>& patch, Tensor& out) {
  const char* op = "patchify";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(out, op, "output");
  require(x.ndim() == 4, op, "expects [C, F, H, W], got " + desc(x));
  require(x.dtype() == DType::F32 && out.dtype() == DType::F32, op, "expects F32 tensors");
  const int64_t c = x.dim(0), f = x.dim(1), h = x.dim(2), w = x.dim(3);
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  require(pt > 0 && ph > 0 && pw > 0 && f % pt == 0 && h % ph == 0 && w % pw == 0, op,
          "latent " + desc(x) + " is not divisible by the patch size");
  const int64_t tokens = (f / pt) * (h / ph) * (w / pw), k = c * pt * ph * pw;
  require(out.ndim() == 2 && out.dim(0) == tokens && out.dim(1) == k, op,
          "output " + desc(out) + " has the wrong shape");
  launch_patchify(x.data_as<float>(), out.data_as<float>(), c, f, h, w, patch, stream());
}

void CudaBackend::unpatchify(const Tensor& x, const std::array<int, 3>& patch, int64_t grid_f,
                             int64_t grid_h, int64_t grid_w, Tensor& out) {
  const char* op = "unpatchify";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(out, op, "output");
  const int pt = patch[0], ph = patch[1], pw = patch[2];
  require(x.dtype() == DType::F32 && out.dtype() == DType::F32, op, "expects F32 tensors");
  require(x.ndim() == 2 && x.dim(0) == grid_f * grid_h * grid_w && x.dim(1) % (pt * ph * pw) == 0,
          op, "input " + desc(x) + " does not match the token grid");
  const int64_t c = x.dim(1) / (pt * ph * pw);
  const Shape expect{c, grid_f * pt, grid_h * ph, grid_w * pw};
  require(out.shape() == expect, op, "output " + desc(out) + ", expected " + shape_str(expect));
  launch_unpatchify(x.data_as<float>(), out.data_as<float>(), c, grid_f, grid_h, grid_w, patch,
                    stream());
}

// ---------------------------------------------------------------- public helpers
namespace {
CudaBackend& as_cuda(Backend& b, const char* what) {
  auto* c = dynamic_cast<CudaBackend*>(&b);
  if (!c) throw Error(std::string(what) + ": backend '" + b.name() + "' is not the CUDA backend");
  return *c;
}
}  // namespace

EventTimer::EventTimer(Backend& backend) {
  stream_ = as_cuda(backend, "EventTimer").stream();
  cudaEvent_t b = nullptr, e = nullptr;
  check(cudaEventCreate(&b), "EventTimer", "");
  check(cudaEventCreate(&e), "EventTimer", "");
  begin_ = b;
  end_ = e;
}
EventTimer::~EventTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(begin_));
  cudaEventDestroy(static_cast<cudaEvent_t>(end_));
}
void EventTimer::start() {
  check(cudaEventRecord(static_cast<cudaEvent_t>(begin_), static_cast<cudaStream_t>(stream_)),
        "EventTimer", "start");
}
double EventTimer::stop_ms() {
  check(cudaEventRecord(static_cast<cudaEvent_t>(end_), static_cast<cudaStream_t>(stream_)),
        "EventTimer", "stop");
  check(cudaEventSynchronize(static_cast<cudaEvent_t>(end_)), "EventTimer", "stop");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(begin_), static_cast<cudaEvent_t>(end_)),
        "EventTimer", "elapsed");
  return ms;
}

// ---------------------------------------------------------------- video VAE ops (F32)
namespace {
void require_f32_video(const Tensor& t, const char* op, const char* what) {
  require_device(t, op, what);
  require(t.dtype() == DType::F32, op, std::string(what) + " " + desc(t) + " must be F32");
}
}  // namespace

VideoEngine& CudaBackend::video() {
  if (!video_) video_ = make_video_engine(stream());
  return *video_;
}

void CudaBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor* bias,
                         const Conv3dParams& p, Tensor& out) {
  const char* op = "conv3d";
  require_f32_video(x, op, "input");
  require_f32_video(w, op, "weight");
  require_f32_video(out, op, "output");
  const Shape os = conv3d_output_shape(x.shape(), w.shape(), p);
  require(out.shape() == os, op, "output " + desc(out) + ", expected " + shape_str(os));
  if (bias) {
    require_f32_video(*bias, op, "bias");
    require(bias->numel() == os[0], op, "bias size does not match weight rows");
  }
  const std::string ctx = desc(x) + " * " + shape_str(w.shape());
  OpScope scope(stream(), op, shape_str(w.shape()));
  if (out.numel() == 0) return;
  Tensor src = x;
  int pad_h = p.pad_top, pad_w = p.pad_left;
  if (p.pad_top != p.pad_bottom || p.pad_left != p.pad_right) {
    // cuDNN pads symmetrically: zero pad explicitly, then convolve without padding.
    src = empty({x.dim(0), x.dim(1), x.dim(2) + p.pad_top + p.pad_bottom,
                 x.dim(3) + p.pad_left + p.pad_right},
                DType::F32);
    launch_pad_spatial(x.data_as<float>(), src.data_as<float>(), x.dim(0) * x.dim(1), x.dim(2),
                       x.dim(3), p.pad_top, p.pad_bottom, p.pad_left, p.pad_right, stream());
    check_launch(op, ctx, stream());
    pad_h = pad_w = 0;
  }
  conv3d_forward(video(), src.data_as<float>(), {src.dim(0), src.dim(1), src.dim(2), src.dim(3)},
                 w.data_as<float>(), {w.dim(0), w.dim(1), w.dim(2), w.dim(3), w.dim(4)},
                 out.data_as<float>(), {os[0], os[1], os[2], os[3]},
                 {p.stride_t, p.stride_h, p.stride_w}, pad_h, pad_w, ctx);
  if (bias) {
    launch_channel_bias(out.data_as<float>(), bias->data_as<float>(), os[0], out.numel() / os[0],
                        stream());
    check_launch(op, ctx, stream());
  }
}

void CudaBackend::channel_rms_norm(const Tensor& x, const Tensor& gamma, bool silu, Tensor& out) {
  const char* op = "channel_rms_norm";
  require_f32_video(x, op, "input");
  require_f32_video(gamma, op, "gamma");
  require_f32_video(out, op, "output");
  require(x.ndim() >= 2 && out.numel() == x.numel(), op,
          "bad input " + desc(x) + " / output " + desc(out));
  const int64_t c = x.dim(0);
  require(gamma.numel() == c, op,
          "gamma has " + std::to_string(gamma.numel()) + " values for " + std::to_string(c) +
              " channels");
  OpScope scope(stream(), op);
  launch_channel_rms_norm(x.data_as<float>(), gamma.data_as<float>(), out.data_as<float>(), c,
                          x.numel() / c, silu, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::upsample_nearest2x(const Tensor& x, Tensor& out) {
  const char* op = "upsample_nearest2x";
  require_f32_video(x, op, "input");
  require_f32_video(out, op, "output");
  require(x.ndim() == 4, op, "expects [C, T, H, W], got " + desc(x));
  require(out.shape() == Shape{x.dim(0), x.dim(1), 2 * x.dim(2), 2 * x.dim(3)}, op,
          "output " + desc(out) + " is not twice " + desc(x));
  OpScope scope(stream(), op);
  launch_upsample_nearest2x(x.data_as<float>(), out.data_as<float>(), x.dim(0) * x.dim(1), x.dim(2),
                            x.dim(3), stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::frame_attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  const char* op = "frame_attention";
  require_f32_video(q, op, "q");
  require_f32_video(k, op, "k");
  require_f32_video(v, op, "v");
  require_f32_video(out, op, "output");
  require(
      q.ndim() == 4 && k.shape() == q.shape() && v.shape() == q.shape() && out.shape() == q.shape(),
      op, "q, k, v and out must be the same [C, T, H, W], got " + desc(q));
  const int64_t c = q.dim(0), t = q.dim(1), n = q.dim(2) * q.dim(3);
  if (!q.numel()) return;
  OpScope scope(stream(), op);
  // Scores of at most 256 MiB at a time (blocks of query rows).
  const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{64} << 20) / n));
  Tensor scores = empty({rows, n}, DType::F32);
  frame_attention_forward(video(), q.data_as<float>(), k.data_as<float>(), v.data_as<float>(),
                          out.data_as<float>(), c, t, n, scores.data_as<float>(), rows, desc(q));
}

void CudaBackend::copy_frames(const Tensor& src, int64_t src_c, int64_t src_f, Tensor& dst,
                              int64_t dst_c, int64_t dst_f, int64_t channels, int64_t frames) {
  const char* op = "copy_frames";
  require_f32_video(src, op, "source");
  require_f32_video(dst, op, "destination");
  require(src.ndim() >= 2 && dst.ndim() == src.ndim(), op,
          "expects [C, T, ...] tensors, got " + desc(src) + " and " + desc(dst));
  for (int i = 2; i < src.ndim(); ++i)
    require(src.dim(i) == dst.dim(i), op, "frame sizes differ: " + desc(src) + " and " + desc(dst));
  require(channels >= 0 && frames >= 0 && src_c >= 0 && dst_c >= 0 && src_f >= 0 && dst_f >= 0 &&
              src_c + channels <= src.dim(0) && dst_c + channels <= dst.dim(0) &&
              src_f + frames <= src.dim(1) && dst_f + frames <= dst.dim(1),
          op,
          "block out of range: " + std::to_string(channels) + " channels x " +
              std::to_string(frames) + " frames of " + desc(src) + " -> " + desc(dst));
  const int64_t frame = src.dim(1) ? src.numel() / (src.dim(0) * src.dim(1)) : 0;
  if (!frame || !channels || !frames) return;
  OpScope scope(stream(), op);
  const size_t fb = static_cast<size_t>(frame) * sizeof(float);
  const char* s = static_cast<const char*>(src.raw()) + (src_c * src.dim(1) + src_f) * fb;
  char* d = static_cast<char*>(dst.raw()) + (dst_c * dst.dim(1) + dst_f) * fb;
  check(cudaMemcpy2DAsync(d, dst.dim(1) * fb, s, src.dim(1) * fb, frames * fb,
                          static_cast<size_t>(channels), cudaMemcpyDeviceToDevice, stream()),
        op, desc(src) + " -> " + desc(dst));
}

void CudaBackend::fill_zero(Tensor& x) {
  require_device(x, "fill_zero", "tensor");
  if (x.nbytes()) check(cudaMemsetAsync(x.raw(), 0, x.nbytes(), stream()), "fill_zero", desc(x));
}

void CudaBackend::avg_down3d(const Tensor& x, int ft, int fs, Tensor& out) {
  const char* op = "avg_down3d";
  require_f32_video(x, op, "input");
  require_f32_video(out, op, "output");
  require(x.ndim() == 4 && out.ndim() == 4 && ft > 0 && fs > 0, op,
          "expects [C, T, H, W] tensors, got " + desc(x));
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3), out_c = out.dim(0);
  const int64_t pad = (ft - t % ft) % ft, factor = int64_t{ft} * fs * fs;
  require(h % fs == 0 && w % fs == 0 && out_c > 0 && c * factor % out_c == 0 &&
              out.shape() == Shape{out_c, (t + pad) / ft, h / fs, w / fs},
          op, "cannot reduce " + desc(x) + " to " + desc(out));
  OpScope scope(stream(), op);
  launch_avg_down3d(x.data_as<float>(), out.data_as<float>(), c, t, h, w, out_c, ft, fs, stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::dup_up3d(const Tensor& x, int ft, int fs, int skip, Tensor& out) {
  const char* op = "dup_up3d";
  require_f32_video(x, op, "input");
  require_f32_video(out, op, "output");
  require(x.ndim() == 4 && out.ndim() == 4 && ft > 0 && fs > 0 && skip >= 0, op,
          "expects [C, T, H, W] tensors, got " + desc(x));
  const int64_t c = x.dim(0), t = x.dim(1), h = x.dim(2), w = x.dim(3), out_c = out.dim(0);
  const int64_t factor = int64_t{ft} * fs * fs;
  require(out_c * factor % c == 0 && out.shape() == Shape{out_c, t * ft - skip, h * fs, w * fs}, op,
          "cannot expand " + desc(x) + " to " + desc(out));
  OpScope scope(stream(), op);
  launch_dup_up3d(x.data_as<float>(), out.data_as<float>(), c, t, h, w, out_c, ft, fs, skip,
                  stream());
  check_launch(op, desc(x), stream());
}

void CudaBackend::space_to_channels2(const Tensor& x, Tensor& out, bool inverse) {
  const char* op = "space_to_channels2";
  require_f32_video(x, op, "input");
  require_f32_video(out, op, "output");
  const Tensor& big = inverse ? out : x;
  const Tensor& small = inverse ? x : out;
  require(big.ndim() == 4 && big.dim(2) % 2 == 0 && big.dim(3) % 2 == 0 &&
              small.shape() == Shape{4 * big.dim(0), big.dim(1), big.dim(2) / 2, big.dim(3) / 2},
          op, "cannot map " + desc(x) + " to " + desc(out));
  OpScope scope(stream(), op);
  launch_space_to_channels2(x.data_as<float>(), out.data_as<float>(), big.dim(0), big.dim(1),
                            big.dim(2) / 2, big.dim(3) / 2, inverse, stream());
  check_launch(op, desc(x), stream());
}

// ---------------------------------------------------------------- umT5 ops
void CudaBackend::attention_rel_bias(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& table, const std::vector<int32_t>& bucket_of,
                                     const std::vector<uint8_t>& key_valid, Tensor& out) {
  const char* op = "attention_rel_bias";
  require_device(q, op, "q");
  require_device(k, op, "k");
  require_device(v, op, "v");
  require_device(table, op, "table");
  require_device(out, op, "out");
  check_rel_bias_args(q, k, v, table, bucket_of, key_valid, out);
  require(k.dtype() == q.dtype() && v.dtype() == q.dtype(), op, "q, k and v must share a dtype");
  const int64_t len = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  require((len + hd) * sizeof(float) <= 48 * 1024, op,
          std::to_string(len) + " positions exceed the kernel's shared memory");
  if (!len) return;
  OpScope scope(stream(), op);
  // Buckets and key flags as I32 on the device (pageable copies: staged before the call returns).
  Tensor meta = empty({3 * len - 1}, DType::I32);
  std::vector<int32_t> host(bucket_of.begin(), bucket_of.end());
  for (uint8_t f : key_valid) host.push_back(f ? 1 : 0);
  check(cudaMemcpyAsync(meta.raw(), host.data(), host.size() * sizeof(int32_t),
                        cudaMemcpyHostToDevice, stream()),
        op, "buckets");
  const int32_t* buckets = meta.data_as<int32_t>();
  launch_attention_rel_bias(q.raw(), k.raw(), v.raw(), etype(q.dtype(), op, "q"),
                            table.data_as<float>(), buckets, buckets + 2 * len - 1, out.raw(),
                            etype(out.dtype(), op, "out"), len, heads, hd, stream());
  check_launch(op, desc(q), stream());
  // The host vector must outlive the copy.
  check(cudaStreamSynchronize(stream()), op, "buckets");
}

void CudaBackend::mul(Tensor& x, const Tensor& y) {
  const char* op = "mul";
  require_device(x, op, "x");
  require_device(y, op, "y");
  require(x.numel() == y.numel(), op, "shapes " + desc(x) + " and " + desc(y) + " differ");
  OpScope scope(stream(), op);
  launch_mul(x.raw(), etype(x.dtype(), op, "x"), y.raw(), etype(y.dtype(), op, "y"), x.numel(),
             stream());
  check_launch(op, desc(x), stream());
}

}  // namespace fisdit::cuda

namespace fisdit {
std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<cuda::CudaBackend>(); }
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}
}  // namespace fisdit
