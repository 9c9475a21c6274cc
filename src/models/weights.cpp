#include "models/weights.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "backend/backend.h"
#include "core/dtype.h"
#include "fisdit/error.h"

namespace fisdit::models {

Tensor widen_to_f32(const Tensor& stored, float scale) {
  if (scale == 1.0f) return stored.dtype() == DType::F32 ? stored : stored.to_f32();
  Tensor t = Tensor::zeros(stored.shape());
  convert_to_f32_scaled(stored.dtype(), stored.raw(), scale, t.f32(),
                        static_cast<size_t>(stored.numel()));
  return t;
}

Tensor upload_weight(const Tensor& stored, float scale, Backend& backend, DType dtype) {
  if (stored.device() != Device::CPU &&
      (backend.device() == Device::CPU || !(is_fp8(stored.dtype()) || scale == 1.0f)))
    throw Error("upload_weight: the stored weight " + shape_str(stored.shape()) +
                " is not a host tensor");
  if (backend.device() == Device::CPU) {
    const Tensor w = widen_to_f32(stored, scale);
    return dtype == DType::F32 ? w : backend.upload(w, dtype);
  }
  if (is_fp8(stored.dtype())) return backend.dequantize(stored, scale, dtype);
  if (scale == 1.0f) return backend.upload(stored, dtype);
  return backend.upload(widen_to_f32(stored, scale), dtype);
}

Tensor host_weight(const WeightSource& weights, const std::string& canonical, const Shape& shape,
                   const LoraMerge* lora) {
  Tensor w = weights.get(canonical, shape);  // a fresh copy: safe to change
  if (lora) lora->apply(canonical, w);
  return w;
}

Tensor load_host_weight(Tensor host, Backend& backend, DType dtype) {
  return dtype == DType::F32 ? host : backend.upload(host, dtype);
}

Tensor load_weight(const WeightSource& weights, const std::string& canonical, const Shape& shape,
                   Backend& backend, DType dtype, const LoraMerge* lora) {
  if (backend.device() == Device::CPU)
    return load_host_weight(host_weight(weights, canonical, shape, lora), backend, dtype);
  float scale = 1.0f;
  const Tensor stored = weights.get_stored(canonical, shape, scale);
  return load_stored_weight(stored, scale, canonical, backend, dtype, lora);
}

Tensor load_stored_weight(const Tensor& stored, float scale, const std::string& canonical,
                          Backend& backend, DType dtype, const LoraMerge* lora) {
  if (!lora || !lora->touches(canonical)) return upload_weight(stored, scale, backend, dtype);
  // Merged in fp32 on the device: bf16 / f32 bytes go up as stored; f16 is widened on the host
  // (the CUDA backend keeps F32 and BF16 only).
  Tensor w =
      is_fp8(stored.dtype())
          ? backend.dequantize(stored, scale, DType::F32)
          : backend.upload(stored, stored.dtype() == DType::F16 ? DType::F32 : stored.dtype());
  if (w.dtype() != DType::F32) w = backend.upload(w, DType::F32);  // converted on the device
  lora->apply(canonical, w, backend);
  return dtype == DType::F32 ? w : backend.upload(w, dtype);
}

namespace {
// Reads every page of `t`'s bytes (a view of a mapped file: the kernel reads them in), asking for
// them all first so the disk reads ahead in large requests.
int64_t touch(const Tensor& t) {
  const size_t n = t.nbytes();
  if (n == 0) return 0;
  const auto* bytes = static_cast<const unsigned char*>(t.raw());
  const long page_size = sysconf(_SC_PAGESIZE);
  const auto page = static_cast<uintptr_t>(page_size > 0 ? page_size : 4096);
  const uintptr_t first = reinterpret_cast<uintptr_t>(bytes) / page * page;
  // Advice only: a failure (memory that is no mapping) changes nothing.
  (void)madvise(reinterpret_cast<void*>(first), reinterpret_cast<uintptr_t>(bytes) + n - first,
                MADV_WILLNEED);
  const volatile unsigned char* p = bytes;  // volatile: each read happens
  for (size_t i = 0; i < n; i += page) (void)p[i];
  (void)p[n - 1];
  return static_cast<int64_t>(n);
}
}  // namespace

int64_t read_ahead(const WeightSource& weights, const std::string& canonical) {
  const TensorInfo* info = weights.info(canonical);
  if (!info) return 0;
  return touch(weights.checkpoint().tensor(info->name));
}

int64_t read_ahead(const Checkpoint& checkpoint, int64_t budget, std::stop_token stop) {
  int64_t bytes = 0;
  for (const auto& file : checkpoint.files())
    for (const TensorInfo& info : file->tensors()) {
      if (stop.stop_requested() || bytes + static_cast<int64_t>(info.nbytes) > budget) return bytes;
      bytes += touch(file->tensor(info.name));
    }
  return bytes;
}

int64_t host_memory_available() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key, unit;
  int64_t kib = 0;
  while (meminfo >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    std::getline(meminfo, unit);  // the unit
  }
  return -1;
}

}  // namespace fisdit::models
