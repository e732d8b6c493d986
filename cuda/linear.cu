// linear.cu: the bias half of `y = x W^T + b` (the GEMM itself is cuBLAS, called from ops/gemm.rs).
//
// PyTorch's F.linear with a bias is addmm(b, x, W^T) with beta = 1: the bias joins the FP32
// accumulator and the sum is rounded once to the output dtype (cuBLASLt's bias epilogue, or a GEMM
// with beta = 1 over an output pre-filled with the bias: the same arithmetic). We do the latter:
// this kernel fills y [rows, out] with the bias broadcast over rows, converted to y's dtype (exact:
// the bias dtype is the input dtype, and y's dtype is either that or f32), then the GEMM runs with
// beta = 1, so y = T(FP32(acc + float(b))).
//
// grid-stride over rows * out elements, 64-bit indices.
#include "common.cuh"

namespace qk {

template <typename B, typename Y>
__device__ __forceinline__ void fill_bias(const B* __restrict__ bias, Y* __restrict__ y, long long rows,
                                          int out) {
    const long long n = rows * out;
    for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
         e += static_cast<long long>(gridDim.x) * blockDim.x) {
        y[e] = from_float<Y>(to_float(bias[e % out]));
    }
}

}  // namespace qk

// Entry points: fill_bias_<bias dtype>_<y dtype>; grid = (blocks, 1, 1), block = (256, 1, 1).
#define QK_FILL_BIAS_ENTRY(NAME, B, Y)                                                             \
    extern "C" __global__ void fill_bias_##NAME(const B* __restrict__ bias, Y* __restrict__ y,     \
                                                long long rows, int out) {                         \
        qk::fill_bias<B, Y>(bias, y, rows, out);                                                   \
    }

QK_FILL_BIAS_ENTRY(f32_f32, float, float)
QK_FILL_BIAS_ENTRY(f16_f16, __half, __half)
QK_FILL_BIAS_ENTRY(bf16_bf16, __nv_bfloat16, __nv_bfloat16)
QK_FILL_BIAS_ENTRY(f16_f32, __half, float)
QK_FILL_BIAS_ENTRY(bf16_f32, __nv_bfloat16, float)
