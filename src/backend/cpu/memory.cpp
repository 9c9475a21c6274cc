// The CPU backend's memory (host tensors) and the helpers its op files share.
#include <cstring>

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

Tensor CpuBackend::empty(const Shape& shape, DType dtype) { return Tensor::zeros(shape, dtype); }

Tensor CpuBackend::upload(const Tensor& host, DType dtype) {
  if (dtype == DType::F32) return host.dtype() == DType::F32 ? host.clone() : host.to_f32();
  if (dtype == host.dtype()) return host.clone();
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
