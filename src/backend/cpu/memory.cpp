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

void check_mod(const ModChunk& m, int64_t tokens, int64_t dim, const char* op) {
  if (!m.mod) return;
  const Tensor& table = m.mod->table;
  require(table.ndim() == 3 && table.dim(2) == dim, op,
          "modulation table " + shape_str(table.shape()) + " does not match channels " +
              std::to_string(dim));
  require(m.chunk >= 0 && m.chunk < table.dim(1), op, "modulation chunk out of range");
  if (m.mod->token_rows.defined()) {
    require(m.mod->token_rows.dtype() == DType::I32 && m.mod->token_rows.numel() == tokens, op,
            "modulation row index has " + std::to_string(m.mod->token_rows.numel()) +
                " entries for " + std::to_string(tokens) + " tokens");
    const int32_t* rows = m.mod->token_rows.data_as<int32_t>();
    for (int64_t i = 0; i < tokens; ++i)
      require(rows[i] >= 0 && rows[i] < table.dim(0), op, "modulation row index out of range");
  }
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

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  cpu::require(src.numel() == dst.numel() && src.dtype() == dst.dtype(), "copy",
               "source " + shape_str(src.shape()) + " and destination " + shape_str(dst.shape()) +
                   " differ in size or dtype");
  if (src.nbytes()) std::memmove(dst.raw(), src.raw(), src.nbytes());
}

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace fisdit
