// libFuzzer target for the safetensors parser. Every input must either be rejected with
// fisdit::Error or parse into tensors that can all be read, converted to F32, written back and
// parsed again to the same thing. See fuzz/README.md for the command line.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "fisdit/error.h"
#include "io/safetensors.h"

namespace {

constexpr uint64_t kMaxConvertBytes = 1 << 20;
volatile uint8_t g_sink;  // keeps the byte reads from being optimised away

// A property the parser promised and broke: crash so libFuzzer records the input.
void check(bool ok) {
  if (!ok) std::abort();
}

void exercise(const fisdit::SafetensorsFile& file) {
  fisdit::NamedTensors all;
  for (const fisdit::TensorInfo& info : file.tensors()) {
    check(file.find(info.name) == &info);
    check(info.offset + info.nbytes <= file.file_size());
    const fisdit::Tensor t = file.tensor(info.name);
    check(t.nbytes() == info.nbytes && t.shape() == info.shape);
    const auto* bytes = static_cast<const uint8_t*>(t.raw());
    uint8_t sum = 0;
    for (uint64_t i = 0; i < info.nbytes; ++i) sum = static_cast<uint8_t>(sum + bytes[i]);
    g_sink = sum;
    if (info.nbytes <= kMaxConvertBytes) {
      const fisdit::Tensor f = file.tensor_f32(info.name);
      check(f.numel() == t.numel());
    }
    all.emplace_back(info.name, t);
  }

  // Round trip: what was accepted must be writable, and read back identically.
  std::vector<uint8_t> image;
  try {
    image = fisdit::serialize_safetensors(all, file.metadata());
  } catch (const fisdit::Error&) {
    check(false);
  }
  const auto again = fisdit::SafetensorsFile::open_memory(image.data(), image.size(), "again");
  check(again->tensors().size() == all.size());
  check(again->metadata() == file.metadata());
  for (size_t i = 0; i < all.size(); ++i) {
    const fisdit::TensorInfo& a = again->tensors()[i];
    check(a.name == all[i].first && a.dtype == all[i].second.dtype() &&
          a.shape == all[i].second.shape());
    const fisdit::Tensor b = again->tensor(a.name);
    check(a.nbytes == 0 || std::memcmp(b.raw(), all[i].second.raw(), a.nbytes) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<fisdit::SafetensorsFile> file;
  try {
    file = fisdit::SafetensorsFile::open_memory(data, size, "fuzz-input");
  } catch (const fisdit::Error&) {
    return 0;  // rejected cleanly
  }
  exercise(*file);
  return 0;
}
