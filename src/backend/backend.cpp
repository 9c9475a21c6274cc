#include "backend/backend.h"

#include "fisdit/error.h"

namespace fisdit {

namespace {
BackendFactory& cuda_factory() {
  static BackendFactory factory = nullptr;
  return factory;
}
}  // namespace

void register_cuda_backend(BackendFactory factory) { cuda_factory() = factory; }

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend();
  if (device == "cuda") {
    if (!cuda_factory())
      throw Error("--device cuda: this fisdit was built without the CUDA backend (nvcc was not "
                  "found at configure time); rebuild with the CUDA toolkit or use --device cpu");
    return cuda_factory()();
  }
  throw Error("--device must be cpu or cuda, got '" + device + "'");
}

}  // namespace fisdit
