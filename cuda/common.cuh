// common.cuh: what every kernel shares.
//
// - Dtype traits: load any storage dtype (float, __half, __nv_bfloat16) to float and store float back
//   with round-to-nearest-even, the rounding PyTorch's `.to(dtype)` uses.
// - 16-byte vectors: `Vec16<T>` holds 16 / sizeof(T) elements (4 x f32, 8 x f16/bf16) and is loaded
//   and stored with one 128-bit access. Callers guarantee the address is 16-byte aligned.
// - Reductions: warp_sum (butterfly shuffle) and block_sum (warp sums -> shared -> warp 0). Their
//   order depends only on blockDim, never on which block or how many blocks run: results are
//   batch invariant.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "ptx.cuh"

namespace qk {

// ---- dtype traits -------------------------------------------------------------------------------

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// Round a float to the storage dtype and back: the value PyTorch holds after `.to(dtype)`.
template <typename T> __device__ __forceinline__ float round_to(float x) {
    return to_float(from_float<T>(x));
}

// ---- 16-byte vectors ----------------------------------------------------------------------------

template <typename T> struct alignas(16) Vec16 {
    static constexpr int N = 16 / sizeof(T);
    T v[N];
};

template <typename T> __device__ __forceinline__ Vec16<T> load16(const T* p) {
    Vec16<T> out;
    *reinterpret_cast<int4*>(&out) = ld16(reinterpret_cast<const int4*>(p));
    return out;
}

template <typename T> __device__ __forceinline__ void store16(T* p, const Vec16<T>& v) {
    st16(reinterpret_cast<int4*>(p), *reinterpret_cast<const int4*>(&v));
}

// ---- tensor cores -------------------------------------------------------------------------------

__device__ __forceinline__ void mma_m16n8k16_of(__half*, float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                uint32_t b1 QK_CALL_SITE) {
    mma_m16n8k16_f16(c, a, b0, b1 QK_AT_CALL_SITE);
}
__device__ __forceinline__ void mma_m16n8k16_of(__nv_bfloat16*, float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                uint32_t b1 QK_CALL_SITE) {
    mma_m16n8k16_bf16(c, a, b0, b1 QK_AT_CALL_SITE);
}
// D = A B + C, mma.sync m16n8k16 with 16-bit inputs of T (__half or __nv_bfloat16) and FP32
// accumulation (ptx.cuh: c is C on entry, D on return; the software device reports the caller's line).
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1 QK_CALL_SITE) {
    mma_m16n8k16_of(static_cast<T*>(nullptr), c, a, b0, b1 QK_AT_CALL_SITE);
}

// ---- reductions ---------------------------------------------------------------------------------

constexpr int WARP = 32;
constexpr int MAX_BLOCK = 1024;

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int offset = WARP / 2; offset > 0; offset /= 2) {
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    }
    return x;
}

// Sum of `x` over the whole block, returned to every thread. blockDim.x must be a multiple of 32
// (at most 1024). Uses 33 floats of shared memory; safe to call repeatedly.
__device__ __forceinline__ float block_sum(float x) {
    __shared__ float partial[MAX_BLOCK / WARP];
    __shared__ float total;
    const int lane = threadIdx.x % WARP;
    const int warp = threadIdx.x / WARP;
    const int n_warps = blockDim.x / WARP;
    x = warp_sum(x);
    if (lane == 0) partial[warp] = x;
    __syncthreads();
    if (warp == 0) {
        float y = lane < n_warps ? partial[lane] : 0.0f;
        y = warp_sum(y);
        if (lane == 0) total = y;
    }
    __syncthreads();
    return total;
}

}  // namespace qk
