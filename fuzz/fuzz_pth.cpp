// libFuzzer target for the PyTorch zip checkpoint reader (zip directory + restricted unpickler).
// Every input must either be rejected with fisdit::Error or parse into tensors whose bytes lie
// inside the input and can all be read and converted to F32. See fuzz/README.md.
#include <cstdint>
#include <cstdlib>

#include "fisdit/error.h"
#include "io/safetensors.h"

namespace {

constexpr uint64_t kMaxConvertBytes = 1 << 20;
volatile uint8_t g_sink;  // keeps the byte reads from being optimised away

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<fisdit::SafetensorsFile> file;
  try {
    file = fisdit::SafetensorsFile::open_pth_memory(data, size, "fuzz-input");
  } catch (const fisdit::Error&) {
    return 0;  // rejected cleanly
  }
  check(!file->tensors().empty());
  for (const fisdit::TensorInfo& info : file->tensors()) {
    check(file->find(info.name) == &info);
    check(info.offset <= file->file_size() && info.nbytes <= file->file_size() - info.offset);
    check(info.nbytes == static_cast<uint64_t>(info.numel()) * fisdit::dtype_size(info.dtype));
    const fisdit::Tensor t = file->tensor(info.name);
    check(t.nbytes() == info.nbytes && t.shape() == info.shape);
    const auto* bytes = static_cast<const uint8_t*>(t.raw());
    uint8_t sum = 0;
    for (uint64_t i = 0; i < info.nbytes; ++i) sum = static_cast<uint8_t>(sum + bytes[i]);
    g_sink = sum;
    if (info.nbytes <= kMaxConvertBytes) check(file->tensor_f32(info.name).numel() == t.numel());
  }
  return 0;
}
