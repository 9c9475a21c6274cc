#pragma once
// Host copies of tensors with their channel axis moved to the end and back: the video VAEs keep
// their activations channels-last ([T, H, W, C], conv weights [Cout, kt, kh, kw, Cin]) while
// checkpoints and the video around them are channels-first ([C, T, H, W], [Cout, Cin, ...]).
#include <cstdint>

#include "core/tensor.h"

namespace fisdit {

// out[b, c, r] = in[b, r, c] for host F32 arrays in [batch, rows, cols]: blocked, in parallel.
void transpose_batched(const float* in, float* out, int64_t batch, int64_t rows, int64_t cols);

// x [N..., C, S...] (C at `axis`) -> F32 [N..., S..., C]; x is any float dtype on the host.
Tensor channels_to_last(const Tensor& x, int axis);
// The inverse: x [N..., S..., C] -> F32 [N..., C, S...], C moved to `axis`.
Tensor channels_from_last(const Tensor& x, int axis);

}  // namespace fisdit
