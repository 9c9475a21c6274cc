// The CPU backend's memory (host tensors) and the helpers its op files share.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>

#include "backend/cpu/cpu_backend.h"
#include "fisdit/error.h"

namespace fisdit {

namespace cpu {
void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw Error(std::string(op) + ": " + what);
}

const float* mod_row(const ModChunk& m, int64_t token) {
  if (!m.mod) return nullptr;
  const Tensor& table = m.mod->table;
  const int64_t chunks = table.dim(1), dim = table.dim(2);
  int64_t row = 0;
  if (m.mod->token_rows.defined()) row = m.mod->token_rows.data_as<int32_t>()[token];
  return table.f32() + (row * chunks + m.chunk) * dim;
}

void check_mod_rows(const ModChunk& m, int64_t tokens, const char* op) {
  if (!m.mod || !m.mod->token_rows.defined()) return;
  const int64_t table_rows = m.mod->table.dim(0);
  const int32_t* rows = m.mod->token_rows.data_as<int32_t>();
  for (int64_t i = 0; i < tokens; ++i)
    require(rows[i] >= 0 && rows[i] < table_rows, op, "modulation row index out of range");
}
}  // namespace cpu

struct CpuBackend::Held {
  std::mutex mutex;
  int64_t in_use = 0, peak = 0;
};

CpuBackend::CpuBackend() : held_(std::make_shared<Held>()) {}

Tensor CpuBackend::tracked(Tensor t, const char* op) {
  const auto bytes = static_cast<int64_t>(t.nbytes());
  {
    std::lock_guard<std::mutex> lock(held_->mutex);
    const int64_t limit = memory_budget().limit;
    if (limit >= 0 && held_->in_use + bytes > limit) {
      char what[256];
      std::snprintf(what, sizeof what,
                    "%s %s %s: out of GPU memory allocating %.3f GiB: the memory limit of %.3f GiB "
                    "is reached (%.3f GiB in use)",
                    op, shape_str(t.shape()).c_str(), std::string(dtype_name(t.dtype())).c_str(),
                    bytes / 1073741824.0, limit / 1073741824.0, held_->in_use / 1073741824.0);
      throw Error(what);
    }
    held_->in_use += bytes;
    held_->peak = std::max(held_->peak, held_->in_use);
  }
  struct Owner {
    std::shared_ptr<const void> storage;
    std::shared_ptr<Held> held;
    int64_t bytes;
    Owner(std::shared_ptr<const void> s, std::shared_ptr<Held> h, int64_t n)
        : storage(std::move(s)), held(std::move(h)), bytes(n) {}
    Owner(const Owner&) = delete;
    Owner& operator=(const Owner&) = delete;
    ~Owner() {
      std::lock_guard<std::mutex> lock(held->mutex);
      held->in_use -= bytes;
    }
  };
  void* data = t.raw();
  auto owner = std::make_shared<Owner>(t.owner(), held_, bytes);
  return Tensor::view_of(std::move(owner), data, t.shape(), t.dtype());
}

int64_t CpuBackend::memory_in_use() const {
  if (memory_budget().limit < 0) return -1;
  std::lock_guard<std::mutex> lock(held_->mutex);
  return held_->in_use;
}

int64_t CpuBackend::memory_peak() const {
  if (memory_budget().limit < 0) return -1;
  std::lock_guard<std::mutex> lock(held_->mutex);
  return held_->peak;
}

int64_t CpuBackend::memory_free() const {
  const int64_t limit = memory_budget().limit;
  if (limit < 0) return -1;
  std::lock_guard<std::mutex> lock(held_->mutex);
  return std::max<int64_t>(limit - held_->in_use, 0);
}

void CpuBackend::reset_memory_peak() {
  std::lock_guard<std::mutex> lock(held_->mutex);
  held_->peak = held_->in_use;
}

Tensor CpuBackend::empty(const Shape& shape, DType dtype) {
  return tracked(Tensor::zeros(shape, dtype), "empty");
}

Tensor CpuBackend::upload(const Tensor& host, DType dtype) {
  if (dtype == DType::F32)
    return tracked(host.dtype() == DType::F32 ? host.clone() : host.to_f32(), "upload");
  if (dtype == host.dtype()) return tracked(host.clone(), "upload");
  throw Error("cpu backend: cannot store a tensor as " + std::string(dtype_name(dtype)));
}

Tensor CpuBackend::download(const Tensor& t) {
  return t.dtype() == DType::F32 ? t.clone() : t.to_f32();
}

void CpuBackend::do_copy(const Tensor& src, Tensor& dst) {
  if (src.nbytes()) std::memmove(dst.raw(), src.raw(), src.nbytes());
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace fisdit
