// swiglu.cuh: one element of SwiGLU as swiglu.cu specifies it (its header gives the PyTorch code
// and the rounding points), shared by swiglu.cu and the gate/up epilogue of decode.cu.
#pragma once

#include "common.cuh"

namespace qk {

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

template <typename T> __device__ __forceinline__ T swiglu_one(T g, T u) {
    return from_float<T>(round_to<T>(silu(to_float(g))) * to_float(u));
}

}  // namespace qk
