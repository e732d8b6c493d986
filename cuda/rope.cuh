// rope.cuh: one rotation of RoPE as rope.cu specifies it (its header gives the PyTorch code and the
// rounding points), shared by rope.cu and the q/k/v epilogue of decode.cu.
#pragma once

#include "common.cuh"

namespace qk {

constexpr unsigned ROPE_BAD_POSITION = 1u;
constexpr unsigned ROPE_BAD_SLOT = 2u;

// (c, s) of pair i at position pos, rounded to T.
template <typename T>
__device__ __forceinline__ void rope_cos_sin(int pos, float inv_freq, float& c, float& s) {
    const float angle = __fmul_rn(static_cast<float>(pos), inv_freq);
    sincosf(angle, &s, &c);
    c = round_to<T>(c);
    s = round_to<T>(s);
}

// Rotate the pair (x[i], x[i + half]) of one head by (c, s), already rounded to T.
template <typename T>
__device__ __forceinline__ void rope_pair(T x1, T x2, float c, float s, T& out1, T& out2) {
    const float f1 = to_float(x1), f2 = to_float(x2);
    out1 = from_float<T>(__fadd_rn(round_to<T>(__fmul_rn(f1, c)), round_to<T>(__fmul_rn(-f2, s))));
    out2 = from_float<T>(__fadd_rn(round_to<T>(__fmul_rn(f2, c)), round_to<T>(__fmul_rn(f1, s))));
}

}  // namespace qk
