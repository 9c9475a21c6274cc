#pragma once
// The paper's redundancy analysis (docs/FIS.md, "Analysis quantities", Eq. 1-6) on one hidden
// state: a host tensor [T * H'W', C] (or [T, H'W', C]) whose tokens are ordered (f, h, w), as a
// DiT block outputs them.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace fisdit::analysis {

// Eq. 1: M_f, the per-token L2 norm over channels, for every frame: result[f][token].
std::vector<std::vector<double>> token_norms(const Tensor& hidden, int64_t frames);

// Eq. 2-3: R_f = ||M_{f+1} - M_f||_2 / ||M_f||_2 for f = 0..T-2 (empty when T < 2). A frame whose
// M_f is all zero gives R_f = 0 when M_{f+1} is zero too, +infinity otherwise.
std::vector<double> adjacent_change(const Tensor& hidden, int64_t frames);

// Eq. 4: std_f(R_f) / mean_f(R_f), the population standard deviation (divide by the count).
// 0 when there are fewer than two values or the mean is 0.
double coefficient_of_variation(const std::vector<double>& values);

// Eq. 6: per frame, ||F_sparse_f - F_dense_f||_2 / ||F_dense_f||_2 over the frame's tokens and
// channels (0 when both are zero, +infinity when only the dense frame is zero). Throws when the
// shapes differ or the token count is not a multiple of `frames`.
std::vector<double> frame_relative_error(const Tensor& sparse, const Tensor& dense, int64_t frames);

}  // namespace fisdit::analysis
