#include "core/dtype.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "fisdit/error.h"

namespace fisdit {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8},   {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::I64, "I64", 8},   {DType::I32, "I32", 4},         {DType::I16, "I16", 2},
    {DType::I8, "I8", 1},     {DType::U8, "U8", 1},           {DType::Bool, "BOOL", 1},
};
const DTypeInfo& info(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d;
  throw Error("internal error: unknown dtype code " + std::to_string(static_cast<int>(t)));
}
}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
std::string_view dtype_name(DType t) { return info(t).name; }

bool parse_dtype(std::string_view name, DType& out) {
  for (const auto& d : kDTypes) {
    if (d.name == name) {
      out = d.type;
      return true;
    }
  }
  return false;
}

bool is_float(DType t) {
  return t == DType::F64 || t == DType::F32 || t == DType::F16 || t == DType::BF16 || is_fp8(t);
}

bool is_fp8(DType t) { return t == DType::F8_E4M3 || t == DType::F8_E5M2; }

float f16_to_float(uint16_t v) {
  const uint32_t sign = (v >> 15) & 1u, exp = (v >> 10) & 0x1fu, man = v & 0x3ffu;
  float mag;
  if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31)
    mag = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else
    mag = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -mag : mag;
}

uint16_t float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {                                               // subnormal or zero
    float a;
    std::memcpy(&a, &abs, sizeof a);
    const float scaled = a * 16777216.0f;  // 2^24: one unit = smallest subnormal
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u) - 0x38000000u;  // rebias, round to even
  return static_cast<uint16_t>(sign | (m >> 13));
}

float f8e4m3_to_float(uint8_t v) {
  const uint32_t sign = v >> 7, exp = (v >> 3) & 0xfu, man = v & 0x7u;
  float mag;
  if (exp == 15 && man == 7)
    mag = std::numeric_limits<float>::quiet_NaN();
  else if (exp == 0)
    mag = std::ldexp(static_cast<float>(man), -9);
  else
    mag = std::ldexp(static_cast<float>(man | 0x8u), static_cast<int>(exp) - 10);
  return sign ? -mag : mag;
}

uint8_t float_to_f8e4m3(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  const float a = std::fabs(f);
  if (std::isnan(a)) return static_cast<uint8_t>(sign | 0x7f);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7e);  // saturates, as torch does
  // Spacing of representable values around `a`: 2^(e-3) in binade e (e >= -6), 2^-9 below 2^-6.
  const int e = a < 0x1p-6f ? -6 : std::ilogb(a);
  const float quantum = std::ldexp(1.0f, e - 3);
  const float r = std::nearbyint(a / quantum) * quantum;  // round half to even (default mode)
  if (r == 0.0f) return sign;
  if (r < 0x1p-6f) return static_cast<uint8_t>(sign | static_cast<uint8_t>(r / 0x1p-9f));
  const int re = std::ilogb(r);  // rounding may carry into the next binade
  const auto mantissa = static_cast<uint8_t>(std::ldexp(r, 3 - re) - 8.0f);
  return static_cast<uint8_t>(sign | static_cast<uint8_t>((re + 7) << 3) | mantissa);
}

float f8e5m2_to_float(uint8_t v) { return f16_to_float(static_cast<uint16_t>(v) << 8); }

namespace {

// All 256 E4M3 values, decoded once (a table lookup per element rather than the float maths).
const std::array<float, 256>& f8e4m3_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int v = 0; v < 256; ++v)
      t[static_cast<size_t>(v)] = f8e4m3_to_float(static_cast<uint8_t>(v));
    return t;
  }();
  return table;
}

void convert_serial(DType from, const void* src, float* dst, size_t n);

}  // namespace

void convert_to_f32(DType from, const void* src, float* dst, size_t n) {
  // Large tensors (a 14B-parameter checkpoint is widened tensor by tensor) in 1M-element chunks
  // across threads; each chunk is converted exactly as a serial loop would.
  constexpr size_t kChunk = size_t{1} << 20;
  if (n <= 2 * kChunk) return convert_serial(from, src, dst, n);
  convert_serial(from, src, dst,
                 0);  // throws here, not inside the parallel region, for a bad dtype
  const auto chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
  const auto* in = static_cast<const uint8_t*>(src);
  const size_t esize = dtype_size(from);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChunk;
    convert_serial(from, in + begin * esize, dst + begin, std::min(kChunk, n - begin));
  }
}

void convert_to_f32_scaled(DType from, const void* src, float scale, float* dst, size_t n) {
  convert_to_f32(from, src, dst, n);
  if (scale == 1.0f) return;
  const auto m = static_cast<int64_t>(n);
#pragma omp parallel for schedule(static) if (m > (int64_t{1} << 20))
  for (int64_t i = 0; i < m; ++i) dst[i] *= scale;
}

void convert_to_bf16_scaled(DType from, const void* src, float scale, uint16_t* dst, size_t n) {
  constexpr size_t kChunk = size_t{1} << 16;
  float probe = 0;
  convert_serial(from, src, &probe, 0);  // throws here, not inside the parallel region
  const auto chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
  const auto* in = static_cast<const uint8_t*>(src);
  const size_t esize = dtype_size(from);
#pragma omp parallel if (chunks > 16)
  {
    std::vector<float> buf(kChunk);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t begin = static_cast<size_t>(c) * kChunk, len = std::min(kChunk, n - begin);
      convert_serial(from, in + begin * esize, buf.data(), len);
      for (size_t i = 0; i < len; ++i) dst[begin + i] = float_to_bf16(buf[i] * scale);
    }
  }
}

namespace {

void convert_serial(DType from, const void* src, float* dst, size_t n) {
  switch (from) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::F64: {
      const auto* s = static_cast<const double*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::BF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      return;
    }
    case DType::F16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
      return;
    }
    case DType::F8_E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      const std::array<float, 256>& table = f8e4m3_table();
      for (size_t i = 0; i < n; ++i) dst[i] = table[s[i]];
      return;
    }
    case DType::F8_E5M2: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f8e5m2_to_float(s[i]);
      return;
    }
    case DType::I64: {
      const auto* s = static_cast<const int64_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::I32: {
      const auto* s = static_cast<const int32_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    default:
      throw Error("cannot convert dtype " + std::string(dtype_name(from)) + " to F32");
  }
}

}  // namespace

}  // namespace fisdit
