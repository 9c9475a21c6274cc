#pragma once
// The CUDA backend (Hopper-first): cuBLASLt GEMMs, cuDNN attention, own fused kernels.
#include <memory>

#include "backend/backend.h"

namespace fisdit {
// Throws fisdit::Error when no usable GPU is present.
std::unique_ptr<Backend> make_cuda_backend();
}  // namespace fisdit
