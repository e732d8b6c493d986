// cublas.cpp: the part of cuBLAS qwen-kernels calls, for the software device. Built into a shared
// library whose SONAME is libcublas.so (loaded by absolute path after the software libcuda.so, so
// cudarc's dlopen("libcublas.so") binds to it).
//
// cublasGemmEx with cuBLAS' own semantics, so that the row-major derivation in src/ops/gemm.rs is
// exercised, not assumed:
//     C = alpha op(A) op(B) + beta C, column-major, op(A) m x k, op(B) k x n, C m x n
//     op(X) = X (CUBLAS_OP_N) or X^T (CUBLAS_OP_T); element (i, j) of a matrix with leading
//     dimension ld is at i + j ld. lda >= max(1, transa == N ? m : k), ldb >= max(1, transb == N ?
//     k : n), ldc >= max(1, m), else CUBLAS_STATUS_INVALID_VALUE.
//     A and B: f16, bf16 or f32 (one type); C: that type or f32. Compute type CUBLAS_COMPUTE_32F
//     (and _PEDANTIC): one FP32 accumulator per output, the products fused into it in k order;
//     CUBLAS_COMPUTE_32F_FAST_TF32 (f32 inputs only) first rounds A and B to TF32 (10 mantissa bits,
//     to nearest, ties away, as cvt.rna.tf32.f32). Then alpha * sum + beta * C in FP32, rounded once
//     to C's type; with beta == 0, C is not read (cuBLAS' rule: a NaN in C does not propagate).
//     alpha and beta are read when the call is made (CUBLAS_POINTER_MODE_HOST).
// The work is queued on the handle's stream, so it is ordered with the kernels and recorded by a
// stream capture. cuBLAS on a GPU sums in another order (and may split k); tolerances count that.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "runtime.h"

namespace {

// Values of cublas_api.h and library_types.h (CUDA 13.0).
enum Status { SUCCESS = 0, NOT_INITIALIZED = 1, ALLOC_FAILED = 3, INVALID_VALUE = 7, EXECUTION_FAILED = 13, NOT_SUPPORTED = 15 };
enum Op { OP_N = 0, OP_T = 1, OP_C = 2 };
enum DataType { R_32F = 0, R_16F = 2, R_16BF = 14 };
enum Compute { COMPUTE_32F = 68, COMPUTE_32F_PEDANTIC = 69, COMPUTE_32F_FAST_TF32 = 77 };
constexpr int DISALLOW_REDUCED_PRECISION_REDUCTION = 16;

struct Handle {
    void* stream = nullptr;
    int math_mode = 0;
    int pointer_mode = 0;
};

int element_bytes(int t) { return t == R_32F ? 4 : 2; }

float load(int type, const void* base, size_t index) {
    if (type == R_32F) return static_cast<const float*>(base)[index];
    uint16_t bits;
    memcpy(&bits, static_cast<const char*>(base) + 2 * index, 2);
    if (type == R_16F) {
        __half_raw r;
        r.x = bits;
        return __half2float(__half(r));
    }
    uint32_t f = static_cast<uint32_t>(bits) << 16;
    float out;
    memcpy(&out, &f, 4);
    return out;
}

void store(int type, void* base, size_t index, float v) {
    if (type == R_32F) {
        static_cast<float*>(base)[index] = v;
    } else if (type == R_16F) {
        const __half h = __float2half_rn(v);
        memcpy(static_cast<char*>(base) + 2 * index, &h, 2);
    } else {
        const __nv_bfloat16 h = __float2bfloat16_rn(v);
        memcpy(static_cast<char*>(base) + 2 * index, &h, 2);
    }
}

float tf32(float x) {
    if (!std::isfinite(x)) return x;
    uint32_t b;
    memcpy(&b, &x, 4);
    b = (b + 0x1000u) & ~0x1fffu;  // 13 low bits: round half away from zero on the magnitude
    memcpy(&x, &b, 4);
    return x;
}

#if defined(__x86_64__)
__attribute__((target_clones("fma", "default")))
#endif
float dot(const float* a, const float* b, int k) {
    float s = 0.0f;
    for (int p = 0; p < k; ++p) s = __builtin_fmaf(a[p], b[p], s);
    return s;
}

}  // namespace

#define QKSOFT_API extern "C" __attribute__((visibility("default")))

typedef Handle* cublasHandle_t;

QKSOFT_API int cublasCreate_v2(cublasHandle_t* handle) {
    if (!handle) return INVALID_VALUE;
    *handle = new Handle();
    return SUCCESS;
}
QKSOFT_API int cublasDestroy_v2(cublasHandle_t handle) {
    if (!handle) return NOT_INITIALIZED;
    delete handle;
    return SUCCESS;
}
QKSOFT_API int cublasSetStream_v2(cublasHandle_t handle, CUstream stream) {
    if (!handle) return NOT_INITIALIZED;
    handle->stream = stream;
    return SUCCESS;
}
QKSOFT_API int cublasGetStream_v2(cublasHandle_t handle, CUstream* stream) {
    if (!handle) return NOT_INITIALIZED;
    if (!stream) return INVALID_VALUE;
    *stream = static_cast<CUstream>(handle->stream);
    return SUCCESS;
}
QKSOFT_API int cublasSetMathMode(cublasHandle_t handle, int mode) {
    if (!handle) return NOT_INITIALIZED;
    handle->math_mode = mode;
    return SUCCESS;
}
QKSOFT_API int cublasGetMathMode(cublasHandle_t handle, int* mode) {
    if (!handle) return NOT_INITIALIZED;
    if (!mode) return INVALID_VALUE;
    *mode = handle->math_mode;
    return SUCCESS;
}
QKSOFT_API int cublasSetPointerMode_v2(cublasHandle_t handle, int mode) {
    if (!handle) return NOT_INITIALIZED;
    if (mode != 0) return NOT_SUPPORTED;  // device pointer mode is not used by the crate
    handle->pointer_mode = mode;
    return SUCCESS;
}
QKSOFT_API int cublasGetPointerMode_v2(cublasHandle_t handle, int* mode) {
    if (!handle) return NOT_INITIALIZED;
    if (!mode) return INVALID_VALUE;
    *mode = handle->pointer_mode;
    return SUCCESS;
}
QKSOFT_API int cublasSetWorkspace_v2(cublasHandle_t handle, void*, size_t) { return handle ? SUCCESS : NOT_INITIALIZED; }
QKSOFT_API int cublasGetVersion_v2(cublasHandle_t, int* version) {
    if (!version) return INVALID_VALUE;
    *version = 130000;
    return SUCCESS;
}
QKSOFT_API const char* cublasGetStatusName(int status) {
    switch (status) {
        case SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "CUBLAS_STATUS_UNKNOWN";
    }
}
QKSOFT_API const char* cublasGetStatusString(int status) { return cublasGetStatusName(status); }

static int refuse(int status, const std::string& why) {
    fprintf(stderr, "qwen-kernels software device: cublasGemmEx: %s\n", why.c_str());
    fflush(stderr);
    return status;
}

QKSOFT_API int cublasGemmEx(cublasHandle_t handle, int transa, int transb, int m, int n, int k, const void* alpha,
                            const void* A, int a_type, int lda, const void* B, int b_type, int ldb, const void* beta,
                            void* C, int c_type, int ldc, int compute, int /*algo*/) {
    if (!handle) return NOT_INITIALIZED;
    if ((transa != OP_N && transa != OP_T && transa != OP_C) || (transb != OP_N && transb != OP_T && transb != OP_C)) {
        return refuse(INVALID_VALUE, "transa/transb must be N, T or C");
    }
    if (m < 0 || n < 0 || k < 0) return refuse(INVALID_VALUE, "m, n, k must be >= 0");
    const bool ta = transa != OP_N, tb = transb != OP_N;  // real types: C is T
    if (lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) || ldc < std::max(1, m)) {
        return refuse(INVALID_VALUE, "leading dimension too small: lda " + std::to_string(lda) + ", ldb " +
                                         std::to_string(ldb) + ", ldc " + std::to_string(ldc) + " for m " +
                                         std::to_string(m) + ", n " + std::to_string(n) + ", k " + std::to_string(k));
    }
    auto known = [](int t) { return t == R_32F || t == R_16F || t == R_16BF; };
    if (!known(a_type) || a_type != b_type || !known(c_type) || (c_type != a_type && c_type != R_32F)) {
        return refuse(NOT_SUPPORTED, "type combination A " + std::to_string(a_type) + ", B " + std::to_string(b_type) +
                                         ", C " + std::to_string(c_type));
    }
    const bool tf = compute == COMPUTE_32F_FAST_TF32;
    if (!(compute == COMPUTE_32F || compute == COMPUTE_32F_PEDANTIC || (tf && a_type == R_32F))) {
        return refuse(NOT_SUPPORTED, "compute type " + std::to_string(compute));
    }
    if (!alpha || !beta) return INVALID_VALUE;
    if (m == 0 || n == 0) return SUCCESS;
    const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
    // The ranges each operand spans, checked against the allocations before anything is queued.
    auto span = [](int rows, int cols, int ld, int type) {
        return (static_cast<size_t>(cols - 1) * ld + rows) * static_cast<size_t>(element_bytes(type));
    };
    std::string why;
    if (k > 0 && !qksoft::mem_check(reinterpret_cast<uint64_t>(A), span(ta ? k : m, ta ? m : k, lda, a_type), &why)) {
        return refuse(INVALID_VALUE, "A: " + why);
    }
    if (k > 0 && !qksoft::mem_check(reinterpret_cast<uint64_t>(B), span(tb ? n : k, tb ? k : n, ldb, b_type), &why)) {
        return refuse(INVALID_VALUE, "B: " + why);
    }
    if (!qksoft::mem_check(reinterpret_cast<uint64_t>(C), span(m, n, ldc, c_type), &why)) {
        return refuse(INVALID_VALUE, "C: " + why);
    }
    auto task = [=]() {
        // op(B) column j as a contiguous row of k floats; op(A) row i likewise, 64 rows at a time.
        std::vector<float> bt(static_cast<size_t>(n) * k), at;
        for (int j = 0; j < n; ++j) {
            for (int p = 0; p < k; ++p) {
                const size_t idx = tb ? j + static_cast<size_t>(p) * ldb : p + static_cast<size_t>(j) * ldb;
                const float x = load(b_type, B, idx);
                bt[static_cast<size_t>(j) * k + p] = tf ? tf32(x) : x;
            }
        }
        constexpr int ROWS = 64;
        at.resize(static_cast<size_t>(ROWS) * k);
        for (int i0 = 0; i0 < m; i0 += ROWS) {
            const int rows = std::min(ROWS, m - i0);
            for (int r = 0; r < rows; ++r) {
                const int i = i0 + r;
                for (int p = 0; p < k; ++p) {
                    const size_t idx = ta ? p + static_cast<size_t>(i) * lda : i + static_cast<size_t>(p) * lda;
                    const float x = load(a_type, A, idx);
                    at[static_cast<size_t>(r) * k + p] = tf ? tf32(x) : x;
                }
            }
            for (int j = 0; j < n; ++j) {
                for (int r = 0; r < rows; ++r) {
                    const size_t c_idx = i0 + r + static_cast<size_t>(j) * ldc;
                    const float s = dot(&at[static_cast<size_t>(r) * k], &bt[static_cast<size_t>(j) * k], k);
                    float v = al * s;
                    if (be != 0.0f) v = v + be * load(c_type, C, c_idx);
                    store(c_type, C, c_idx, v);
                }
            }
        }
    };
    const int e = qksoft::enqueue_host(handle->stream, "cublasGemmEx", task);
    return e == CUDA_SUCCESS ? SUCCESS : EXECUTION_FAILED;
}
