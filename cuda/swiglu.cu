// swiglu.cu: out = silu(gate) * up, Qwen2MLP's `act_fn(gate_proj(x)) * up_proj(x)` with act_fn = SiLU.
//
// PyTorch (transformers/models/qwen2/modeling_qwen2.py, Qwen2MLP.forward):
//     down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
// F.silu on a 16-bit tensor computes x / (1 + exp(-x)) in FP32 (opmath) and rounds to the dtype; the
// product with `up` is a separate op in the storage dtype. So, per element (T(.) = round to T):
//     out = T(float(T(g / (1 + expf(-g)))) * float(u))
// expf and the division are IEEE FP32 (no fast-math; expf is within 2 ulp). For g < about -88,
// expf(-g) = inf and silu = -0, as in PyTorch.
//
// Shapes (row-major, T = float / __half / __nv_bfloat16):
//     gate [rows, width] at row stride gate_stride, up [rows, width] at row stride up_stride,
//     out  [rows, width] contiguous (row stride width).
// Two separate tensors have both strides = width; one fused [rows, 2 * width] row ([gate | up], the
// output of a fused gate/up GEMM) has gate = x, up = x + width and both strides = 2 * width.
//
// Thread mapping: a grid-stride loop over rows * (width / N) work items, N = 8 (16-bit) or 4 (f32)
// elements per 16-byte vector on the vector path, N = 1 on the scalar path. The host picks the vector
// path only when width % N == 0, both strides % N == 0 and all three base pointers are 16-byte aligned,
// so every vector is aligned and stays inside its row. Indices are 64-bit.
#include "swiglu.cuh"

namespace qk {

template <typename T, bool VEC>
__device__ __forceinline__ void swiglu_all(const T* __restrict__ gate, const T* __restrict__ up,
                                           T* __restrict__ out, long long rows, int width,
                                           long long gate_stride, long long up_stride) {
    constexpr int N = VEC ? Vec16<T>::N : 1;
    const long long per_row = width / N;
    const long long items = rows * per_row;
    for (long long item = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; item < items;
         item += static_cast<long long>(gridDim.x) * blockDim.x) {
        const long long r = item / per_row;
        const long long c = (item - r * per_row) * N;  // first column of this work item
        const T* g = gate + r * gate_stride + c;
        const T* u = up + r * up_stride + c;
        T* o = out + r * width + c;
        if (VEC) {
            const Vec16<T> gv = load16(g);
            const Vec16<T> uv = load16(u);
            Vec16<T> ov;
#pragma unroll
            for (int j = 0; j < Vec16<T>::N; ++j) ov.v[j] = swiglu_one(gv.v[j], uv.v[j]);
            store16(o, ov);
        } else {
            *o = swiglu_one(*g, *u);
        }
    }
}

}  // namespace qk

// Entry points: swiglu_<dtype>_<path>, path in {vec, scalar}. grid = (blocks, 1, 1), any block size
// that is a multiple of 32 (the host uses 256).
#define QK_SWIGLU_ENTRY(NAME, T, VEC)                                                              \
    extern "C" __global__ void swiglu_##NAME(const T* __restrict__ gate, const T* __restrict__ up, \
                                             T* __restrict__ out, long long rows, int width,       \
                                             long long gate_stride, long long up_stride) {         \
        qk::swiglu_all<T, VEC>(gate, up, out, rows, width, gate_stride, up_stride);                \
    }

QK_SWIGLU_ENTRY(f32_vec, float, true)
QK_SWIGLU_ENTRY(f32_scalar, float, false)
QK_SWIGLU_ENTRY(f16_vec, __half, true)
QK_SWIGLU_ENTRY(f16_scalar, __half, false)
QK_SWIGLU_ENTRY(bf16_vec, __nv_bfloat16, true)
QK_SWIGLU_ENTRY(bf16_scalar, __nv_bfloat16, false)
