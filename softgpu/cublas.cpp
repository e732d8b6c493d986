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
//
// How it runs (the result does not depend on it): each output is one chain s = fma(a_p, b_p, s) over
// p = 0 .. k-1 from s = +0, so the only freedom is which chains run side by side. op(A) is taken 64
// rows at a time (a panel), converted to f32 and transposed into [p][row] order, KC values of p at a
// time; 8-wide vector FMAs (AVX2, when the CPU has it and FMA) then advance 64 rows x 1 column, 32 x 2,
// 32 x 3 or 16 x 4 chains at once, each lane its own chain, in p order. Panels are shared out to up
// to 8 std::threads (the calling thread is one), which only read A and B and write their own panels'
// rows of C; they start with the calling thread's MXCSR. Before starting any, the task checks the
// operands against the live allocations again (a graph replayed after a cuMemFree): a fault must
// happen on the calling thread, where the runtime's handler reports it.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sched.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// One call's operands, as the task sees them when it runs.
struct Gemm {
    int m, n, k;
    bool ta, tb, tf;
    const void* A;
    int a_type, lda;
    const void* B;
    int b_type, ldb;
    void* C;
    int c_type, ldc;
    float al, be;
    size_t a_bytes, b_bytes, c_bytes;  // the spans checked when the call was made
};

// Operand loads, one per type: exactly load() without the switch.
template <int T>
inline float elem(const void* base, size_t index);
template <>
inline float elem<R_32F>(const void* base, size_t index) {
    return static_cast<const float*>(base)[index];
}
template <>
inline float elem<R_16BF>(const void* base, size_t index) {
    uint16_t bits;
    memcpy(&bits, static_cast<const char*>(base) + 2 * index, 2);
    const uint32_t f = static_cast<uint32_t>(bits) << 16;
    float out;
    memcpy(&out, &f, 4);
    return out;
}
template <>
inline float elem<R_16F>(const void* base, size_t index) {
    uint16_t bits;
    memcpy(&bits, static_cast<const char*>(base) + 2 * index, 2);
    __half_raw r;
    r.x = bits;
    return __half2float(__half(r));
}

constexpr int PANEL = 64;  // rows of op(A) per panel: 8 vectors of 8 lanes
constexpr int KC = 1024;   // values of p per packed chunk: 256 KiB, in L2; whole rows for most k

// buf[p * PANEL + r] = op(A)(i0 + r, p0 + p) as f32 (TF32-rounded with tf), for p < kc; rows past
// `rows` are 0 (their chains are computed and dropped).
template <int T>
void pack_scalar(const Gemm& g, int i0, int rows, int p0, int kc, float* buf) {
    if (g.ta) {  // row i of op(A) is contiguous: A[p + i lda]
        for (int r = 0; r < PANEL; ++r) {
            if (r >= rows) {
                for (int p = 0; p < kc; ++p) buf[p * PANEL + r] = 0.0f;
                continue;
            }
            const size_t base = static_cast<size_t>(i0 + r) * g.lda + p0;
            for (int p = 0; p < kc; ++p) {
                const float x = elem<T>(g.A, base + p);
                buf[p * PANEL + r] = g.tf ? tf32(x) : x;
            }
        }
    } else {  // column p of op(A) is contiguous: A[i + p lda]
        for (int p = 0; p < kc; ++p) {
            const size_t base = i0 + static_cast<size_t>(p0 + p) * g.lda;
            float* out = buf + p * PANEL;
            for (int r = 0; r < rows; ++r) {
                const float x = elem<T>(g.A, base + r);
                out[r] = g.tf ? tf32(x) : x;
            }
            for (int r = rows; r < PANEL; ++r) out[r] = 0.0f;
        }
    }
}

void pack_panel_scalar(const Gemm& g, int i0, int rows, int p0, int kc, float* buf) {
    switch (g.a_type) {
        case R_32F: pack_scalar<R_32F>(g, i0, rows, p0, kc, buf); break;
        case R_16BF: pack_scalar<R_16BF>(g, i0, rows, p0, kc, buf); break;
        default: pack_scalar<R_16F>(g, i0, rows, p0, kc, buf); break;
    }
}

// acc[j * PANEL + r] = fma(buf[p * PANEL + r], bcol[j][p], acc[...]) for p = 0 .. kc-1 in order:
// the chain of dot(), one output at a time. Without FMA hardware __builtin_fmaf is the C library's
// fmaf(a, b, s), as in dot()'s default clone.
void micro_scalar(const float* buf, int kc, const float* const* bcol, int nj, float* acc) {
    for (int j = 0; j < nj; ++j) {
        float* s = acc + j * PANEL;
        for (int p = 0; p < kc; ++p) {
            const float b = bcol[j][p];
            const float* a = buf + p * PANEL;
            for (int r = 0; r < PANEL; ++r) s[r] = __builtin_fmaf(a[r], b, s[r]);
        }
    }
}

#if defined(__x86_64__)
// The same with dot()'s fma clone's instruction: vfmadd231ss with the accumulator as destination, b
// as the second source and a as the third. Written out, as the compiler could swap the factors, and
// then a NaN's payload could differ (the result is the first NaN operand in that order).
__attribute__((target("fma"))) inline float fma_ordered(float a, float b, float c) {
    __asm__("vfmadd231ss %2, %1, %0" : "+x"(c) : "x"(b), "xm"(a));
    return c;
}

__attribute__((target("fma"))) void micro_scalar_fma(const float* buf, int kc, const float* const* bcol, int nj, float* acc) {
    for (int j = 0; j < nj; ++j) {
        float* s = acc + j * PANEL;
        for (int p = 0; p < kc; ++p) {
            const float b = bcol[j][p];
            const float* a = buf + p * PANEL;
            for (int r = 0; r < PANEL; ++r) s[r] = fma_ordered(a[r], b, s[r]);
        }
    }
}
#endif

#if defined(__x86_64__)
#define QK_AVX2 __attribute__((target("avx2,fma")))

QK_AVX2 inline __m256 tf32_v(__m256 x) {  // tf32() on 8 lanes
    const __m256i b = _mm256_castps_si256(x);
    const __m256i e = _mm256_set1_epi32(0x7f800000);
    const __m256i not_finite = _mm256_cmpeq_epi32(_mm256_and_si256(b, e), e);
    const __m256i r = _mm256_and_si256(_mm256_add_epi32(b, _mm256_set1_epi32(0x1000)), _mm256_set1_epi32(~0x1fff));
    return _mm256_castsi256_ps(_mm256_blendv_epi8(r, b, not_finite));
}

template <int T>
QK_AVX2 inline __m256 load8(const char* p);  // 8 consecutive elements as f32
template <>
QK_AVX2 inline __m256 load8<R_32F>(const char* p) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
}
template <>
QK_AVX2 inline __m256 load8<R_16BF>(const char* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// Transposed panel packing for op(A) = A^T (rows contiguous), a full panel: 8 x 8 blocks through
// registers. Bits are moved, never computed on, except by tf32_v (= tf32()).
template <int T>
QK_AVX2 void pack_t_avx2(const Gemm& g, int i0, int p0, int kc, float* buf) {
    constexpr size_t ES = T == R_32F ? 4 : 2;
    const int kc8 = kc & ~7;
    for (int q = 0; q < PANEL / 8; ++q) {
        const char* row[8];
        for (int r = 0; r < 8; ++r) {
            row[r] = static_cast<const char*>(g.A) + (static_cast<size_t>(i0 + q * 8 + r) * g.lda + p0) * ES;
        }
        // What is read after these 8 rows: the next 8, or the first 8 of the next chunk, or of the
        // next panel. Fetched a group ahead (many rows read side by side defeat the hardware's
        // prefetcher); prefetches do not fault, past the end of A either.
        uintptr_t ahead;
        if (q + 1 < PANEL / 8) {
            ahead = reinterpret_cast<uintptr_t>(row[0]) + 8 * static_cast<uintptr_t>(g.lda) * ES;
        } else if (p0 + kc < g.k) {
            ahead = reinterpret_cast<uintptr_t>(g.A) + (static_cast<uintptr_t>(i0) * g.lda + p0 + kc) * ES;
        } else {
            ahead = reinterpret_cast<uintptr_t>(g.A) + static_cast<uintptr_t>(i0 + PANEL) * g.lda * ES;
        }
        const uintptr_t stride = static_cast<uintptr_t>(g.lda) * ES;
        float* out = buf + q * 8;
        for (int p = 0; p < kc8; p += 8) {
            if (((p * ES) & 63) == 0) {
                for (int r = 0; r < 8; ++r) _mm_prefetch(reinterpret_cast<const char*>(ahead + p * ES + r * stride), _MM_HINT_T0);
            }
            __m256 v0 = load8<T>(row[0] + p * ES), v1 = load8<T>(row[1] + p * ES);
            __m256 v2 = load8<T>(row[2] + p * ES), v3 = load8<T>(row[3] + p * ES);
            __m256 v4 = load8<T>(row[4] + p * ES), v5 = load8<T>(row[5] + p * ES);
            __m256 v6 = load8<T>(row[6] + p * ES), v7 = load8<T>(row[7] + p * ES);
            if (g.tf) {
                v0 = tf32_v(v0), v1 = tf32_v(v1), v2 = tf32_v(v2), v3 = tf32_v(v3);
                v4 = tf32_v(v4), v5 = tf32_v(v5), v6 = tf32_v(v6), v7 = tf32_v(v7);
            }
            const __m256 t0 = _mm256_unpacklo_ps(v0, v1), t1 = _mm256_unpackhi_ps(v0, v1);
            const __m256 t2 = _mm256_unpacklo_ps(v2, v3), t3 = _mm256_unpackhi_ps(v2, v3);
            const __m256 t4 = _mm256_unpacklo_ps(v4, v5), t5 = _mm256_unpackhi_ps(v4, v5);
            const __m256 t6 = _mm256_unpacklo_ps(v6, v7), t7 = _mm256_unpackhi_ps(v6, v7);
            const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
            const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
            const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
            const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
            float* o = out + p * PANEL;
            _mm256_storeu_ps(o + 0 * PANEL, _mm256_permute2f128_ps(s0, s4, 0x20));
            _mm256_storeu_ps(o + 1 * PANEL, _mm256_permute2f128_ps(s1, s5, 0x20));
            _mm256_storeu_ps(o + 2 * PANEL, _mm256_permute2f128_ps(s2, s6, 0x20));
            _mm256_storeu_ps(o + 3 * PANEL, _mm256_permute2f128_ps(s3, s7, 0x20));
            _mm256_storeu_ps(o + 4 * PANEL, _mm256_permute2f128_ps(s0, s4, 0x31));
            _mm256_storeu_ps(o + 5 * PANEL, _mm256_permute2f128_ps(s1, s5, 0x31));
            _mm256_storeu_ps(o + 6 * PANEL, _mm256_permute2f128_ps(s2, s6, 0x31));
            _mm256_storeu_ps(o + 7 * PANEL, _mm256_permute2f128_ps(s3, s7, 0x31));
        }
        for (int p = kc8; p < kc; ++p) {
            for (int r = 0; r < 8; ++r) {
                const float x = elem<T>(row[r], p);
                out[p * PANEL + r] = g.tf ? tf32(x) : x;
            }
        }
    }
}

// c = fma(a, b, c) in each lane, as dot() computes s = fma(a[p], b[p], s): the same instruction form
// (vfmadd231, the accumulator as destination, b as the second source, a as the third), so that even a
// NaN's payload (the first NaN operand in that order) is the same. Written out because the compiler
// may otherwise swap the two factors.
QK_AVX2 inline __m256 fma_lanes(__m256 a, __m256 b, __m256 c) {
    __asm__("vfmadd231ps %2, %1, %0" : "+x"(c) : "x"(b), "xm"(a));
    return c;
}

// RV vectors (8 RV rows, from row offset r0 of the panel) x NJ columns; every lane of every
// accumulator is one output's chain, advanced in p order by one fused multiply-add per p.
template <int RV, int NJ>
QK_AVX2 void micro_avx2(const float* buf, int kc, const float* const* bcol, float* acc, int r0) {
    __m256 c[NJ][RV];
    const float* b[NJ];
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) {
        b[j] = bcol[j];
#pragma GCC unroll 8
        for (int v = 0; v < RV; ++v) c[j][v] = _mm256_loadu_ps(acc + j * PANEL + r0 + 8 * v);
    }
    const float* a = buf + r0;
    for (int p = 0; p < kc; ++p, a += PANEL) {
        __m256 av[RV];
#pragma GCC unroll 8
        for (int v = 0; v < RV; ++v) av[v] = _mm256_loadu_ps(a + 8 * v);
#pragma GCC unroll 8
        for (int j = 0; j < NJ; ++j) {
            const __m256 bj = _mm256_broadcast_ss(b[j] + p);
#pragma GCC unroll 8
            for (int v = 0; v < RV; ++v) c[j][v] = fma_lanes(av[v], bj, c[j][v]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < NJ; ++j) {
#pragma GCC unroll 8
        for (int v = 0; v < RV; ++v) _mm256_storeu_ps(acc + j * PANEL + r0 + 8 * v, c[j][v]);
    }
}

template <int RV, int NJ>
QK_AVX2 void micro_panel_avx2(const float* buf, int kc, const float* const* bcol, float* acc) {
    for (int r0 = 0; r0 < PANEL; r0 += 8 * RV) micro_avx2<RV, NJ>(buf, kc, bcol, acc, r0);
}

#endif

enum class Isa { Plain, Fma, Avx2Fma };

Isa isa() {
#if defined(__x86_64__)
    static const Isa found = !__builtin_cpu_supports("fma")   ? Isa::Plain
                             : !__builtin_cpu_supports("avx2") ? Isa::Fma
                                                               : Isa::Avx2Fma;
    return found;
#else
    return Isa::Plain;
#endif
}

// All n columns of one panel over one chunk of p: the column tiles one after another.
void micro_panel(Isa which, const float* buf, int kc, const float* bt, int n, int k, int p0, float* acc) {
    const float* bcol[4];
    for (int j0 = 0; j0 < n;) {
        const int nj = std::min(4, n - j0);
        for (int j = 0; j < nj; ++j) bcol[j] = bt + static_cast<size_t>(j0 + j) * k + p0;
        float* a = acc + static_cast<size_t>(j0) * PANEL;
        switch (which) {
#if defined(__x86_64__)
            case Isa::Avx2Fma:
                switch (nj) {
                    case 1: micro_panel_avx2<8, 1>(buf, kc, bcol, a); break;
                    case 2: micro_panel_avx2<4, 2>(buf, kc, bcol, a); break;
                    case 3: micro_panel_avx2<4, 3>(buf, kc, bcol, a); break;
                    default: micro_panel_avx2<2, 4>(buf, kc, bcol, a); break;
                }
                break;
            case Isa::Fma: micro_scalar_fma(buf, kc, bcol, nj, a); break;
#endif
            default: micro_scalar(buf, kc, bcol, nj, a); break;
        }
        j0 += nj;
    }
}

// Each worker's packed chunk and accumulators, kept between calls (no thread_local in this library:
// a pool under a mutex). A call takes at most QKSOFT_GEMM_MAX_THREADS of them.
struct Scratch {
    std::unique_ptr<float[]> buf{new float[static_cast<size_t>(PANEL) * KC]};
    std::vector<float> acc;
};
std::mutex g_scratch_mutex;
std::vector<std::unique_ptr<Scratch>> g_scratch;

std::unique_ptr<Scratch> take_scratch() {
    {
        std::lock_guard<std::mutex> lock(g_scratch_mutex);
        if (!g_scratch.empty()) {
            std::unique_ptr<Scratch> s = std::move(g_scratch.back());
            g_scratch.pop_back();
            return s;
        }
    }
    return std::unique_ptr<Scratch>(new Scratch());
}

void give_scratch(std::unique_ptr<Scratch> s) {
    std::lock_guard<std::mutex> lock(g_scratch_mutex);
    g_scratch.push_back(std::move(s));
}

// x * y and x + y. On x86-64 written out so that when both are NaN the result is x's (the first
// source), as the compiler ordered the f32 path of the epilogue before (alpha * s, beta * C, then
// v + beta C); 16-bit outputs store every NaN as 0x7fff.
inline float mul_xy(float x, float y) {
#if defined(__x86_64__)
    __asm__("mulss %1, %0" : "+x"(x) : "xm"(y));
    return x;
#else
    return x * y;
#endif
}
inline float add_xy(float x, float y) {
#if defined(__x86_64__)
    __asm__("addss %1, %0" : "+x"(x) : "xm"(y));
    return x;
#else
    return x + y;
#endif
}

// Panels [from the shared counter] until none is left: every output of a panel's rows, then its
// alpha/beta epilogue (as before: v = alpha s, then v + beta C when beta != 0, rounded to C's type).
void gemm_worker(const Gemm& g, const float* bt, std::atomic<int>* next, int panels) {
    const Isa found = isa();
    std::unique_ptr<Scratch> scratch = take_scratch();
    scratch->acc.resize(static_cast<size_t>(g.n) * PANEL);
    float* const buf = scratch->buf.get();
    float* const acc = scratch->acc.data();
    for (;;) {
        const int panel = next->fetch_add(1, std::memory_order_relaxed);
        if (panel >= panels) break;
        const int i0 = panel * PANEL, rows = std::min(PANEL, g.m - i0);
        std::fill(acc, acc + static_cast<size_t>(g.n) * PANEL, 0.0f);  // s = 0.0f
        for (int p0 = 0; p0 < g.k; p0 += KC) {
            const int kc = std::min(KC, g.k - p0);
#if defined(__x86_64__)
            const bool avx2 = found == Isa::Avx2Fma;
            if (avx2 && g.ta && rows == PANEL && g.a_type == R_32F) {
                pack_t_avx2<R_32F>(g, i0, p0, kc, buf);
            } else if (avx2 && g.ta && rows == PANEL && g.a_type == R_16BF) {
                pack_t_avx2<R_16BF>(g, i0, p0, kc, buf);
            } else
#endif
            {
                pack_panel_scalar(g, i0, rows, p0, kc, buf);
            }
            micro_panel(found, buf, kc, bt, g.n, g.k, p0, acc);
        }
        for (int j = 0; j < g.n; ++j) {
            for (int r = 0; r < rows; ++r) {
                const size_t c_idx = i0 + r + static_cast<size_t>(j) * g.ldc;
                const float s = acc[static_cast<size_t>(j) * PANEL + r];
                float v = mul_xy(g.al, s);
                if (g.be != 0.0f) v = add_xy(v, mul_xy(g.be, load(g.c_type, g.C, c_idx)));
                store(g.c_type, g.C, c_idx, v);
            }
        }
    }
    give_scratch(std::move(scratch));
}

#ifndef QKSOFT_GEMM_MAX_THREADS
#define QKSOFT_GEMM_MAX_THREADS 8
#endif
constexpr double GEMM_WORK_PER_THREAD = 1 << 20;  // multiply-adds that pay for starting a thread

int gemm_threads(const Gemm& g, int panels) {
    const double work = static_cast<double>(g.m) * g.n * std::max(g.k, 1);
    int want = static_cast<int>(std::min<double>(QKSOFT_GEMM_MAX_THREADS, work / GEMM_WORK_PER_THREAD));
    want = std::min(want, panels);
    if (want <= 1) return 1;
    int cpus = static_cast<int>(std::thread::hardware_concurrency());
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int allowed = CPU_COUNT(&set);
        if (allowed > 0 && (cpus <= 0 || allowed < cpus)) cpus = allowed;
    }
    return std::max(1, std::min(want, cpus));
}

void run_gemm(const Gemm& g) {
    // op(B) column j as a contiguous row of k floats (TF32-rounded with tf).
    std::vector<float> bt(static_cast<size_t>(g.n) * g.k);
    for (int j = 0; j < g.n; ++j) {
        for (int p = 0; p < g.k; ++p) {
            const size_t idx = g.tb ? j + static_cast<size_t>(p) * g.ldb : p + static_cast<size_t>(j) * g.ldb;
            const float x = load(g.b_type, g.B, idx);
            bt[static_cast<size_t>(j) * g.k + p] = g.tf ? tf32(x) : x;
        }
    }
    const int panels = (g.m + PANEL - 1) / PANEL;
    std::atomic<int> next{0};
    int threads = gemm_threads(g, panels);
    if (threads > 1) {
        // Other threads must not fault (the runtime's handler leaves the task only on this one):
        // an operand freed since the call was made (a graph replay) runs here alone, and faults here.
        std::string why;
        if ((g.k > 0 && !qksoft::mem_check(reinterpret_cast<uint64_t>(g.A), g.a_bytes, &why)) ||
            (g.k > 0 && !qksoft::mem_check(reinterpret_cast<uint64_t>(g.B), g.b_bytes, &why)) ||
            !qksoft::mem_check(reinterpret_cast<uint64_t>(g.C), g.c_bytes, &why)) {
            threads = 1;
        }
    }
    if (threads == 1) {
        gemm_worker(g, bt.data(), &next, panels);
        return;
    }
#if defined(__x86_64__)
    const unsigned csr = _mm_getcsr();  // rounding, FTZ and DAZ as on the calling thread
#else
    fenv_t env;
    fegetenv(&env);
#endif
    std::vector<std::thread> workers;
    workers.reserve(threads - 1);
    for (int t = 1; t < threads; ++t) {
        try {
            workers.emplace_back([&]() {
#if defined(__x86_64__)
                _mm_setcsr(csr);
#else
                fesetenv(&env);
#endif
                try {
                    gemm_worker(g, bt.data(), &next, panels);
                } catch (...) {
                    // Its buffers could not be had (it takes a panel only after that): the others
                    // take the panels.
                }
            });
        } catch (...) {
            break;  // no thread to be had: the others (at least this one) take its panels
        }
    }
    try {
        gemm_worker(g, bt.data(), &next, panels);
    } catch (...) {
        for (std::thread& w : workers) w.join();
        throw;
    }
    for (std::thread& w : workers) w.join();
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
// A refused call says why on stderr (the status alone would not) and returns `status`.
static int refuse(int status, const std::string& why) {
    fprintf(stderr, "qwen-kernels software device: %s\n", why.c_str());
    fflush(stderr);
    return status;
}

// The workspace is not used (the GEMM needs none), but it must be device memory of the size given,
// as cuBLAS would write it: a pointer outside every allocation, or a size past its end, is refused.
QKSOFT_API int cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
    if (!handle) return NOT_INITIALIZED;
    std::string why;
    if (bytes > 0 && !qksoft::mem_check(reinterpret_cast<uint64_t>(workspace), bytes, &why)) {
        return refuse(INVALID_VALUE, "cublasSetWorkspace: " + why);
    }
    return SUCCESS;
}
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

QKSOFT_API int cublasGemmEx(cublasHandle_t handle, int transa, int transb, int m, int n, int k, const void* alpha,
                            const void* A, int a_type, int lda, const void* B, int b_type, int ldb, const void* beta,
                            void* C, int c_type, int ldc, int compute, int /*algo*/) {
    if (!handle) return NOT_INITIALIZED;
    if ((transa != OP_N && transa != OP_T && transa != OP_C) || (transb != OP_N && transb != OP_T && transb != OP_C)) {
        return refuse(INVALID_VALUE, "cublasGemmEx: transa/transb must be N, T or C");
    }
    if (m < 0 || n < 0 || k < 0) return refuse(INVALID_VALUE, "cublasGemmEx: m, n, k must be >= 0");
    const bool ta = transa != OP_N, tb = transb != OP_N;  // real types: C is T
    if (lda < std::max(1, ta ? k : m) || ldb < std::max(1, tb ? n : k) || ldc < std::max(1, m)) {
        return refuse(INVALID_VALUE, "cublasGemmEx: leading dimension too small: lda " + std::to_string(lda) + ", ldb " +
                                         std::to_string(ldb) + ", ldc " + std::to_string(ldc) + " for m " +
                                         std::to_string(m) + ", n " + std::to_string(n) + ", k " + std::to_string(k));
    }
    auto known = [](int t) { return t == R_32F || t == R_16F || t == R_16BF; };
    if (!known(a_type) || a_type != b_type || !known(c_type) || (c_type != a_type && c_type != R_32F)) {
        return refuse(NOT_SUPPORTED, "cublasGemmEx: type combination A " + std::to_string(a_type) + ", B " + std::to_string(b_type) +
                                         ", C " + std::to_string(c_type));
    }
    const bool tf = compute == COMPUTE_32F_FAST_TF32;
    if (!(compute == COMPUTE_32F || compute == COMPUTE_32F_PEDANTIC || (tf && a_type == R_32F))) {
        return refuse(NOT_SUPPORTED, "cublasGemmEx: compute type " + std::to_string(compute));
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
        return refuse(INVALID_VALUE, "cublasGemmEx: A: " + why);
    }
    if (k > 0 && !qksoft::mem_check(reinterpret_cast<uint64_t>(B), span(tb ? n : k, tb ? k : n, ldb, b_type), &why)) {
        return refuse(INVALID_VALUE, "cublasGemmEx: B: " + why);
    }
    if (!qksoft::mem_check(reinterpret_cast<uint64_t>(C), span(m, n, ldc, c_type), &why)) {
        return refuse(INVALID_VALUE, "cublasGemmEx: C: " + why);
    }
    Gemm g;
    g.m = m, g.n = n, g.k = k, g.ta = ta, g.tb = tb, g.tf = tf;
    g.A = A, g.a_type = a_type, g.lda = lda, g.B = B, g.b_type = b_type, g.ldb = ldb;
    g.C = C, g.c_type = c_type, g.ldc = ldc, g.al = al, g.be = be;
    g.a_bytes = k > 0 ? span(ta ? k : m, ta ? m : k, lda, a_type) : 0;
    g.b_bytes = k > 0 ? span(tb ? n : k, tb ? k : n, ldb, b_type) : 0;
    g.c_bytes = span(m, n, ldc, c_type);
    auto task = [g]() {
        // op(A) is m x k, op(B) k x n, C m x n, column-major with their leading dimensions.
        const size_t ea = element_bytes(g.a_type), eb = element_bytes(g.b_type), ec = element_bytes(g.c_type);
        const qksoft::tools::GemmOperand a{reinterpret_cast<uint64_t>(g.A), size_t(g.ta ? g.k : g.m), size_t(g.ta ? g.m : g.k),
                                           size_t(g.lda), ea};
        const qksoft::tools::GemmOperand b{reinterpret_cast<uint64_t>(g.B), size_t(g.tb ? g.n : g.k), size_t(g.tb ? g.k : g.n),
                                           size_t(g.ldb), eb};
        const qksoft::tools::GemmOperand c{reinterpret_cast<uint64_t>(g.C), size_t(g.m), size_t(g.n), size_t(g.ldc), ec};
        std::string why;
        if (!qksoft::tools::gemm(g.k > 0 ? a : qksoft::tools::GemmOperand{}, g.k > 0 ? b : qksoft::tools::GemmOperand{}, c,
                                 g.be != 0.0f, &why)) {
            qksoft::fail_host_task(why);
            return;
        }
        run_gemm(g);
    };
    const int e = qksoft::enqueue_host(handle->stream, "cublasGemmEx", task);
    return e == CUDA_SUCCESS ? SUCCESS : EXECUTION_FAILED;
}
