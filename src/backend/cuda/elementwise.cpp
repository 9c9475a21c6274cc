// The CUDA backend's elementwise ops next to their kernels (elementwise.cu): activations, the
// gated residual adds of the adaLN blocks (x F32, the residual stream), scaled adds, differences,
// row broadcasts, and the LoRA merge w += scale * up @ down (an fp32 cuBLAS GEMM,
// video_engine.cpp).
#include <string>

#include "backend/cuda/cuda_internal.h"
#include "backend/cuda/elementwise.cuh"
#include "backend/cuda/profile.h"

namespace fisdit::cuda {

void CudaBackend::do_activation(const Tensor& x, Tensor& y, Activation act) {
  const char* op = "activation";
  OpScope scope(stream(), op);
  require_device(x, op, "input");
  require_device(y, op, "output");
  launch_activation(x.raw(), etype(x.dtype(), op, "input"), y.raw(), etype(y.dtype(), op, "output"),
                    x.numel(), act, stream());
}

void CudaBackend::do_add(Tensor& x, const Tensor& y, ModChunk gate) {
  const char* op = "add";
  OpScope scope(stream(), op);
  require_device(x, op, "x");
  require_device(y, op, "y");
  const int64_t d = x.ndim() ? x.dim(-1) : 1, rows = d ? x.numel() / d : 0;
  launch_add(x.data_as<float>(), y.raw(), etype(y.dtype(), op, "y"), rows, d, mod_arg(gate, op),
             stream());
}

void CudaBackend::do_mul_gate(Tensor& x, ModChunk gate) {
  const char* op = "mul_gate";
  OpScope scope(stream(), op);
  require_device(x, op, "x");
  const int64_t d = x.dim(-1), rows = x.numel() / d;
  launch_mul_gate(x.raw(), etype(x.dtype(), op, "x"), rows, d, mod_arg(gate, op), stream());
}

void CudaBackend::do_add_scaled(Tensor& x, const Tensor& y, float alpha) {
  const char* op = "add_scaled";
  OpScope scope(stream(), op);
  require_device(x, op, "x");
  require_device(y, op, "y");
  launch_add_scaled(x.raw(), etype(x.dtype(), op, "x"), y.raw(), etype(y.dtype(), op, "y"), alpha,
                    x.numel(), stream());
}

void CudaBackend::do_add_low_rank(Tensor& w, const Tensor& up, const Tensor& down, float scale) {
  const char* op = "add_low_rank";
  require_device(w, op, "w");
  require_device(up, op, "up");
  require_device(down, op, "down");
  const std::string ctx = "w " + desc(w) + ", up " + desc(up) + ", down " + desc(down);
  if (!w.numel() || !up.dim(1)) return;
  OpScope scope(stream(), op);
  low_rank_update(video(), w.data_as<float>(), up.data_as<float>(), down.data_as<float>(),
                  up.dim(0), down.dim(1), up.dim(1), scale, ctx);
}

void CudaBackend::do_sub(const Tensor& a, const Tensor& b, Tensor& out) {
  const char* op = "sub";
  OpScope scope(stream(), op);
  require_device(a, op, "a");
  require_device(b, op, "b");
  require_device(out, op, "out");
  launch_sub(a.raw(), etype(a.dtype(), op, "a"), b.raw(), etype(b.dtype(), op, "b"), out.raw(),
             etype(out.dtype(), op, "out"), a.numel(), stream());
}

void CudaBackend::do_add_row(const Tensor& a, const Tensor& row, Tensor& out) {
  const char* op = "add_row";
  OpScope scope(stream(), op);
  require_device(a, op, "a");
  require_device(row, op, "row");
  require_device(out, op, "out");
  const int64_t d = row.numel();
  launch_add_row(a.raw(), etype(a.dtype(), op, "a"), row.raw(), etype(row.dtype(), op, "row"),
                 out.raw(), etype(out.dtype(), op, "out"), a.numel(), d, stream());
}

}  // namespace fisdit::cuda
