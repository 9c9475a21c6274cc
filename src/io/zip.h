#pragma once
// A minimal reader of a zip archive's central directory (PKWARE APPNOTE 6.3, sections 4.3-4.5),
// enough for the archives torch.save writes: every entry stored (uncompressed), one disk, zip64
// records when the archive passes 4 GiB. Entries are located, never extracted: an entry's bytes
// are read in place from the caller's memory (an mmap'ed file).
//
// Every offset and size is checked against the archive before it is returned: the end record
// must end the file exactly, the central directory must lie before it, every local header and
// its data must lie before the central directory without overlapping another entry, and the
// local header must repeat the central directory's name and method. Refused with a
// fisdit::Error naming the archive (and the entry): compressed or encrypted entries, archives
// split over several disks, duplicate names. CRCs are not checked here (they would read every
// byte of a multi-gigabyte checkpoint at open); crc32() lets a caller check small entries.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fisdit {

struct ZipEntry {
  std::string name;
  uint64_t header_offset = 0;  // its local file header, from the start of the archive
  uint64_t data_offset = 0;    // first byte of the entry's data, from the start of the archive
  uint64_t size = 0;           // bytes of data (stored entries: compressed size == size)
  uint32_t crc32 = 0;          // as the central directory records it
};

// The entries of the archive held in data[0, size), in central directory order. `path` names
// the archive in error messages.
std::vector<ZipEntry> read_zip_directory(const uint8_t* data, uint64_t size,
                                         const std::string& path);

// True when the bytes start like a zip archive (a local file header or an empty archive).
bool looks_like_zip(const uint8_t* data, uint64_t size);

// The CRC-32 (ISO-HDLC, as zip uses) of n bytes.
uint32_t crc32(const uint8_t* data, size_t n);

}  // namespace fisdit
