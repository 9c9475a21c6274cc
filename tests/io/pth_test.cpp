// PyTorch zip checkpoints (torch.save): the fixtures of tests/data/pth (written by
// tools/fixtures/gen_pth_fixtures.py with torch) read back exactly, and damaged copies (made here
// by byte edits) are refused with errors naming the file, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/zip.h"
#include "io_test_util.h"

namespace fisdit {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::TempDir;
using iotest::write_bytes;

std::string pth_path(const std::string& name) {
  return std::string(FISDIT_TEST_DATA) + "/pth/" + name;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string bytes_of(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}

// Every tensor of `twin` is in `file` with the same dtype, shape and bytes.
void expect_same_tensors(const SafetensorsFile& file, const SafetensorsFile& twin,
                         const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const TensorInfo* a = file.find(name);
    const TensorInfo* b = twin.find(name);
    ASSERT_NE(a, nullptr);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(a->dtype, b->dtype);
    EXPECT_EQ(a->shape, b->shape);
    EXPECT_EQ(bytes_of(file.tensor(name)), bytes_of(twin.tensor(name)));
    EXPECT_EQ(file.tensor_f32(name).to_vector(), twin.tensor_f32(name).to_vector());
  }
}

std::vector<std::string> names_of(const SafetensorsFile& f) {
  std::vector<std::string> out;
  for (const TensorInfo& t : f.tensors()) out.push_back(t.name);
  return out;
}

const std::vector<std::string> kStateDictNames = {
    "f32", "bf16", "f16", "f8", "i64", "scalar", "empty", "shared.base", "shared.view"};

TEST(PthTest, StateDictEqualsItsSafetensorsTwin) {
  const auto pth = SafetensorsFile::open_pth(pth_path("state_dict.pth"));
  const auto twin = SafetensorsFile::open(pth_path("state_dict.safetensors"));
  EXPECT_EQ(pth->format(), SafetensorsFile::Format::PyTorchZip);
  EXPECT_EQ(twin->format(), SafetensorsFile::Format::Safetensors);
  EXPECT_EQ(names_of(*pth), kStateDictNames);  // state dict order
  expect_same_tensors(*pth, *twin, kStateDictNames);
  EXPECT_TRUE(pth->metadata().empty());
  EXPECT_EQ(pth->find("scalar")->shape, Shape{});
  EXPECT_EQ(pth->find("empty")->shape, (Shape{0, 3}));
  EXPECT_EQ(pth->find("f8")->dtype, DType::F8_E4M3);
  // The view shares the base's storage, 6 elements in, and the tensors are views of the mapping.
  const TensorInfo* base = pth->find("shared.base");
  const TensorInfo* view = pth->find("shared.view");
  EXPECT_EQ(view->offset, base->offset + 6 * 4);
  EXPECT_EQ(pth->tensor("shared.view").raw(),
            static_cast<const uint8_t*>(pth->tensor("shared.base").raw()) + 24);
  EXPECT_EQ(base->offset % 64, 0u);  // torch.save aligns storages to 64 bytes
}

TEST(PthTest, Zip64ArchiveReadsTheSame) {
  const auto pth = SafetensorsFile::open_pth(pth_path("zip64.pth"));
  const auto twin = SafetensorsFile::open(pth_path("state_dict.safetensors"));
  EXPECT_EQ(names_of(*pth), kStateDictNames);
  expect_same_tensors(*pth, *twin, kStateDictNames);
}

TEST(PthTest, NestedStateDictIsUnwrapped) {
  const auto pth = SafetensorsFile::open_pth(pth_path("nested.pth"));
  const auto twin = SafetensorsFile::open(pth_path("state_dict.safetensors"));
  EXPECT_EQ(names_of(*pth), (std::vector<std::string>{"f32", "bf16", "i64"}));
  expect_same_tensors(*pth, *twin, {"f32", "bf16", "i64"});
}

TEST(PthTest, StridedTensorIsRefusedNamingIt) {
  const std::string path = pth_path("strided.pth");
  const std::string msg = error_of([&] { SafetensorsFile::open_pth(path); });
  EXPECT_TRUE(contains(msg, path));
  EXPECT_TRUE(contains(msg, "tensor 't'"));
  EXPECT_TRUE(contains(msg, "strided view (size [3, 2], stride [1, 3])"));
  EXPECT_TRUE(contains(msg, "contiguous"));
}

TEST(PthTest, CheckpointOpensPthByExtension) {
  TempDir dir;
  const std::string src = read_file(pth_path("state_dict.pth"));
  const auto twin = SafetensorsFile::open(pth_path("state_dict.safetensors"));
  for (const char* ext : {".pth", ".pt", ".bin", ".ckpt", ".PTH"}) {
    const std::string path = dir.file(std::string("m") + ext);
    write_bytes(path, src);
    const Checkpoint ckpt = Checkpoint::open(path);
    EXPECT_EQ(ckpt.size(), kStateDictNames.size()) << ext;
    EXPECT_EQ(ckpt.tensor_f32("bf16").to_vector(), twin->tensor_f32("bf16").to_vector()) << ext;
    EXPECT_EQ(ckpt.file_of("f32"), path);
  }
  // Plain pickles and legacy (pre-zip) torch.save files are refused clearly.
  write_bytes(dir.file("m.pkl"), "\x80\x02}q\x00.");
  EXPECT_TRUE(contains(error_of([&] { Checkpoint::open(dir.file("m.pkl")); }), "plain pickle"));
  write_bytes(dir.file("legacy.pth"), std::string("\x80\x02\x8a\x0a", 4) + "lfc9");
  const std::string msg = error_of([&] { Checkpoint::open(dir.file("legacy.pth")); });
  EXPECT_TRUE(contains(msg, dir.file("legacy.pth")));
  EXPECT_TRUE(contains(msg, "legacy (non-zip)"));
  write_bytes(dir.file("empty.pth"), "");
  EXPECT_TRUE(contains(error_of([&] { Checkpoint::open(dir.file("empty.pth")); }), "empty"));
  write_bytes(dir.file("text.pth"), "hello world, not a checkpoint");
  EXPECT_TRUE(contains(error_of([&] { Checkpoint::open(dir.file("text.pth")); }),
                       "not a PyTorch checkpoint"));
}

// ---------------------------------------------------------------------------------------------
// Damaged archives.

class PthDamage : public ::testing::Test {
 protected:
  void SetUp() override { image_ = read_file(pth_path("state_dict.pth")); }

  std::string open_error(const std::string& image) {
    return error_of([&] { SafetensorsFile::open_pth_memory(image.data(), image.size(), "x.pth"); });
  }
  // Offset of the central directory header of `name`.
  size_t central(const std::string& image, const std::string& name) const {
    const std::string sig("PK\x01\x02", 4);
    for (size_t p = image.find(sig); p != std::string::npos; p = image.find(sig, p + 1)) {
      uint16_t len;
      std::memcpy(&len, image.data() + p + 28, 2);
      if (image.compare(p + 46, len, name) == 0 && len == name.size()) return p;
    }
    ADD_FAILURE() << "no central header for " << name;
    return 0;
  }
  template <class T>
  static void put(std::string& image, size_t at, T value) {
    std::memcpy(image.data() + at, &value, sizeof value);
  }
  template <class T>
  static T get(const std::string& image, size_t at) {
    T v;
    std::memcpy(&v, image.data() + at, sizeof v);
    return v;
  }
  // Replaces `from` by `to` (same length) in data.pkl and fixes the CRC so the pickle is read.
  std::string edit_pickle(const std::string& from, const std::string& to) {
    std::string image = image_;
    const auto entries =
        read_zip_directory(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "x.pth");
    const ZipEntry& pkl = entries[0];
    EXPECT_EQ(pkl.name, "state_dict/data.pkl");
    const size_t at = image.find(from, pkl.data_offset);
    EXPECT_NE(at, std::string::npos);
    EXPECT_LT(at, pkl.data_offset + pkl.size);
    image.replace(at, from.size(), to);
    put<uint32_t>(image, central(image, pkl.name) + 16,
                  crc32(reinterpret_cast<const uint8_t*>(image.data()) + pkl.data_offset,
                        static_cast<size_t>(pkl.size)));
    return image;
  }

  std::string image_;
};

TEST_F(PthDamage, EveryTruncationIsRefused) {
  for (size_t n = 0; n < image_.size(); ++n) {
    const std::string msg = open_error(image_.substr(0, n));
    ASSERT_TRUE(contains(msg, "x.pth")) << "length " << n;
  }
}

TEST_F(PthDamage, EverySingleByteFlipIsReadOrRefusedCleanly) {
  // Flipping tensor bytes or padding changes values only; everything else must throw Error.
  int refused = 0;
  for (size_t i = 0; i < image_.size(); ++i) {
    std::string image = image_;
    image[i] = static_cast<char>(image[i] ^ 0xff);
    try {
      const auto f = SafetensorsFile::open_pth_memory(image.data(), image.size(), "x.pth");
      for (const TensorInfo& t : f->tensors()) {
        ASSERT_LE(t.offset + t.nbytes, f->file_size());
        (void)f->tensor_f32(t.name);
      }
    } catch (const Error& e) {
      ASSERT_TRUE(contains(e.what(), "x.pth")) << "byte " << i;
      ++refused;
    }
  }
  EXPECT_GT(refused, 100);
}

TEST_F(PthDamage, CompressedEntryIsRefused) {
  std::string image = image_;
  put<uint16_t>(image, central(image, "state_dict/data/0") + 10, 8);
  const std::string msg = open_error(image);
  EXPECT_TRUE(contains(msg,
                       "x.pth: bad zip archive: entry 'state_dict/data/0' is compressed "
                       "(deflate)"));
}

TEST_F(PthDamage, StorageSizeMustMatchNumelTimesItemsize) {
  std::string image = image_;
  const size_t c = central(image, "state_dict/data/0");  // "f32", 24 floats
  ASSERT_EQ(get<uint32_t>(image, c + 24), 96u);
  put<uint32_t>(image, c + 20, 92);
  put<uint32_t>(image, c + 24, 92);
  EXPECT_TRUE(contains(open_error(image),
                       "x.pth: tensor 'f32': its storage '0' should hold 96 bytes (24 x F32) but "
                       "its archive entry holds 92"));
}

TEST_F(PthDamage, EntryPastTheCentralDirectoryIsRefused) {
  std::string image = image_;
  const size_t c = central(image, "state_dict/data/0");
  put<uint32_t>(image, c + 20, 1u << 20);
  put<uint32_t>(image, c + 24, 1u << 20);
  EXPECT_TRUE(contains(open_error(image), "entry 'state_dict/data/0': data ["));
  image = image_;
  put<uint32_t>(image, c + 42, 0x7fffffff);
  EXPECT_TRUE(contains(open_error(image), "local header offset 2147483647"));
}

TEST_F(PthDamage, MissingStorageEntryIsNamed) {
  std::string image = image_;
  const size_t c = central(image, "state_dict/data/1");
  image[c + 46 + 16] = '9';  // central name "state_dict/data/9": the local header disagrees
  EXPECT_TRUE(contains(open_error(image), "the local header names a different file"));
}

TEST_F(PthDamage, CorruptPickleFailsItsCrc) {
  std::string image = image_;
  const auto entries =
      read_zip_directory(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "x.pth");
  image[entries[0].data_offset + 40] ^= 1;
  EXPECT_TRUE(contains(open_error(image), "'state_dict/data.pkl' fails its CRC check"));
}

TEST_F(PthDamage, TensorPastItsStorageIsRefused) {
  // shared.view: storage_offset 6 (BININT1 6), size (3, 4); offset 16 runs past the 24 floats.
  const std::string image =
      edit_pickle(std::string("QK\x06K\x03K\x04\x86", 8), std::string("QK\x10K\x03K\x04\x86", 8));
  EXPECT_TRUE(contains(open_error(image),
                       "x.pth: tensor 'shared.view': elements [16, +12) of F32 run past the end "
                       "of its storage '"));
  EXPECT_TRUE(contains(open_error(image), "(96 bytes)"));
}

TEST_F(PthDamage, ForeignGlobalInThePickleIsRefused) {
  // Same length as "_rebuild_tensor_v2": a global outside the allowed set.
  const std::string image =
      edit_pickle("torch._utils\n_rebuild_tensor_v2", "torch._utils\n_rebuild_xxxxxx_v2");
  const std::string msg = open_error(image);
  EXPECT_TRUE(contains(msg,
                       "x.pth: state_dict/data.pkl: refuses the global "
                       "'torch._utils._rebuild_xxxxxx_v2'"));
  EXPECT_TRUE(contains(msg, "never runs code"));
}

// ---------------------------------------------------------------------------------------------
// The pickle interpreter on hand-written pickles.

std::string pickle_error(const std::string& bytes) {
  return error_of([&] {
    read_torch_pickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "p");
  });
}

// A BINUNICODE opcode pushing `s`.
std::string unicode(const std::string& s) {
  std::string out = "X";
  const auto n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  return out + s;
}

const std::string kProto2("\x80\x02", 2);

TEST(TorchPickle, CodeExecutionIsRefused) {
  // What pickle.dumps makes of an object whose __reduce__ returns (os.system, ("echo hi",)).
  const std::string os_system = kProto2 + "cposix\nsystem\n" + unicode("echo hi") + "\x85R.";
  EXPECT_TRUE(contains(pickle_error(os_system), "p: refuses the global 'posix.system'"));
  // Protocol 4 spelling: FRAME, SHORT_BINUNICODE, STACK_GLOBAL.
  const std::string eval = std::string("\x80\x04\x95", 3) + std::string(8, '\0') +
                           "\x8c\x08"
                           "builtins"
                           "\x8c\x04"
                           "eval"
                           "\x93.";
  EXPECT_TRUE(contains(pickle_error(eval), "refuses the global 'builtins.eval'"));
  // OrderedDict may not be called with arguments.
  const std::string od_args = kProto2 + "ccollections\nOrderedDict\n" + unicode("a") + "\x85R.";
  EXPECT_TRUE(contains(pickle_error(od_args), "OrderedDict() is called with arguments"));
}

TEST(TorchPickle, UnsupportedDtypeIsNamed) {
  const std::string p = kProto2 + "ctorch\nuint16\n.";
  EXPECT_TRUE(contains(pickle_error(p), "tensor dtype 'torch.uint16' is not supported"));
}

TEST(TorchPickle, MalformedPicklesAreRefused) {
  EXPECT_TRUE(contains(pickle_error(""), "pickle ends without STOP"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "}"), "pickle ends without STOP"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "."), "pops an empty stack"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "X\xff" + std::string(3, '\0') + "ab"),
                       "string of 255 bytes runs past the end of the pickle"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "h\x05."), "memo entry 5, never stored"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "(}."), "STOP leaves"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "}.junk"), "bytes follow STOP"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "}I1\n."), "opcode 0x49"));
  EXPECT_TRUE(contains(pickle_error(std::string("\x80\x09}.", 4)), "protocol 9"));
  // A list appended to itself is harmless (no recursion, no leak) and is not a state dict.
  EXPECT_TRUE(contains(
      pickle_error(kProto2 + "]q" + std::string(1, '\0') + "h" + std::string(1, '\0') + "a."),
      "holds a list, not a state dict"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "}" + unicode("k") + "]s."),
                       "entry 'k' is a list, not a tensor"));
  EXPECT_TRUE(contains(pickle_error(kProto2 + "}K\x01K\x02s."), "key of type int"));
  EXPECT_TRUE(
      contains(pickle_error(kProto2 + "}" + unicode("k") + "K\x01s" + unicode("k") + "K\x02s."),
               "sets 'k' twice"));
}

TEST(TorchPickle, ScalarsBesideTensorsAreSkipped) {
  // {"epoch": 3, "name": "x"}: no tensors; bookkeeping values are not errors here.
  const std::string p =
      kProto2 + "}(" + unicode("epoch") + "K\x03" + unicode("name") + unicode("x") + "u.";
  const TorchStateDict sd =
      read_torch_pickle(reinterpret_cast<const uint8_t*>(p.data()), p.size(), "p");
  EXPECT_TRUE(sd.tensors.empty());
}

}  // namespace
}  // namespace fisdit
