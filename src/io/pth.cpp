// SafetensorsFile::parse_pth: a torch.save zip archive as a tensor file (see io/safetensors.h).
#include <algorithm>
#include <map>
#include <string_view>

#include "fisdit/error.h"
#include "io/safetensors.h"
#include "io/text.h"
#include "io/torch_pickle.h"
#include "io/zip.h"

namespace fisdit {

namespace {

// A state dict's pickle is ~100 bytes per tensor; anything near this is not a state dict.
constexpr uint64_t kMaxPickleBytes = 256ull << 20;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& path, std::string_view name,
                              const std::string& what) {
  throw Error(path + ": tensor " + squoted(name) + ": " + what);
}

std::string ints_str(const std::vector<int64_t>& v) { return shape_str(v); }

// Row-major strides of `shape`, ignoring dimensions of size 1 (their stride is arbitrary).
bool contiguous(const Shape& shape, const std::vector<int64_t>& stride) {
  int64_t expected = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] != 1 && stride[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

}  // namespace

void SafetensorsFile::parse_pth() {
  format_ = Format::PyTorchZip;
  const std::string& path = path_;
  if (size_ == 0) fail(path, "file is empty, not a PyTorch checkpoint");
  if (!looks_like_zip(base_, size_)) {
    if (base_[0] == 0x80 && size_ > 1 && base_[1] <= 5)
      fail(path,
           "is a legacy (non-zip) PyTorch pickle; fisdit reads the zip format torch.save writes "
           "since torch 1.6: re-save it, or convert it to safetensors");
    fail(path, "is not a PyTorch checkpoint (expected a zip archive as torch.save writes)");
  }
  const std::vector<ZipEntry> entries = read_zip_directory(base_, size_, path);
  std::map<std::string_view, const ZipEntry*> by_name;
  for (const ZipEntry& e : entries) by_name.emplace(e.name, &e);

  // torch.save puts every record under one top-level folder, <archive>/.
  const ZipEntry* pickle = nullptr;
  for (const ZipEntry& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash == std::string::npos || slash == 0 || e.name.substr(slash + 1) != "data.pkl")
      continue;
    if (pickle)
      fail(path, "holds two pickles, " + squoted(pickle->name) + " and " + squoted(e.name) +
                     " (not a single torch.save archive)");
    pickle = &e;
  }
  if (!pickle)
    fail(path,
         "zip archive has no <archive>/data.pkl entry: not a torch.save checkpoint (TorchScript "
         "archives and other zips are not state dicts)");
  const std::string prefix = pickle->name.substr(0, pickle->name.size() - 8);  // "<archive>/"

  if (const auto it = by_name.find(prefix + "byteorder"); it != by_name.end()) {
    const ZipEntry& e = *it->second;
    const std::string_view order(reinterpret_cast<const char*>(base_ + e.data_offset),
                                 static_cast<size_t>(std::min<uint64_t>(e.size, 16)));
    if (order == "big")
      fail(path, "was saved on a big-endian machine; fisdit reads little-endian checkpoints only");
    if (order != "little")
      fail(path, "byteorder record says " + squoted(order) + ", expected 'little'");
  }

  if (pickle->size > kMaxPickleBytes)
    fail(path, squoted(pickle->name) + " is " + std::to_string(pickle->size) +
                   " bytes, too large for a state dict pickle");
  const uint8_t* pkl = base_ + pickle->data_offset;
  if (crc32(pkl, static_cast<size_t>(pickle->size)) != pickle->crc32)
    fail(path, squoted(pickle->name) + " fails its CRC check (corrupt file)");
  const TorchStateDict sd =
      read_torch_pickle(pkl, static_cast<size_t>(pickle->size), path + ": " + pickle->name);
  if (sd.tensors.empty()) fail(path, "the state dict holds no tensors");

  // Storage bytes: <archive>/data/<key>, exactly numel * itemsize.
  std::vector<const ZipEntry*> storage_entry(sd.storages.size(), nullptr);
  for (const TorchTensor& t : sd.tensors) {
    if (storage_entry[t.storage]) continue;
    const TorchStorage& s = sd.storages[t.storage];
    const std::string record = prefix + "data/" + s.key;
    const auto it = by_name.find(record);
    if (it == by_name.end())
      fail_tensor(path, t.name,
                  "its storage " + squoted(s.key) + " has no archive entry " + squoted(record));
    if (it->second->size != s.nbytes())
      fail_tensor(path, t.name,
                  "its storage " + squoted(s.key) + " should hold " + std::to_string(s.nbytes()) +
                      " bytes (" + std::to_string(s.numel) +
                      (s.dtype ? " x " + std::string(dtype_name(*s.dtype)) : " bytes, untyped") +
                      ") but its archive entry holds " + std::to_string(it->second->size));
    storage_entry[t.storage] = it->second;
  }

  for (const TorchTensor& t : sd.tensors) {
    const TorchStorage& s = sd.storages[t.storage];
    const ZipEntry& e = *storage_entry[t.storage];
    if (t.stride.size() != t.shape.size())
      fail_tensor(path, t.name,
                  "stride " + ints_str(t.stride) + " does not match size " + shape_str(t.shape));
    int64_t numel = 1;
    for (int64_t d : t.shape)
      if (__builtin_mul_overflow(numel, d, &numel))
        fail_tensor(path, t.name, "size " + shape_str(t.shape) + " has too many elements");
    const uint64_t item = dtype_size(t.dtype);
    uint64_t nbytes = 0, offset_bytes = 0;
    if (__builtin_mul_overflow(static_cast<uint64_t>(numel), item, &nbytes) ||
        __builtin_mul_overflow(static_cast<uint64_t>(t.storage_offset), item, &offset_bytes))
      fail_tensor(path, t.name, "size or storage offset overflows");
    if (numel > 0 && !contiguous(t.shape, t.stride))
      fail_tensor(path, t.name,
                  "is a strided view (size " + shape_str(t.shape) + ", stride " +
                      ints_str(t.stride) +
                      "); fisdit reads contiguous tensors only: save tensor.contiguous()");
    if (numel > 0 && (offset_bytes > s.nbytes() || nbytes > s.nbytes() - offset_bytes))
      fail_tensor(path, t.name,
                  "elements [" + std::to_string(t.storage_offset) + ", +" + std::to_string(numel) +
                      ") of " + std::string(dtype_name(t.dtype)) +
                      " run past the end of its storage " + squoted(s.key) + " (" +
                      std::to_string(s.nbytes()) + " bytes)");
    TensorInfo info;
    info.name = t.name;
    info.dtype = t.dtype;
    info.shape = t.shape;
    info.offset = e.data_offset + (numel > 0 ? offset_bytes : 0);
    info.nbytes = nbytes;
    index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }
}

}  // namespace fisdit
