// cuda_host.h: the CUDA language, as much of it as cuda/*.cu uses, for a host C++ compiler.
//
// build.rs force-includes this file (`-include`) when it compiles cuda/*.cu for the software device,
// so the kernel sources compile unchanged. What each piece becomes:
//   __global__ / __device__ / __host__     nothing: ordinary C++ functions
//   __shared__                             a static thread_local: every fiber of a block runs on one
//                                          OS thread, so the block's threads share one instance. The
//                                          kernel library's whole TLS block (nothing but these
//                                          variables: the runtime keeps no thread_local of its own)
//                                          is the running block's arena, filled with a NaN pattern
//                                          when each block starts (register.h, runtime.cpp)
//   threadIdx, blockIdx, blockDim, gridDim the running fiber's (one fiber per CUDA thread)
//   __syncthreads, __syncwarp, __shfl_*    switch points of the fiber scheduler, with the source line
//                                          for the reports
//   atomicOr, atomicAdd, atomicMax,        host atomics (max: a compare-exchange loop)
//   atomicExch
//   __threadfence, __ldcg                  nothing, a plain load (blocks run one at a time)
//   expf, sincosf, sqrtf, fmaf, ...        the C library's (not CUDA's ulp-for-ulp: see softgpu/README.md)
// Inline PTX lives in cuda/ptx.cuh, whose host branch calls the ptx_* functions declared here.
#pragma once

#define QK_SOFTGPU 1

// Before any CUDA header: host_defines.h keeps a qualifier that is already defined.
#define __host__
#define __device__
#define __global__
#define __launch_bounds__(...)
#define __shared__ static thread_local

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <vector_types.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include "kernel_api.h"

#define threadIdx (qksoft_current->thread_idx)
#define blockIdx (qksoft_current->block_idx)
#define blockDim (qksoft_current->block_dim)
#define gridDim (qksoft_current->grid_dim)

#define __syncthreads() ::qksoft::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::qksoft::syncwarp(qksoft_mask_or_all(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, lane_mask, ...) \
    ::qksoft::shfl_typed(::qksoft::Shfl::Xor, mask, v, lane_mask, qksoft_width_or_32(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_sync(mask, v, src_lane, ...) \
    ::qksoft::shfl_typed(::qksoft::Shfl::Idx, mask, v, src_lane, qksoft_width_or_32(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, delta, ...) \
    ::qksoft::shfl_typed(::qksoft::Shfl::Down, mask, v, delta, qksoft_width_or_32(__VA_ARGS__), __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, delta, ...) \
    ::qksoft::shfl_typed(::qksoft::Shfl::Up, mask, v, delta, qksoft_width_or_32(__VA_ARGS__), __FILE__, __LINE__)

inline unsigned qksoft_mask_or_all() { return 0xffffffffu; }
inline unsigned qksoft_mask_or_all(unsigned mask) { return mask; }
inline int qksoft_width_or_32() { return 32; }
inline int qksoft_width_or_32(int width) { return width; }

inline float __int_as_float(int x) {
    float f;
    memcpy(&f, &x, 4);
    return f;
}
inline int __float_as_int(float x) {
    int i;
    memcpy(&i, &x, 4);
    return i;
}
// One IEEE operation each; the host build never contracts (-ffp-contract=off).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
// Blocks run one at a time and a block's threads switch only at its barriers and collectives, so
// every store is seen by every later load: the fence's ordering holds without doing anything, and
// a load through L2 (__ldcg) is a plain load.
inline void __threadfence() {}
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T qksoft_atomic_max(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    return old;
}
inline unsigned atomicMax(unsigned* p, unsigned v) { return qksoft_atomic_max(p, v); }
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) { return qksoft_atomic_max(p, v); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
