// The CUDA backend's error reporting (every CUDA call and kernel launch is checked, with
// FISDIT_CUDA_SYNC=1 also for execution errors) and the argument helpers its op files share: the
// checks that are the CUDA backend's own (tensors on the GPU, dtypes the kernels take, kMaxFrames);
// the device-independent ones ran before, in backend.cpp.
#include <cstdlib>
#include <cstring>

#include "backend/cuda/cuda_internal.h"
#include "fisdit/error.h"

namespace fisdit::cuda {

void fail(const char* op, const std::string& ctx, const std::string& what) {
  throw Error(std::string(op) + (ctx.empty() ? "" : " " + ctx) + ": " + what);
}

void check(cudaError_t err, const char* op, const std::string& ctx) {
  if (err == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so later calls are not blamed for it
  fail(op, ctx,
       std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

bool sync_after_ops() {
  static const bool on = [] {
    const char* v = std::getenv("FISDIT_CUDA_SYNC");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return status != cudaStreamCaptureStatusNone;
}

void refuse_in_capture(cudaStream_t stream, const char* op, const std::string& ctx,
                       const char* what) {
  if (!capturing(stream)) return;
  fail(op, ctx,
       std::string(what) +
           " while a graph is recorded: the same work must run once before it is recorded");
}

void check_launch(const char* op, const std::string& ctx, cudaStream_t stream) {
  check(cudaGetLastError(), op, ctx);
  // A recording (Backend::capture) runs nothing to wait for: its replay waits instead.
  if (sync_after_ops() && !capturing(stream))
    check(cudaStreamSynchronize(stream), op, ctx + " (FISDIT_CUDA_SYNC)");
}

EType etype(DType t, const char* op, const char* what) {
  if (t == DType::F32) return EType::F32;
  if (t == DType::BF16) return EType::BF16;
  fail(op, "", std::string(what) + " must be F32 or BF16, got " + std::string(dtype_name(t)));
}

std::string desc(const Tensor& t) {
  return shape_str(t.shape()) + " " + std::string(dtype_name(t.dtype()));
}

void require_device(const Tensor& t, const char* op, const char* what) {
  if (!t.defined()) fail(op, "", std::string(what) + " is undefined");
  if (t.device() != Device::CUDA)
    fail(op, "", std::string(what) + " " + desc(t) + " is not on the GPU");
}

ModArg mod_arg(const ModChunk& m, const char* op) {
  ModArg a;
  if (!m.mod) return a;
  const Tensor& table = m.mod->table;
  require_device(table, op, "modulation table");
  a.table = table.data_as<float>();
  a.chunks = static_cast<int>(table.dim(1));
  a.chunk = m.chunk;
  if (m.mod->token_rows.defined()) {
    const Tensor& rows = m.mod->token_rows;
    require_device(rows, op, "modulation row index");
    a.token_rows = rows.data_as<int32_t>();
  }
  return a;
}

FrameList frame_list(const std::vector<int32_t>& frames, const char* op) {
  require(frames.size() <= static_cast<size_t>(kMaxFrames), op,
          std::to_string(frames.size()) + " frames, the CUDA backend takes at most " +
              std::to_string(kMaxFrames));
  FrameList l;
  l.count = static_cast<int>(frames.size());
  for (size_t i = 0; i < frames.size(); ++i) l.frame[i] = frames[i];
  return l;
}

}  // namespace fisdit::cuda
