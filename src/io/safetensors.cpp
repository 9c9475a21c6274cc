#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <system_error>

#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; fisdit reads it in place");

namespace {

using OrderedJson = nlohmann::ordered_json;

// Valid headers nest three levels (object, tensor entry, shape array); anything much deeper is
// hostile, and refusing it up front keeps the JSON library's recursion bounded.
constexpr int kMaxJsonDepth = 16;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what);
}

[[noreturn]] void fail_tensor(const std::string& path, std::string_view name,
                              const std::string& what) {
  throw Error(path + ": tensor " + squoted(name) + ": " + what);
}

// Deepest nesting of arrays/objects in a JSON text (strings skipped), stopping early past `limit`.
int json_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      deepest = std::max(deepest, ++depth);
      if (deepest > limit) return deepest;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return deepest;
}

// Parses the header keeping key order, and reports the first key that repeats within one object.
OrderedJson parse_header(const std::string& path, std::string_view text) {
  // The JSON library stops at a NUL byte as at the end of the input; JSON text never holds one.
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    fail(path, "header is not valid JSON: NUL byte at header offset " + std::to_string(nul));
  if (json_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
    fail(path, "header JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  bool duplicate_is_tensor = false;
  const auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event,
                            OrderedJson& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty() && parsed.is_string()) {
      if (!open_objects.back().insert(parsed.get<std::string>()).second && duplicate.empty()) {
        duplicate = parsed.get<std::string>();
        duplicate_is_tensor = open_objects.size() == 1;
      }
    }
    return true;
  };
  OrderedJson j;
  try {
    j = OrderedJson::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty())
    fail(path, duplicate_is_tensor ? "tensor " + squoted(duplicate) + " is listed twice"
                                   : "header repeats the key " + squoted(duplicate));
  if (!j.is_object())
    fail(path, std::string("header is a JSON ") + j.type_name() + ", not an object");
  return j;
}

// A JSON number that is a non-negative integer, or nullopt.
bool json_unsigned(const OrderedJson& v, uint64_t& out) {
  if (!v.is_number_unsigned()) return false;
  out = v.get<uint64_t>();
  return true;
}

std::string json_excerpt(const OrderedJson& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return printable(s, 60);
}

// Converts n elements; the source must be aligned to its element size.
void to_f32(DType dtype, const void* src, float* dst, size_t n) {
  switch (dtype) {
    case DType::I16: {
      const auto* s = static_cast<const int16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case DType::I8: {
      const auto* s = static_cast<const int8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case DType::U8: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = s[i];
      return;
    }
    case DType::Bool: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = s[i] != 0 ? 1.0f : 0.0f;
      return;
    }
    default:
      convert_to_f32(dtype, src, dst, n);
  }
}

}  // namespace

// The bytes of a file: a read-only mapping, or an owned heap copy.
struct SafetensorsFile::Storage {
  void* addr = nullptr;
  size_t length = 0;
  bool mapped = false;
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (mapped)
      ::munmap(addr, length);
    else
      std::free(addr);
  }
};

SafetensorsFile::~SafetensorsFile() = default;

std::shared_ptr<SafetensorsFile> SafetensorsFile::map_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, "cannot open: " + errno_text(errno));
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "cannot stat: " + errno_text(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a checkpoint file");
  if (!S_ISREG(st.st_mode)) fail(path, "is not a regular file");
  const auto size = static_cast<uint64_t>(st.st_size);
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  if (size == 0) {
    // mmap refuses empty ranges; the parsers report the empty file.
    file->storage_ = std::make_shared<Storage>();
    return file;
  }
  auto storage = std::make_shared<Storage>();
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED)
    fail(path, "cannot map " + std::to_string(size) + " bytes: " + errno_text(errno));
  storage->addr = p;
  storage->length = size;
  storage->mapped = true;
  file->base_ = static_cast<const uint8_t*>(p);
  file->size_ = size;
  file->storage_ = std::move(storage);
  return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::copy_memory(const void* data, size_t size,
                                                              const std::string& name) {
  auto storage = std::make_shared<Storage>();
  const size_t padded = (size / 64 + 1) * 64;
  storage->addr = std::aligned_alloc(64, padded);
  if (!storage->addr) fail(name, "out of memory copying " + std::to_string(size) + " bytes");
  storage->length = padded;
  if (size) std::memcpy(storage->addr, data, size);

  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = name;
  file->base_ = static_cast<const uint8_t*>(storage->addr);
  file->size_ = size;
  file->storage_ = std::move(storage);
  return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto file = map_file(path);
  file->parse();
  return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open_memory(const void* data, size_t size,
                                                              const std::string& name) {
  auto file = copy_memory(data, size, name);
  file->parse();
  return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open_pth(const std::string& path) {
  auto file = map_file(path);
  file->parse_pth();
  return file;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open_pth_memory(const void* data, size_t size,
                                                                  const std::string& name) {
  auto file = copy_memory(data, size, name);
  file->parse_pth();
  return file;
}

void SafetensorsFile::parse() {
  const std::string& path = path_;
  if (size_ < 8)
    fail(path, "file is " + std::to_string(size_) +
                   " bytes, too short for a safetensors header (at least 8)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, base_, 8);
  if (header_len < 2)
    fail(path, "header length " + std::to_string(header_len) +
                   " is too small for a JSON object (at least 2)");
  if (header_len > kMaxHeaderBytes)
    fail(path, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_len > size_ - 8)
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                   std::to_string(size_) + " bytes)");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size_ - data_start;

  const std::string_view text(reinterpret_cast<const char*>(base_ + 8), header_len);
  const OrderedJson header = parse_header(path, text);

  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) in the data section
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        fail(path, std::string("__metadata__ is a JSON ") + entry.type_name() +
                       ", expected an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          fail(path, "__metadata__ value for " + squoted(key) + " is a JSON " + value.type_name() +
                         ", expected a string");
        metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    if (!entry.is_object())
      fail_tensor(path, name,
                  std::string("entry is a JSON ") + entry.type_name() + ", expected an object");
    for (const auto& [key, value] : entry.items()) {
      (void)value;
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        fail_tensor(path, name,
                    "unknown key " + squoted(key) + " (expected only dtype, shape, data_offsets)");
    }
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(key)) fail_tensor(path, name, std::string("missing \"") + key + "\"");

    TensorInfo info;
    info.name = name;
    const auto& dtype = entry["dtype"];
    if (!dtype.is_string())
      fail_tensor(path, name, "dtype " + json_excerpt(dtype) + " is not a string");
    if (!parse_dtype(dtype.get<std::string>(), info.dtype))
      fail_tensor(path, name, "unknown dtype " + squoted(dtype.get<std::string>()));

    const auto& shape = entry["shape"];
    if (!shape.is_array())
      fail_tensor(path, name, "shape " + json_excerpt(shape) + " is not an array");
    int64_t numel = 1;  // product of the non-zero dims: bounds every partial product
    bool empty = false;
    for (const auto& d : shape) {
      uint64_t dim = 0;
      if (!json_unsigned(d, dim))
        fail_tensor(path, name,
                    "shape " + json_excerpt(shape) + " has " + json_excerpt(d) +
                        ", not a non-negative integer");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          (dim != 0 && __builtin_mul_overflow(numel, static_cast<int64_t>(dim), &numel)))
        fail_tensor(path, name, "shape " + json_excerpt(shape) + " has too many elements");
      if (dim == 0) empty = true;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    if (empty) numel = 0;

    const auto& offsets = entry["data_offsets"];
    uint64_t begin = 0, end = 0;
    if (!offsets.is_array() || offsets.size() != 2 || !json_unsigned(offsets[0], begin) ||
        !json_unsigned(offsets[1], end))
      fail_tensor(path, name,
                  "data_offsets " + json_excerpt(offsets) +
                      " is not a pair of non-negative integers [begin, end]");
    if (begin > end)
      fail_tensor(path, name,
                  "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                      "] end before they begin");
    if (end > data_size)
      fail_tensor(path, name,
                  "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                      "] run past the end of the data (" + std::to_string(data_size) + " bytes)");
    uint64_t nbytes = 0;
    const bool too_big =
        __builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(info.dtype), &nbytes);
    if (too_big || nbytes != end - begin)
      fail_tensor(path, name,
                  "shape " + shape_str(info.shape) + " of " + std::string(dtype_name(info.dtype)) +
                      " needs " +
                      (too_big ? std::string("more than 2^64") : std::to_string(nbytes)) +
                      " bytes but data_offsets [" + std::to_string(begin) + ", " +
                      std::to_string(end) + "] hold " + std::to_string(end - begin));
    info.offset = data_start + begin;
    info.nbytes = nbytes;
    ranges.emplace_back(begin, end);
    index_.emplace(info.name, tensors_.size());
    tensors_.push_back(std::move(info));
  }

  // No two tensors may share bytes (zero-size tensors own none).
  std::vector<size_t> order;
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (tensors_[i].nbytes) order.push_back(i);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const size_t prev = order[k - 1], cur = order[k];
    if (ranges[cur].first < ranges[prev].second)
      fail_tensor(path, tensors_[cur].name,
                  "bytes [" + std::to_string(ranges[cur].first) + ", " +
                      std::to_string(ranges[cur].second) + ") overlap tensor " +
                      squoted(tensors_[prev].name) + " at [" + std::to_string(ranges[prev].first) +
                      ", " + std::to_string(ranges[prev].second) + ")");
  }
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::require(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (!info) fail_tensor(path_, name, "not found in the file");
  return *info;
}

Tensor SafetensorsFile::tensor(std::string_view name) const {
  const TensorInfo& info = require(name);
  const uint8_t* p = base_ + info.offset;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(info.dtype) == 0)
    return Tensor::view_of(std::shared_ptr<const void>(storage_), const_cast<uint8_t*>(p),
                           info.shape, info.dtype);
  Tensor copy = Tensor::zeros(info.shape, info.dtype);
  if (info.nbytes) std::memcpy(copy.raw(), p, info.nbytes);
  return copy;
}

Tensor SafetensorsFile::tensor_f32(std::string_view name) const {
  const TensorInfo& info = require(name);
  const Tensor src = tensor(name);  // aligned, in the stored dtype
  Tensor out = Tensor::zeros(info.shape, DType::F32);
  to_f32(info.dtype, src.raw(), out.f32(), static_cast<size_t>(info.numel()));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

struct WritePlan {
  std::string header;         // padded JSON, length a multiple of 8
  std::vector<size_t> order;  // tensors in data order
};

WritePlan plan_write(const std::string& where, const NamedTensors& tensors,
                     const std::map<std::string, std::string>& metadata) {
  std::set<std::string_view> seen;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__")
      fail(where, "\"__metadata__\" is reserved and cannot name a tensor");
    if (!seen.insert(name).second) fail(where, "tensor " + squoted(name) + " is given twice");
    if (t.device() != Device::CPU) fail(where, "tensor " + squoted(name) + " is not on the host");
    if (!t.defined() && t.numel() != 0) fail(where, "tensor " + squoted(name) + " is undefined");
  }
  WritePlan plan;
  plan.order.resize(tensors.size());
  std::iota(plan.order.begin(), plan.order.end(), size_t{0});
  std::stable_sort(plan.order.begin(), plan.order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  std::vector<uint64_t> begin(tensors.size());
  uint64_t offset = 0;
  for (size_t i : plan.order) {
    begin[i] = offset;
    offset += tensors[i].second.nbytes();
  }

  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i].second;
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = std::string(dtype_name(t.dtype()));
    entry["shape"] = t.shape();
    entry["data_offsets"] = {begin[i], begin[i] + t.nbytes()};
    header[tensors[i].first] = std::move(entry);
  }
  try {
    plan.header = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(where, std::string("cannot encode the header: ") + e.what());
  }
  plan.header.append((8 - plan.header.size() % 8) % 8, ' ');
  return plan;
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const NamedTensors& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  const WritePlan plan = plan_write("<memory>", tensors, metadata);
  uint64_t total = 8 + plan.header.size();
  for (const auto& [name, t] : tensors) total += t.nbytes();
  std::vector<uint8_t> out(total);
  const uint64_t n = plan.header.size();
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, plan.header.data(), plan.header.size());
  uint64_t pos = 8 + n;
  for (size_t i : plan.order) {
    const Tensor& t = tensors[i].second;
    if (t.nbytes()) std::memcpy(out.data() + pos, t.raw(), t.nbytes());
    pos += t.nbytes();
  }
  return out;
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const WritePlan plan = plan_write(path, tensors, metadata);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path, "cannot open for writing: " + errno_text(errno));
  bool ok = true;
  int err = 0;
  const auto put = [&](const void* p, size_t n) {
    if (ok && n && std::fwrite(p, 1, n, f) != n) {
      ok = false;
      err = errno;
    }
  };
  const uint64_t n = plan.header.size();
  put(&n, 8);
  put(plan.header.data(), plan.header.size());
  for (size_t i : plan.order) put(tensors[i].second.raw(), tensors[i].second.nbytes());
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(path.c_str());
    fail(path, "write failed: " + errno_text(err));
  }
}

}  // namespace fisdit
