#pragma once
// Fidelity of an accelerated run against the dense run with the same seed: relative L2 of the
// latents, and PSNR / SSIM of the decoded frames.
#include <vector>

#include "core/tensor.h"

namespace fisdit::analysis {

// PSNR in dB of two videos [3, F, H, W] with values in [-1, 1], on the [0, 1] scale (peak 1):
// 10 log10(1 / MSE) over all values. +infinity when they are equal.
double psnr(const Tensor& video, const Tensor& reference);

// Per frame f, the mean squared error over the 3 x H x W values of frame f on the [0, 1] scale
// (the MSE psnr uses, restricted to one frame); the PSNR of frame f is 10 log10(1 / mse[f]).
std::vector<double> frame_mse(const Tensor& video, const Tensor& reference);

// Mean SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) of two videos [3, F, H, W] in [-1, 1], on the
// [0, 1] scale: an 11x11 Gaussian window (sigma 1.5, normalised, only where it fits inside the
// frame: "valid" positions), K1 = 0.01, K2 = 0.03, L = 1, computed per channel and frame and
// averaged over all of them. Frames smaller than the window use the whole frame as one window.
double ssim(const Tensor& video, const Tensor& reference);

}  // namespace fisdit::analysis
