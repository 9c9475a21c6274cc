// Which backends exist (the CPU always; CUDA when a program links it and registers its factory)
// and the defaults a backend inherits from Backend: host-side random_normal and dequantize, and
// rms_norm_rope as its two ops. Kept apart from backend.cpp, which holds the ops' checks.
#include <random>

#include "backend/backend.h"
#include "fisdit/error.h"

namespace fisdit {

namespace {
BackendFactory& cuda_factory() {
  static BackendFactory factory = nullptr;
  return factory;
}
DeviceCountFn& cuda_count() {
  static DeviceCountFn count = nullptr;
  return count;
}
}  // namespace

void register_cuda_backend(BackendFactory factory, DeviceCountFn count) {
  cuda_factory() = factory;
  cuda_count() = count;
}

std::string default_device() {
  return cuda_factory() && cuda_count() && cuda_count()() > 0 ? "cuda" : "cpu";
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda") {
    if (!cuda_factory())
      throw ParamError("device",
                       " cuda: this fisdit was built without the CUDA backend (nvcc was not found "
                       "at configure time); rebuild with the CUDA toolkit or use the cpu device");
    return cuda_factory()();
  }
  throw ParamError("device", ": must be cpu or cuda, got '" + device + "'");
}

std::unique_ptr<Backend> make_backend(const std::string& device, const BackendSettings& settings) {
  const double limit = settings.gpu_memory_limit_gib;
  if (!(limit >= 0) || limit > 1e6)
    throw ParamError("gpu-memory-limit", ": must be a number of GiB >= 0 (0: the whole device)");
  std::unique_ptr<Backend> backend = make_backend(device);
  if (limit > 0) backend->set_memory_budget({static_cast<int64_t>(limit * 1073741824.0), 0});
  backend->set_video_precision(settings.video_precision);
  return backend;
}

Tensor Backend::random_normal(const Shape& shape, DType dtype, float mean, float stddev,
                              uint64_t seed) {
  Tensor host = Tensor::zeros(shape);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, stddev);
  float* p = host.f32();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = dist(rng);
  return upload(host, dtype);
}

Tensor Backend::pinned_host(const Shape& shape, DType dtype) { return Tensor::zeros(shape, dtype); }

Tensor Backend::upload_beside(const Tensor& host) { return upload(host, host.dtype()); }

Backend::Graph Backend::capture(const std::function<void()>& body) {
  const FlopCounter before = flops_;
  Graph g;
  try {
    g.handle = do_capture(body);
  } catch (...) {
    flops_ = before;
    throw;
  }
  // What the recording counted is what each replay runs; none of it has run yet.
  g.flops = flops_ - before;
  flops_ = before;
  ++graph_counts_.recorded;
  return g;
}

void Backend::replay(const Graph& graph) {
  if (!graph) throw Error(name() + " backend: replay of an empty graph");
  do_replay(graph.handle);
  ++graph_counts_.replayed;
  flops_ += graph.flops;
}

std::shared_ptr<void> Backend::do_capture(const std::function<void()>& body) {
  return std::make_shared<std::function<void()>>(body);  // recorded as the calls themselves
}

void Backend::do_replay(const std::shared_ptr<void>& handle) {
  (*static_cast<const std::function<void()>*>(handle.get()))();
}

Backend::Event Backend::copy_async(const Tensor& src, Tensor& dst, const Event& after) {
  (void)after;  // the default backend runs every op at once: `after` has passed
  copy(src, dst);
  return {};
}

Tensor Backend::do_dequantize(const Tensor& stored, float scale, DType dtype) {
  if (stored.device() != Device::CPU)
    throw Error(name() + " backend: dequantize of a tensor not on the host");
  const auto n = static_cast<size_t>(stored.numel());
  Tensor out = Tensor::zeros(stored.shape(), dtype);
  if (dtype == DType::BF16)
    convert_to_bf16_scaled(stored.dtype(), stored.raw(), scale, out.data_as<uint16_t>(), n);
  else
    convert_to_f32_scaled(stored.dtype(), stored.raw(), scale, out.f32(), n);
  return device() == Device::CPU ? out : upload(out, dtype);
}

void Backend::do_rms_norm_rope(Tensor& x, const Tensor& weight, float eps, int64_t heads,
                               const RopeGrid& grid) {
  rms_norm(x, weight, eps, x);
  Tensor per_head = x.reshape({x.dim(0), heads, x.dim(1) / heads});
  rope_3d(per_head, grid);
}

}  // namespace fisdit
