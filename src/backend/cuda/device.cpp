// The CUDA backend's device side: the context every tensor keeps alive (device, stream, the
// stream-ordered memory pool that caches freed blocks), allocation with clear out-of-memory errors,
// host<->device transfers, on-GPU random fills and fp8 widening, memory statistics, the event
// timer, and the backend's construction (FISDIT_CUDA_DEVICE picks the GPU).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/profile.h"
#include "core/env.h"
#include "fisdit/error.h"

#if FISDIT_HAVE_CUDNN
#include <cudnn.h>
#endif

namespace fisdit::cuda {

DeviceContext::~DeviceContext() {
  if (upload_stream) {
    cudaStreamSynchronize(upload_stream);
    cudaStreamDestroy(upload_stream);
  }
  if (copy_stream) {
    cudaStreamSynchronize(copy_stream);
    cudaStreamDestroy(copy_stream);
  }
  if (stream) {
    cudaStreamSynchronize(stream);
    cudaStreamDestroy(stream);
  }
}

namespace {
[[noreturn]] void out_of_memory(const char* op, const Shape& shape, DType dtype, size_t bytes,
                                size_t used, const std::string& why) {
  char what[320];
  std::snprintf(what, sizeof what, "out of GPU memory allocating %.3f GiB (%.2f GiB in use by %s)",
                bytes / 1073741824.0, used / 1073741824.0, why.c_str());
  fail(op, shape_str(shape) + " " + std::string(dtype_name(dtype)), what);
}
}  // namespace

Tensor alloc_device(const std::shared_ptr<DeviceContext>& ctx, const Shape& shape, DType dtype,
                    const char* op, cudaStream_t on) {
  for (int64_t d : shape)
    if (d < 0) fail(op, shape_str(shape), "negative dimension");
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  const size_t padded = ((bytes > 0 ? bytes : 1) + 255) / 256 * 256;
  if (ctx->limit >= 0) {  // --gpu-memory-limit: as on a card of that size
    uint64_t used = 0;
    cudaMemPoolGetAttribute(ctx->pool, cudaMemPoolAttrUsedMemCurrent, &used);
    if (used + padded > static_cast<uint64_t>(ctx->limit)) {
      char limit[64];
      std::snprintf(limit, sizeof limit, "fisdit; the memory limit is %.3f GiB",
                    ctx->limit / 1073741824.0);
      out_of_memory(op, shape, dtype, bytes, used, limit);
    }
  }
  void* p = nullptr;
  const cudaError_t err = cudaMallocAsync(&p, padded, on ? on : ctx->stream);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t used = 0;
    cudaMemPoolGetAttribute(ctx->pool, cudaMemPoolAttrUsedMemCurrent, &used);
    char device[64];
    std::snprintf(device, sizeof device, "fisdit, %.2f GiB device",
                  ctx->device_total / 1073741824.0);
    out_of_memory(op, shape, dtype, bytes, used, device);
  }
  check(err, op, "allocating " + shape_str(shape));
  std::shared_ptr<DeviceContext> keep = ctx;
  std::shared_ptr<const void> owner(
      p, [keep](const void* q) { cudaFreeAsync(const_cast<void*>(q), keep->stream); });
  return Tensor::view_of(std::move(owner), p, shape, dtype, Device::CUDA);
}

std::string device_key() {
  int dev = 0, driver = 0, runtime = 0;
  cudaGetDevice(&dev);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, dev);
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
#if FISDIT_HAVE_CUDNN
  const size_t cudnn = cudnnGetVersion();
#else
  const size_t cudnn = 0;
#endif
  char key[320];
  std::snprintf(key, sizeof key, "%s sm%d%d driver %d runtime %d cudnn %zu", prop.name, prop.major,
                prop.minor, driver, runtime, cudnn);
  return key;
}

CudaBackend::CudaBackend() : ctx_(std::make_shared<DeviceContext>()) {
  // First, before anything is made: a bad FISDIT_VAE_PRECISION or FISDIT_CUDA_GRAPHS throws here.
  video_dtype_ = vae_precision();
  set_graphs(env_switch("FISDIT_CUDA_GRAPHS", false));  // Backend::graphs
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0)
    throw ParamError("device", std::string(" cuda: no usable CUDA GPU (") +
                                   (err != cudaSuccess ? cudaGetErrorString(err) : "no device") +
                                   ")");
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

Tensor CudaBackend::do_dequantize(const Tensor& stored, float scale, DType dtype) {
  const char* op = "dequantize";
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
  refuse_in_capture(stream(), op, desc(host), "copying host memory");
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

Tensor CudaBackend::upload_beside(const Tensor& host) {
  const char* op = "upload_beside";
  if (!host.defined()) fail(op, "", "tensor is undefined");
  if (host.device() == Device::CUDA) return host;
  // The calling thread may be new: its current device is set first.
  check(cudaSetDevice(ctx_->device), op, "cudaSetDevice");
  std::call_once(ctx_->upload_stream_made, [&] {
    check(cudaStreamCreateWithFlags(&ctx_->upload_stream, cudaStreamNonBlocking), op,
          "creating the stream");
  });
  Tensor out = alloc_device(ctx_, host.shape(), host.dtype(), op, ctx_->upload_stream);
  if (host.nbytes())
    check(cudaMemcpyAsync(out.raw(), host.raw(), host.nbytes(), cudaMemcpyHostToDevice,
                          ctx_->upload_stream),
          op, desc(host));
  // Done before the tensor is handed over: the ops' stream (which frees it) needs no event.
  check(cudaStreamSynchronize(ctx_->upload_stream), op, desc(host));
  return out;
}

Tensor CudaBackend::download(const Tensor& t) {
  const char* op = "download";
  if (!t.defined()) fail(op, "", "tensor is undefined");
  if (t.device() == Device::CPU) return t.dtype() == DType::F32 ? t.clone() : t.to_f32();
  refuse_in_capture(stream(), op, desc(t), "copying to host memory");
  Tensor host = Tensor::zeros(t.shape(), t.dtype());
  if (t.nbytes())
    check(cudaMemcpyAsync(host.raw(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, stream()), op,
          desc(t));
  check(cudaStreamSynchronize(stream()), op, desc(t));
  return t.dtype() == DType::F32 ? host : host.to_f32();
}

void CudaBackend::do_copy(const Tensor& src, Tensor& dst) {
  const char* op = "copy";
  OpScope scope(stream(), op);
  const bool host = src.device() == Device::CPU || dst.device() == Device::CPU;
  if (host) refuse_in_capture(stream(), op, desc(src), "copying between host and device");
  if (src.nbytes())
    check(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(),
                          host ? cudaMemcpyDefault : cudaMemcpyDeviceToDevice, stream()),
          op, desc(src));
  if (host) check(cudaStreamSynchronize(stream()), op, desc(src));  // the host side is free now
}

void CudaBackend::synchronize() {
  if (ctx_->copy_stream)
    check(cudaStreamSynchronize(ctx_->copy_stream), "synchronize", "copy stream");
  check(cudaStreamSynchronize(stream()), "synchronize", "");
}

void CudaBackend::set_memory_budget(const MemoryBudget& budget) {
  Backend::set_memory_budget(budget);
  ctx_->limit = budget.limit;
}

Tensor CudaBackend::pinned_host(const Shape& shape, DType dtype) {
  const char* op = "pinned_host";
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  void* p = nullptr;
  const cudaError_t err = cudaHostAlloc(&p, bytes > 0 ? bytes : 1, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    char what[160];
    std::snprintf(what, sizeof what, "cannot allocate %.3f GiB of page-locked host memory (%s)",
                  bytes / 1073741824.0, cudaGetErrorString(err));
    fail(op, shape_str(shape), what);
  }
  std::shared_ptr<const void> owner(p, [](const void* q) { cudaFreeHost(const_cast<void*>(q)); });
  return Tensor::view_of(std::move(owner), p, shape, dtype, Device::CPU);
}

namespace {
Backend::Event make_event(const char* op) {
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), op, "creating an event");
  return {std::shared_ptr<void>(e, [](void* q) { cudaEventDestroy(static_cast<cudaEvent_t>(q)); })};
}
cudaEvent_t event_of(const Backend::Event& e) { return static_cast<cudaEvent_t>(e.handle.get()); }
}  // namespace

Backend::Event CudaBackend::record() {
  Event e = make_event("record");
  check(cudaEventRecord(event_of(e), stream()), "record", "");
  return e;
}

Backend::Event CudaBackend::copy_async(const Tensor& src, Tensor& dst, const Event& after) {
  const char* op = "copy_async";
  require(src.defined() && dst.defined(), op, "a tensor is undefined");
  require(src.device() == Device::CPU, op, "the source " + desc(src) + " must be a host tensor");
  require_device(dst, op, "destination");
  require(src.nbytes() == dst.nbytes(), op,
          "source " + desc(src) + " and destination " + desc(dst) + " differ in size");
  if (!ctx_->copy_stream)
    check(cudaStreamCreateWithFlags(&ctx_->copy_stream, cudaStreamNonBlocking), op,
          "creating the copy stream");
  if (after.handle) check(cudaStreamWaitEvent(ctx_->copy_stream, event_of(after), 0), op, "wait");
  if (src.nbytes())
    check(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyHostToDevice,
                          ctx_->copy_stream),
          op, desc(src));
  Event done = make_event(op);
  check(cudaEventRecord(event_of(done), ctx_->copy_stream), op, "");
  return done;
}

void CudaBackend::wait(const Event& event) {
  if (event.handle) check(cudaStreamWaitEvent(stream(), event_of(event), 0), "wait", "");
}

// Stream capture of the ops' stream, this thread's calls only (the background expert preparation
// may upload beside it). A body that throws leaves the stream as it was, nothing recorded.
std::shared_ptr<void> CudaBackend::do_capture(const std::function<void()>& body) {
  const char* op = "capture";
  if (profiling())
    fail(op, "", "FISDIT_CUDA_PROFILE times each op on its own; graphs need it unset");
  check(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal), op, "begin");
  try {
    body();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    cudaStreamEndCapture(stream(), &partial);
    if (partial) cudaGraphDestroy(partial);
    cudaGetLastError();
    throw;
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream(), &graph);
  if (ended != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    fail(op, "",
         std::string("the ops could not be recorded: ") + cudaGetErrorName(ended) + " (" +
             cudaGetErrorString(ended) + ")");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(made, op, "instantiating the graph");
  return {exec, [](void* e) { cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(e)); }};
}

void CudaBackend::do_replay(const std::shared_ptr<void>& handle) {
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(handle.get()), stream()), "replay", "");
  if (sync_after_ops()) check(cudaStreamSynchronize(stream()), "replay", "(FISDIT_CUDA_SYNC)");
}

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
  check(cudaDeviceGetGraphMemAttribute(ctx_->device, cudaGraphMemAttrReservedMemCurrent, &v),
        "memory_stats", "graphs");
  s.graphs = v;
  check(cudaDeviceGetGraphMemAttribute(ctx_->device, cudaGraphMemAttrReservedMemHigh, &v),
        "memory_stats", "graphs");
  s.graphs_peak = v;
  s.device_total = ctx_->device_total;
  return s;
}

int64_t CudaBackend::memory_free() const {
  size_t free_bytes = 0, total = 0;
  check(cudaMemGetInfo(&free_bytes, &total), "memory_free", "cudaMemGetInfo");
  const MemoryStats s = memory_stats();
  // The pool's unused reserve is free to fisdit too.
  int64_t free_now = static_cast<int64_t>(free_bytes) +
                     static_cast<int64_t>(s.reserved > s.in_use ? s.reserved - s.in_use : 0);
  if (ctx_->limit >= 0)
    free_now = std::min<int64_t>(
        free_now, std::max<int64_t>(ctx_->limit - static_cast<int64_t>(s.in_use), 0));
  return free_now;
}

void CudaBackend::reset_peak_memory() {
  check(cudaStreamSynchronize(stream()), "reset_peak_memory", "");
  uint64_t zero = 0;
  check(cudaMemPoolSetAttribute(ctx_->pool, cudaMemPoolAttrUsedMemHigh, &zero), "reset_peak_memory",
        "");
  check(cudaDeviceSetGraphMemAttribute(ctx_->device, cudaGraphMemAttrReservedMemHigh, &zero),
        "reset_peak_memory", "graphs");
}

namespace {
// Owns a CUDA event with timing.
class TimingEvent {
 public:
  TimingEvent(const char* op, const std::string& where) { check(cudaEventCreate(&e_), op, where); }
  ~TimingEvent() {
    if (e_) cudaEventDestroy(e_);
  }
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};
}  // namespace

float time_launches(cudaStream_t stream, int warmups, int runs, const std::function<void()>& launch,
                    const char* op, const std::string& where) {
  refuse_in_capture(stream, op, where, "timing");
  TimingEvent t0(op, where), t1(op, where);
  for (int i = 0; i < warmups; ++i) launch();
  check(cudaEventRecord(t0.get(), stream), op, where);
  for (int i = 0; i < runs; ++i) launch();
  check(cudaEventRecord(t1.get(), stream), op, where);
  check(cudaEventSynchronize(t1.get()), op, where);
  float ms = 0;
  check(cudaEventElapsedTime(&ms, t0.get(), t1.get()), op, where);
  return runs > 0 ? ms / static_cast<float>(runs) : 0.0f;
}

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
  refuse_in_capture(static_cast<cudaStream_t>(stream_), "EventTimer", "", "timing");
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
