#pragma once
// Reading and writing safetensors files (https://github.com/huggingface/safetensors, format:
// u64 little-endian header length N, N bytes of JSON header, then the data section), and reading
// PyTorch zip checkpoints (torch.save, torch >= 1.6: `.pth`, `.pt`, `.bin`, `.ckpt`) as the same
// kind of tensor file.
//
// SafetensorsFile maps a file read-only and validates the whole header before anything is
// returned: every tensor's dtype, shape, byte range and size, no overlapping ranges, and string
// metadata. Every violation throws fisdit::Error naming the file (and the tensor when there is
// one). Nothing read from the file is trusted past validation: a hostile file can make open()
// throw but never read out of bounds. Also refused: duplicate keys, NUL bytes or nesting deeper
// than 16 in the header. Accepted: unused bytes between tensors (the reference reader requires
// the data to be packed; fisdit only requires ranges not to overlap).
//
// open_pth() reads a torch.save archive instead (io/zip.h, io/torch_pickle.h): the state dict's
// tensors become TensorInfo entries pointing at their bytes inside the archive's stored
// `<archive>/data/<key>` entries, so tensor() is zero-copy there too. Checked: the zip
// structure, `byteorder` (little), every storage entry's size against its numel * itemsize, and
// every tensor's extent against its storage. Tensors may share a storage (views with a
// storage_offset), so their ranges may overlap. Strided (non-contiguous) tensors are refused
// naming the tensor. A .pth has no metadata: metadata() is empty.
//
// The mapping is shared: Tensor views returned by tensor() keep the file mapped after the
// SafetensorsFile handle is gone. Views point into read-only memory: never write through them.
// If the file is truncated by another process while mapped, reads of the lost pages raise
// SIGBUS; fisdit cannot guard against that.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace fisdit {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t offset = 0;  // byte offset of the first element from the start of the file
  uint64_t nbytes = 0;  // == numel() * dtype_size(dtype)
  int64_t numel() const { return shape_numel(shape); }
};

class SafetensorsFile {
 public:
  // Largest header accepted (the reference implementation's limit).
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  // Maps `path` read-only and validates it.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);
  // Parses a safetensors image held in memory (the bytes are copied). `name` stands for the path
  // in error messages and path().
  static std::shared_ptr<SafetensorsFile> open_memory(const void* data, size_t size,
                                                      const std::string& name = "<memory>");
  // Maps a PyTorch zip checkpoint (torch.save) read-only and validates it; see above.
  static std::shared_ptr<SafetensorsFile> open_pth(const std::string& path);
  // The same for an image held in memory (the bytes are copied).
  static std::shared_ptr<SafetensorsFile> open_pth_memory(const void* data, size_t size,
                                                          const std::string& name = "<memory>");

  enum class Format : uint8_t { Safetensors, PyTorchZip };
  Format format() const { return format_; }

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  // Tensors in header order (the order of the JSON object in the file; a .pth: state dict order).
  // `__metadata__` is not a tensor and is not listed.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when the file has no tensor of that name.
  const TensorInfo* find(std::string_view name) const;
  bool contains(std::string_view name) const { return find(name) != nullptr; }

  // The tensor in its stored dtype. Zero-copy (a view into the mapping) when its data is aligned
  // to the element size, which holds for files whose header length is a multiple of 8, as every
  // standard writer makes them; otherwise an aligned host copy. Throws when absent.
  Tensor tensor(std::string_view name) const;
  // A host F32 copy converted from any dtype (floats exactly, integers and BOOL by value).
  Tensor tensor_f32(std::string_view name) const;

  // The `__metadata__` map (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Storage;
  SafetensorsFile() = default;
  static std::shared_ptr<SafetensorsFile> map_file(const std::string& path);
  static std::shared_ptr<SafetensorsFile> copy_memory(const void* data, size_t size,
                                                      const std::string& name);
  void parse();
  void parse_pth();  // io/pth.cpp
  const TensorInfo& require(std::string_view name) const;

  std::string path_;
  Format format_ = Format::Safetensors;
  std::shared_ptr<const Storage> storage_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes host tensors in their own dtype: 8-byte header length, the JSON header padded with
// spaces to a multiple of 8, then the data with no gaps. The header lists the tensors in the
// given order; the data section places wider dtypes first so every tensor is aligned to its
// element size. Throws fisdit::Error naming the path on bad input (duplicate or reserved names,
// undefined or device tensors) and on any I/O failure; a partly written file is removed.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// The same file image in memory.
std::vector<uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

}  // namespace fisdit
