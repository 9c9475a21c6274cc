#include "models/model.h"

#include "fisdit/error.h"

namespace fisdit::models {

const char* task_name(Task task) {
  switch (task) {
    case Task::T2V:
      return "t2v";
    case Task::I2V:
      return "i2v";
    case Task::TI2V:
      return "ti2v";
  }
  return "?";
}

std::optional<Task> parse_task(std::string_view name) {
  for (Task t : {Task::T2V, Task::I2V, Task::TI2V})
    if (name == task_name(t)) return t;
  return std::nullopt;
}

LatentGrid ModelInfo::latent_grid(int width, int height, int frames) const {
  const int st = vae_stride[0];
  if (frames < 1 || (frames - 1) % st != 0)
    throw ParamError("frames", " " + std::to_string(frames) + ": must be " + std::to_string(st) +
                                   "k+1 (e.g. 81 or 121): the VAE turns " + std::to_string(st) +
                                   " frames into one latent frame after the first");
  const int cell_h = vae_stride[1] * patch[1], cell_w = vae_stride[2] * patch[2];
  if (width < cell_w || height < cell_h || width % cell_w != 0 || height % cell_h != 0)
    throw ParamError(
        "size", " " + std::to_string(width) + "x" + std::to_string(height) +
                    ": width must be a positive multiple of " + std::to_string(cell_w) +
                    " and height of " + std::to_string(cell_h) + " for this model (VAE stride " +
                    std::to_string(vae_stride[1]) + " x patch " + std::to_string(patch[1]) + ")");
  return {1 + (frames - 1) / st, height / vae_stride[1], width / vae_stride[2]};
}

Tensor concat_channels(Backend& backend, const Tensor& a, const Tensor& b) {
  Shape sa(a.shape().begin() + 1, a.shape().end()), sb(b.shape().begin() + 1, b.shape().end());
  if (a.ndim() < 1 || sa != sb || a.dtype() != b.dtype())
    throw Error("cannot concatenate " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                " on channels");
  Shape out_shape = a.shape();
  out_shape[0] += b.dim(0);
  Tensor out = backend.empty(out_shape, a.dtype());
  Tensor head = out.slice_rows(0, a.dim(0)), tail = out.slice_rows(a.dim(0), out_shape[0]);
  backend.copy(a, head);
  backend.copy(b, tail);
  return out;
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::Default:
      return "bf16";
    case Precision::Fp8:
      return "fp8";
    case Precision::Fp8Gemm:
      return "fp8-gemm";
  }
  return "?";
}

std::optional<Precision> parse_precision(std::string_view name) {
  for (Precision p : {Precision::Default, Precision::Fp8, Precision::Fp8Gemm})
    if (name == precision_name(p)) return p;
  return std::nullopt;
}

}  // namespace fisdit::models
