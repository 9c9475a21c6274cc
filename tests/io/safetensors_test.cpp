#include "io/safetensors.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "io_test_util.h"

namespace fisdit {
namespace {

using iotest::contains;
using iotest::error_of;
using iotest::raw_safetensors;
using iotest::TempDir;
using iotest::write_bytes;

constexpr DType kAllDTypes[] = {DType::F64,     DType::F32,     DType::F16, DType::BF16,
                                DType::F8_E4M3, DType::F8_E5M2, DType::I64, DType::I32,
                                DType::I16,     DType::I8,      DType::U8,  DType::Bool};

// A host tensor of `dtype` whose bytes are a recognisable pattern.
Tensor patterned(Shape shape, DType dtype, int seed) {
  Tensor t = Tensor::zeros(std::move(shape), dtype);
  auto* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(seed * 31 + i * 7 + 1);
  if (dtype == DType::Bool)
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] &= 1;
  return t;
}

// A host tensor holding the given raw bytes.
Tensor from_bytes(const std::vector<uint8_t>& bytes, DType dtype) {
  const int64_t n = static_cast<int64_t>(bytes.size() / dtype_size(dtype));
  Tensor t = Tensor::zeros({n}, dtype);
  std::memcpy(t.raw(), bytes.data(), bytes.size());
  return t;
}

template <class T>
std::vector<uint8_t> bytes_of(const std::vector<T>& values) {
  std::vector<uint8_t> out(values.size() * sizeof(T));
  std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// Writes one tensor of raw bytes and reads it back converted to F32.
std::vector<float> convert(const std::vector<uint8_t>& bytes, DType dtype) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  write_safetensors(path, {{"t", from_bytes(bytes, dtype)}});
  return SafetensorsFile::open(path)->tensor_f32("t").to_vector();
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// ---------------------------------------------------------------------------------------------
// Round trips

TEST(SafetensorsTest, RoundTripEveryDType) {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  NamedTensors tensors;
  int seed = 0;
  for (DType dt : kAllDTypes) {
    tensors.emplace_back("t_" + std::string(dtype_name(dt)), patterned({2, 3}, dt, seed++));
  }
  tensors.emplace_back("scalar", patterned({}, DType::F32, 99));
  tensors.emplace_back("empty", Tensor::zeros({0, 4}, DType::BF16));
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "round trip"}};
  write_safetensors(path, tensors, meta);

  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->path(), path);
  EXPECT_EQ(file->metadata(), meta);
  ASSERT_EQ(file->tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, original] = tensors[i];
    SCOPED_TRACE(name);
    const TensorInfo& info = file->tensors()[i];  // header order == the order written
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.dtype, original.dtype());
    EXPECT_EQ(info.shape, original.shape());
    EXPECT_EQ(info.nbytes, original.nbytes());
    ASSERT_EQ(file->find(name), &info);
    const Tensor back = file->tensor(name);
    EXPECT_EQ(back.dtype(), original.dtype());
    EXPECT_EQ(back.shape(), original.shape());
    EXPECT_TRUE(same_bytes(back, original));
    // Wider dtypes are laid out first, so every view is aligned to its element size.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(back.raw()) % dtype_size(back.dtype()), 0u);
  }
  EXPECT_EQ(file->find("absent"), nullptr);
}

TEST(SafetensorsTest, HeaderIsPaddedWithSpacesToAMultipleOf8) {
  for (const std::string name : {"a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg"}) {
    const std::vector<uint8_t> image = serialize_safetensors({{name, Tensor::zeros({1})}});
    uint64_t n = 0;
    std::memcpy(&n, image.data(), 8);
    EXPECT_EQ(n % 8, 0u) << name;
    ASSERT_EQ(image.size(), 8 + n + 4);
    const std::string header(image.begin() + 8, image.begin() + 8 + static_cast<long>(n));
    EXPECT_EQ(header.front(), '{');
    const size_t close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
  }
}

TEST(SafetensorsTest, WriteThenReadMatchesSerializedImage) {
  TempDir dir;
  const std::string path = dir.file("x.safetensors");
  const NamedTensors tensors = {{"b", patterned({3}, DType::I8, 1)},
                                {"a", patterned({2, 2}, DType::F64, 2)}};
  write_safetensors(path, tensors, {{"k", "v"}});
  const std::vector<uint8_t> image = serialize_safetensors(tensors, {{"k", "v"}});
  const auto from_disk = SafetensorsFile::open(path);
  EXPECT_EQ(from_disk->file_size(), image.size());
  const auto from_memory = SafetensorsFile::open_memory(image.data(), image.size(), "mem");
  EXPECT_EQ(from_memory->path(), "mem");
  ASSERT_EQ(from_memory->tensors().size(), 2u);
  EXPECT_EQ(from_memory->tensors()[0].name, "b");
  EXPECT_TRUE(same_bytes(from_memory->tensor("a"), from_disk->tensor("a")));
  EXPECT_EQ(from_memory->metadata().at("k"), "v");
}

TEST(SafetensorsTest, ViewsKeepTheMappingAlive) {
  TempDir dir;
  const std::string path = dir.file("v.safetensors");
  write_safetensors(path, {{"w", Tensor::from_vector({1.5f, -2.0f, 3.25f}, {3})}});
  Tensor view;
  {
    auto file = SafetensorsFile::open(path);
    view = file->tensor("w");
  }
  EXPECT_EQ(view.to_vector(), (std::vector<float>{1.5f, -2.0f, 3.25f}));
}

TEST(SafetensorsTest, MisalignedDataComesBackAsAnAlignedCopy) {
  TempDir dir;
  const std::string path = dir.file("odd.safetensors");
  // A 61-byte header puts the data at file offset 69: F32 elements there are misaligned.
  std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header.append(61 - header.size(), ' ');
  const std::vector<float> values = {0.25f, -7.0f};
  std::string data(8, '\0');
  std::memcpy(data.data(), values.data(), 8);
  write_bytes(path, raw_safetensors(header, data));
  const auto file = SafetensorsFile::open(path);
  EXPECT_EQ(file->find("w")->offset, 69u);
  const Tensor t = file->tensor("w");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
  EXPECT_EQ(t.to_vector(), values);
  EXPECT_EQ(file->tensor_f32("w").to_vector(), values);
}

// ---------------------------------------------------------------------------------------------
// Conversions to F32 (known bit patterns)

TEST(SafetensorsTest, ConvertsBF16) {
  const auto v =
      convert(bytes_of<uint16_t>({0x3f80, 0xc040, 0x7f80, 0xff80, 0x0001, 0x4049}), DType::BF16);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -3.0f);
  EXPECT_EQ(v[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[3], -std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[4], std::ldexp(1.0f, -133));
  EXPECT_EQ(v[5], 3.140625f);
}

TEST(SafetensorsTest, ConvertsF16) {
  const auto v =
      convert(bytes_of<uint16_t>({0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0x7e00}), DType::F16);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 65504.0f);
  EXPECT_EQ(v[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(v[4], std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[5]));
}

TEST(SafetensorsTest, ConvertsF8E4M3) {
  const auto v = convert({0x7e, 0x01, 0x7f, 0xff, 0x38, 0xb8, 0x08, 0x80, 0x40}, DType::F8_E4M3);
  EXPECT_EQ(v[0], 448.0f);
  EXPECT_EQ(v[1], std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(v[2]));
  EXPECT_TRUE(std::isnan(v[3]));
  EXPECT_EQ(v[4], 1.0f);
  EXPECT_EQ(v[5], -1.0f);
  EXPECT_EQ(v[6], std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(v[7], 0.0f);
  EXPECT_TRUE(std::signbit(v[7]));
  EXPECT_EQ(v[8], 2.0f);
}

TEST(SafetensorsTest, ConvertsF8E5M2) {
  const auto v = convert({0x3c, 0x7b, 0x7c, 0x01, 0xc0}, DType::F8_E5M2);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], 57344.0f);
  EXPECT_EQ(v[2], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[3], std::ldexp(1.0f, -16));
  EXPECT_EQ(v[4], -2.0f);
}

TEST(SafetensorsTest, ConvertsIntegersAndBool) {
  EXPECT_EQ(convert(bytes_of<int8_t>({-128, 0, 127}), DType::I8),
            (std::vector<float>{-128, 0, 127}));
  EXPECT_EQ(convert({0, 1, 255}, DType::U8), (std::vector<float>{0, 1, 255}));
  EXPECT_EQ(convert(bytes_of<int16_t>({-32768, 5}), DType::I16), (std::vector<float>{-32768, 5}));
  EXPECT_EQ(convert(bytes_of<int32_t>({-7, 1 << 20}), DType::I32),
            (std::vector<float>{-7, 1 << 20}));
  EXPECT_EQ(convert(bytes_of<int64_t>({-3, 875}), DType::I64), (std::vector<float>{-3, 875}));
  EXPECT_EQ(convert(bytes_of<double>({0.5, -1e300}), DType::F64)[0], 0.5f);
  EXPECT_EQ(convert({0, 1, 2}, DType::Bool), (std::vector<float>{0, 1, 1}));
}

// ---------------------------------------------------------------------------------------------
// Validation: every rule has a corrupt file, and the error names the file (and the tensor).

class SafetensorsValidationTest : public ::testing::Test {
 protected:
  // Writes the image to a file and returns the message open() fails with.
  std::string open_error(const std::string& image) {
    write_bytes(path_, image);
    return error_of([&] { SafetensorsFile::open(path_); });
  }
  std::string open_error(std::string_view header, std::string_view data) {
    return open_error(raw_safetensors(header, data));
  }
  TempDir dir_;
  const std::string path_ = dir_.file("bad.safetensors");
  const std::string eight_ = std::string(8, '\0');
};

TEST_F(SafetensorsValidationTest, ValidReferenceFileOpens) {
  write_bytes(path_,
              raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", eight_));
  EXPECT_EQ(SafetensorsFile::open(path_)->tensors().size(), 1u);
}

TEST_F(SafetensorsValidationTest, TruncatedFile) {
  const std::string msg = open_error(std::string("\x10\0\0", 3));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "too short"));
}

TEST_F(SafetensorsValidationTest, EmptyFile) {
  EXPECT_TRUE(contains(open_error(std::string()), path_));
}

TEST_F(SafetensorsValidationTest, HeaderLengthPastEndOfFile) {
  const std::string msg = open_error(raw_safetensors(R"({})", "", 1000));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "runs past the end of the file"));
}

TEST_F(SafetensorsValidationTest, HeaderLengthTooSmall) {
  const std::string msg = open_error(raw_safetensors("{}", "", 1));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "too small"));
}

TEST_F(SafetensorsValidationTest, HeaderLengthOverTheLimit) {
  const std::string msg = open_error(raw_safetensors("{}", "", 200ull << 20));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "exceeds the limit"));
  const std::string huge = open_error(raw_safetensors("{}", "", ~0ull));
  EXPECT_TRUE(contains(huge, path_));
}

TEST_F(SafetensorsValidationTest, HeaderNotJson) {
  const std::string msg = open_error(raw_safetensors(R"({"a": {"dtype": )"));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "not valid JSON"));
}

TEST_F(SafetensorsValidationTest, HeaderWithNulPadding) {
  EXPECT_TRUE(contains(open_error(raw_safetensors(std::string("{}\0\0", 4))), "not valid JSON"));
}

TEST_F(SafetensorsValidationTest, HeaderNotAnObject) {
  const std::string msg = open_error(raw_safetensors("[1, 2]"));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "not an object"));
}

TEST_F(SafetensorsValidationTest, DeeplyNestedHeader) {
  const std::string header =
      R"({"__metadata__":)" + std::string(100, '[') + std::string(100, ']') + "}";
  const std::string msg = open_error(raw_safetensors(header));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "nests deeper"));
}

TEST_F(SafetensorsValidationTest, UnknownDType) {
  const std::string msg =
      open_error(R"({"w1":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'w1'"));
  EXPECT_TRUE(contains(msg, "unknown dtype 'F12'"));
}

TEST_F(SafetensorsValidationTest, DTypeNotAString) {
  const std::string msg =
      open_error(R"({"w1":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(msg, "tensor 'w1'"));
  EXPECT_TRUE(contains(msg, "dtype"));
}

TEST_F(SafetensorsValidationTest, MissingKey) {
  const std::string msg = open_error(R"({"w2":{"dtype":"F32","data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'w2'"));
  EXPECT_TRUE(contains(msg, "missing \"shape\""));
}

TEST_F(SafetensorsValidationTest, UnknownKeyInTensorEntry) {
  const std::string msg =
      open_error(R"({"w3":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"stride":[1]}})", eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'w3'"));
  EXPECT_TRUE(contains(msg, "unknown key 'stride'"));
}

TEST_F(SafetensorsValidationTest, EntryNotAnObject) {
  EXPECT_TRUE(contains(open_error(R"({"w4":[1,2]})", ""), "tensor 'w4'"));
}

TEST_F(SafetensorsValidationTest, NegativeDimension) {
  const std::string msg =
      open_error(R"({"w5":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'w5'"));
  EXPECT_TRUE(contains(msg, "non-negative integer"));
}

TEST_F(SafetensorsValidationTest, NonIntegerDimension) {
  EXPECT_TRUE(
      contains(open_error(R"({"w6":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", eight_),
               "tensor 'w6'"));
  EXPECT_TRUE(
      contains(open_error(R"({"w6":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", eight_),
               "not an array"));
}

TEST_F(SafetensorsValidationTest, ElementCountOverflow) {
  const std::string msg = open_error(
      R"({"w7":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", "");
  EXPECT_TRUE(contains(msg, "tensor 'w7'"));
  EXPECT_TRUE(contains(msg, "too many elements"));
  const std::string bytes = open_error(
      R"({"w8":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(bytes, "tensor 'w8'"));
  const std::string dim = open_error(
      R"({"w9":{"dtype":"U8","shape":[18446744073709551615],"data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(dim, "tensor 'w9'"));
}

TEST_F(SafetensorsValidationTest, ByteSizeMismatch) {
  const std::string msg =
      open_error(R"({"w10":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'w10'"));
  EXPECT_TRUE(contains(msg, "needs 12 bytes"));
}

TEST_F(SafetensorsValidationTest, OffsetsBeyondTheFile) {
  const std::string msg =
      open_error(R"({"w11":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'w11'"));
  EXPECT_TRUE(contains(msg, "past the end of the data"));
}

TEST_F(SafetensorsValidationTest, OffsetsReversed) {
  const std::string msg =
      open_error(R"({"w12":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", eight_);
  EXPECT_TRUE(contains(msg, "tensor 'w12'"));
  EXPECT_TRUE(contains(msg, "end before they begin"));
}

TEST_F(SafetensorsValidationTest, OffsetsNotAPair) {
  for (const char* offsets : {"[0]", "[0,8,8]", "[-1,7]", "\"0,8\"", "[0,8.0]"}) {
    const std::string msg = open_error(
        std::string(R"({"w13":{"dtype":"F32","shape":[2],"data_offsets":)") + offsets + "}}",
        eight_);
    EXPECT_TRUE(contains(msg, "tensor 'w13'")) << offsets;
    EXPECT_TRUE(contains(msg, "data_offsets")) << offsets;
  }
}

TEST_F(SafetensorsValidationTest, OverlappingTensors) {
  const std::string msg =
      open_error(R"({"first":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                 R"("second":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 std::string(12, '\0'));
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'second'"));
  EXPECT_TRUE(contains(msg, "overlap tensor 'first'"));
}

TEST_F(SafetensorsValidationTest, IdenticalRangesOverlap) {
  const std::string msg = open_error(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                                     R"("b":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})",
                                     eight_);
  EXPECT_TRUE(contains(msg, "overlap"));
}

TEST_F(SafetensorsValidationTest, ZeroSizeTensorsMayShareOffsets) {
  write_bytes(path_, raw_safetensors(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("z1":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                                     R"("z2":{"dtype":"BF16","shape":[3,0],"data_offsets":[8,8]}})",
                                     eight_));
  const auto file = SafetensorsFile::open(path_);
  EXPECT_EQ(file->tensor("z2").numel(), 0);
  EXPECT_EQ(file->tensor_f32("z1").numel(), 0);
}

TEST_F(SafetensorsValidationTest, MetadataNotAnObject) {
  const std::string msg = open_error(R"({"__metadata__":"format=pt"})", "");
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "__metadata__"));
}

TEST_F(SafetensorsValidationTest, MetadataValueNotAString) {
  const std::string msg = open_error(R"({"__metadata__":{"format":"pt","steps":40}})", "");
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "'steps'"));
  EXPECT_TRUE(contains(msg, "expected a string"));
}

TEST_F(SafetensorsValidationTest, DuplicateTensorName) {
  const std::string msg = open_error(R"({"dup":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                                     R"("dup":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                                     eight_);
  EXPECT_TRUE(contains(msg, path_));
  EXPECT_TRUE(contains(msg, "tensor 'dup' is listed twice"));
}

TEST_F(SafetensorsValidationTest, ControlCharactersInNamesAreEscaped) {
  const std::string msg =
      open_error(R"({"a\nb":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", eight_);
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_TRUE(contains(msg, "a\\x0ab"));
}

TEST_F(SafetensorsValidationTest, OpenMemoryValidatesTheSameWay) {
  const std::string image =
      raw_safetensors(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight_);
  const std::string msg =
      error_of([&] { SafetensorsFile::open_memory(image.data(), image.size(), "buffer-7"); });
  EXPECT_TRUE(contains(msg, "buffer-7: tensor 'w'"));
  EXPECT_TRUE(
      contains(error_of([] { SafetensorsFile::open_memory(nullptr, 0, "nothing"); }), "nothing: "));
}

// ---------------------------------------------------------------------------------------------
// Lookups and I/O errors

TEST(SafetensorsTest, AbsentTensorNamesFileAndTensor) {
  TempDir dir;
  const std::string path = dir.file("one.safetensors");
  write_safetensors(path, {{"present", Tensor::zeros({1})}});
  const auto file = SafetensorsFile::open(path);
  for (const std::string& msg :
       {error_of([&] { file->tensor("ghost"); }), error_of([&] { file->tensor_f32("ghost"); })}) {
    EXPECT_TRUE(contains(msg, path));
    EXPECT_TRUE(contains(msg, "'ghost'"));
  }
}

TEST(SafetensorsTest, OpenErrorsNameThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.safetensors");
  EXPECT_THROW(SafetensorsFile::open(missing), Error);
  EXPECT_TRUE(contains(error_of([&] { SafetensorsFile::open(missing); }), missing));
  const std::string msg = error_of([&] { SafetensorsFile::open(dir.path().string()); });
  EXPECT_TRUE(contains(msg, dir.path().string()));
  EXPECT_TRUE(contains(msg, "directory"));
  // A FIFO is refused at once instead of blocking for a writer.
  const std::string fifo = dir.file("pipe.safetensors");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string fifo_msg = error_of([&] { SafetensorsFile::open(fifo); });
  EXPECT_TRUE(contains(fifo_msg, fifo));
  EXPECT_TRUE(contains(fifo_msg, "not a regular file"));
}

TEST(SafetensorsTest, WriteErrorsNameThePath) {
  TempDir dir;
  const std::string path = dir.file("no-such-dir/out.safetensors");
  EXPECT_THROW(write_safetensors(path, {{"a", Tensor::zeros({1})}}), Error);
  EXPECT_TRUE(contains(error_of([&] {
                         write_safetensors(path, {{"a", Tensor::zeros({1})}});
                       }),
                       path));
}

TEST(SafetensorsTest, WriteRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  const std::string dup = error_of([&] {
    write_safetensors(path, {{"a", Tensor::zeros({1})}, {"a", Tensor::zeros({2})}});
  });
  EXPECT_TRUE(contains(dup, path));
  EXPECT_TRUE(contains(dup, "'a'"));
  EXPECT_TRUE(contains(error_of([&] {
                         write_safetensors(path, {{"__metadata__", Tensor::zeros({1})}});
                       }),
                       "reserved"));
  EXPECT_TRUE(contains(error_of([&] {
                         write_safetensors(path, {{"u", Tensor()}});
                       }),
                       "'u' is undefined"));
  EXPECT_FALSE(std::filesystem::exists(path));
}

// The fuzzer's seeds (fuzz/make_corpus.py) are what their names say.
TEST(SafetensorsTest, FuzzSeedCorpus) {
  const std::filesystem::path dir =
      std::filesystem::path(FISDIT_TEST_DATA) / ".." / ".." / "fuzz" / "corpus" / "safetensors";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "no seed corpus at " << dir;
  int valid = 0, invalid = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const std::string msg = error_of([&] {
      const auto file = SafetensorsFile::open(entry.path().string());
      for (const TensorInfo& info : file->tensors()) file->tensor_f32(info.name);
    });
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_EQ(msg, "<no exception>") << name;
      ++valid;
    } else if (name.rfind("invalid_", 0) == 0) {
      EXPECT_TRUE(contains(msg, entry.path().string())) << name;
      ++invalid;
    }
  }
  EXPECT_GE(valid, 1);
  EXPECT_GE(invalid, 1);
}

}  // namespace
}  // namespace fisdit
