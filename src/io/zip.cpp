#include "io/zip.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <utility>

#include "fisdit/error.h"
#include "io/text.h"

namespace fisdit {

namespace {

// Record signatures (APPNOTE 4.3.7, 4.3.12, 4.3.14, 4.3.15, 4.3.16).
constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;

constexpr uint64_t kLocalHeaderBytes = 30;
constexpr uint64_t kCentralHeaderBytes = 46;
constexpr uint64_t kEndBytes = 22;
constexpr uint64_t kZip64EndBytes = 56;
constexpr uint64_t kZip64LocatorBytes = 20;
constexpr uint64_t kMaxCommentBytes = 0xffff;

constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kFlagEncrypted = 1u << 0;
constexpr uint16_t kFlagStrongEncryption = 1u << 6;

uint16_t u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

std::string method_name(uint16_t method) {
  switch (method) {
    case 8:
      return "deflate";
    case 9:
      return "deflate64";
    case 12:
      return "bzip2";
    case 14:
      return "lzma";
    case 93:
      return "zstd";
    case 95:
      return "xz";
    default:
      return "method " + std::to_string(method);
  }
}

class DirectoryReader {
 public:
  DirectoryReader(const uint8_t* data, uint64_t size, const std::string& path)
      : data_(data), size_(size), path_(path) {}

  std::vector<ZipEntry> read() {
    locate_end();
    std::vector<ZipEntry> entries;
    entries.reserve(static_cast<size_t>(entry_count_));
    std::vector<std::pair<uint64_t, uint64_t>> extents;  // [local header, end of data)
    std::set<std::string, std::less<>> names;
    uint64_t pos = cd_offset_;
    const uint64_t cd_end = cd_offset_ + cd_size_;
    for (uint64_t i = 0; i < entry_count_; ++i) {
      ZipEntry e = read_central(pos, cd_end, i);
      if (!names.insert(e.name).second)
        fail("entry " + squoted(e.name) + " appears twice in the central directory");
      extents.emplace_back(e.header_offset, e.data_offset + e.size);
      entries.push_back(std::move(e));
    }
    if (pos != cd_end)
      fail("central directory holds " + std::to_string(cd_end - pos) +
           " bytes after its last entry (corrupt directory)");
    std::sort(extents.begin(), extents.end());
    for (size_t k = 1; k < extents.size(); ++k)
      if (extents[k].first < extents[k - 1].second)
        fail("entries overlap: a local header at byte " + std::to_string(extents[k].first) +
             " lies inside the previous entry (ending at byte " +
             std::to_string(extents[k - 1].second) + ")");
    return entries;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(path_ + ": bad zip archive: " + what);
  }

  // The end of central directory record, and the zip64 one when present.
  void locate_end() {
    if (size_ < kEndBytes)
      fail("file is " + std::to_string(size_) + " bytes, too short for a zip archive (at least " +
           std::to_string(kEndBytes) + ")");
    const uint64_t lowest =
        size_ - kEndBytes > kMaxCommentBytes ? size_ - kEndBytes - kMaxCommentBytes : 0;
    uint64_t end = 0;
    bool found = false;
    for (uint64_t p = size_ - kEndBytes + 1; p-- > lowest;) {
      if (u32(data_ + p) == kEndSig && p + kEndBytes + u16(data_ + p + 20) == size_) {
        end = p;
        found = true;
        break;
      }
    }
    if (!found)
      fail("no end of central directory record at the end of the file (truncated, or not a zip)");
    const uint8_t* r = data_ + end;
    const uint16_t disk = u16(r + 4), cd_disk = u16(r + 6);
    const uint16_t disk_entries = u16(r + 8), total_entries = u16(r + 10);
    const uint32_t cd_size = u32(r + 12), cd_offset = u32(r + 16);
    entry_count_ = total_entries;
    cd_size_ = cd_size;
    cd_offset_ = cd_offset;
    uint64_t cd_limit = end;  // the central directory ends before this

    const bool has_locator =
        end >= kZip64LocatorBytes && u32(data_ + end - kZip64LocatorBytes) == kZip64LocatorSig;
    if (has_locator) {
      const uint8_t* loc = data_ + end - kZip64LocatorBytes;
      const uint32_t z64_disk = u32(loc + 4), disks = u32(loc + 16);
      const uint64_t z64_end = u64(loc + 8);
      if (z64_disk != 0 || disks > 1)
        fail("archive spans " + std::to_string(disks) + " disks; only single-file archives");
      const uint64_t limit = end - kZip64LocatorBytes;
      if (z64_end > limit || limit - z64_end < kZip64EndBytes)
        fail("zip64 end record offset " + std::to_string(z64_end) + " is outside the file");
      const uint8_t* z = data_ + z64_end;
      if (u32(z) != kZip64EndSig)
        fail("no zip64 end of central directory record at byte " + std::to_string(z64_end));
      const uint64_t record = u64(z + 4);
      if (record < kZip64EndBytes - 12 || record > limit - z64_end - 12)
        fail("zip64 end record claims " + std::to_string(record) + " bytes, past its locator");
      if (u32(z + 16) != 0 || u32(z + 20) != 0 || u64(z + 24) != u64(z + 32))
        fail("archive spans several disks; only single-file archives");
      entry_count_ = u64(z + 32);
      cd_size_ = u64(z + 40);
      cd_offset_ = u64(z + 48);
      cd_limit = z64_end;
    } else {
      if (disk != 0 || cd_disk != 0 || disk_entries != total_entries)
        fail("archive spans several disks; only single-file archives");
      if (total_entries == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu)
        fail("end record defers to zip64 records, but there are none");
    }
    if (cd_offset_ > cd_limit || cd_size_ > cd_limit - cd_offset_)
      fail("central directory [" + std::to_string(cd_offset_) + ", +" + std::to_string(cd_size_) +
           ") runs past its end record at byte " + std::to_string(cd_limit));
    if (entry_count_ > cd_size_ / kCentralHeaderBytes)
      fail(std::to_string(entry_count_) + " entries cannot fit in a central directory of " +
           std::to_string(cd_size_) + " bytes");
  }

  // One central directory file header at `pos` (advanced past it), with its local header checked.
  ZipEntry read_central(uint64_t& pos, uint64_t cd_end, uint64_t index) {
    const std::string which = "central directory entry " + std::to_string(index);
    if (cd_end - pos < kCentralHeaderBytes) fail(which + " runs past the directory's end");
    const uint8_t* h = data_ + pos;
    if (u32(h) != kCentralHeaderSig)
      fail(which + " at byte " + std::to_string(pos) + " has no central header signature");
    const uint16_t flags = u16(h + 8), method = u16(h + 10);
    const uint32_t crc = u32(h + 16);
    uint64_t compressed = u32(h + 20), size = u32(h + 24);
    const uint16_t name_len = u16(h + 28), extra_len = u16(h + 30), comment_len = u16(h + 32);
    uint32_t disk = u16(h + 34);
    uint64_t local = u32(h + 42);
    const uint64_t var_len = uint64_t{name_len} + extra_len + comment_len;
    if (cd_end - pos - kCentralHeaderBytes < var_len)
      fail(which + ": name, extra field and comment run past the directory's end");
    ZipEntry e;
    e.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderBytes), name_len);
    e.crc32 = crc;
    const std::string entry = "entry " + squoted(e.name);

    // Zip64 extended information: the 8-byte values of the fields saturated above, in order.
    const bool need_size = size == 0xffffffffu, need_compressed = compressed == 0xffffffffu,
               need_local = local == 0xffffffffu, need_disk = disk == 0xffffu;
    if (need_size || need_compressed || need_local || need_disk) {
      const uint8_t* x = h + kCentralHeaderBytes + name_len;
      const uint8_t* x_end = x + extra_len;
      bool found = false;
      while (x_end - x >= 4) {
        const uint16_t id = u16(x), len = u16(x + 2);
        if (x_end - x - 4 < len) fail(entry + ": extra field runs past its declared length");
        if (id == kZip64ExtraId) {
          const uint64_t needed = 8u * (need_size + need_compressed + need_local) + 4u * need_disk;
          if (len < needed)
            fail(entry + ": zip64 extra field has " + std::to_string(len) + " bytes, needs " +
                 std::to_string(needed));
          const uint8_t* v = x + 4;
          if (need_size) {
            size = u64(v);
            v += 8;
          }
          if (need_compressed) {
            compressed = u64(v);
            v += 8;
          }
          if (need_local) {
            local = u64(v);
            v += 8;
          }
          if (need_disk) disk = u32(v);
          found = true;
          break;
        }
        x += 4 + len;
      }
      if (!found) fail(entry + ": sizes defer to a zip64 extra field, but there is none");
    }
    if (disk != 0) fail(entry + " starts on disk " + std::to_string(disk));
    if (flags & (kFlagEncrypted | kFlagStrongEncryption)) fail(entry + " is encrypted");
    if (method != 0)
      fail(entry + " is compressed (" + method_name(method) +
           "); only stored (uncompressed) entries are read, as torch.save writes them");
    if (compressed != size)
      fail(entry + " is stored but its compressed size " + std::to_string(compressed) +
           " differs from its size " + std::to_string(size));

    // The local header: same name and method; its data must end before the central directory.
    if (local > cd_offset_ || cd_offset_ - local < kLocalHeaderBytes)
      fail(entry + ": local header offset " + std::to_string(local) +
           " is not before the central directory (byte " + std::to_string(cd_offset_) + ")");
    const uint8_t* l = data_ + local;
    if (u32(l) != kLocalHeaderSig)
      fail(entry + ": no local header signature at byte " + std::to_string(local));
    const uint16_t local_name_len = u16(l + 26), local_extra_len = u16(l + 28);
    const uint64_t data_offset = local + kLocalHeaderBytes + local_name_len + local_extra_len;
    if (data_offset > cd_offset_ || size > cd_offset_ - data_offset)
      fail(entry + ": data [" + std::to_string(data_offset) + ", +" + std::to_string(size) +
           ") runs into the central directory at byte " + std::to_string(cd_offset_) +
           " (truncated or corrupt archive)");
    if (local_name_len != name_len || std::memcmp(l + kLocalHeaderBytes, e.name.data(), name_len))
      fail(entry + ": the local header names a different file");
    if (u16(l + 8) != method) fail(entry + ": the local header gives a different method");
    e.data_offset = data_offset;
    e.size = size;
    e.header_offset = local;
    pos += kCentralHeaderBytes + var_len;
    return e;
  }

  const uint8_t* data_;
  uint64_t size_;
  const std::string& path_;
  uint64_t entry_count_ = 0, cd_size_ = 0, cd_offset_ = 0;
};

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

}  // namespace

std::vector<ZipEntry> read_zip_directory(const uint8_t* data, uint64_t size,
                                         const std::string& path) {
  return DirectoryReader(data, size, path).read();
}

bool looks_like_zip(const uint8_t* data, uint64_t size) {
  return size >= 4 && (u32(data) == kLocalHeaderSig || u32(data) == kEndSig);
}

uint32_t crc32(const uint8_t* data, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) c = kCrcTable[(c ^ data[i]) & 0xffu] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

}  // namespace fisdit
