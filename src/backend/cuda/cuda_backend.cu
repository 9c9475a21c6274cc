#include <cuda_runtime.h>

#include <string>

#include "backend/cuda/cuda_backend.h"
#include "fisdit/error.h"

namespace fisdit {

std::unique_ptr<Backend> make_cuda_backend() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0)
    throw Error(std::string("--device cuda: no usable CUDA GPU (") + cudaGetErrorString(err) + ")");
  throw Error("--device cuda: the CUDA backend's model ops are not implemented yet; use --device cpu");
}

}  // namespace fisdit
