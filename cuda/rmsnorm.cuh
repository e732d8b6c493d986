// rmsnorm.cuh: a row's 1 / rms from its FP32 sum of squares, as rmsnorm.cu specifies it (its
// header gives the PyTorch code), shared by rmsnorm.cu and the norm prologue of decode.cu.
#pragma once

#include "common.cuh"

namespace qk {

// inv = 1 / sqrt(sum_sq / hidden + eps), computed in FP64 from the FP32 sum and rounded to FP32
// once. PyTorch rounds four times in FP32 here (the mean, the epsilon add, the square root, the
// division), each error common to the whole row; in FP64 those roundings are 2^-53 and only the
// final one, at most half an FP32 ulp (plus a few 2^-29 ulp from the FP64 steps), is left. The FP32
// sum's overflow contract is kept: an infinite sum gives inv = 1 / sqrt(inf) = 0, a NaN sum NaN.
// Cost: a handful of FP64 operations a row.
__device__ __forceinline__ float inv_rms(float sum_sq, int hidden, float eps) {
    const double mean = static_cast<double>(sum_sq) / static_cast<double>(hidden);
    return static_cast<float>(1.0 / sqrt(mean + static_cast<double>(eps)));
}

}  // namespace qk
