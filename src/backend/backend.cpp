#include "backend/backend.h"

#include "fisdit/error.h"

namespace fisdit {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda")
    throw Error(
        "--device cuda: the CUDA backend does not run models yet in this version (its kernels "
        "are being built); use --device cpu");
  throw Error("--device must be cpu or cuda, got '" + device + "'");
}

}  // namespace fisdit
