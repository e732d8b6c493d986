// ptx.cuh: what differs between a GPU and the software device, in one place: every inline PTX
// instruction the kernels use (one named function each, and nowhere else), and the launch's dynamic
// shared memory.
//
// On a GPU (nvcc) each function is the one `asm` statement below it. On the software device
// (softgpu/, kernels compiled as host C++ with QK_SOFTGPU defined) each is a call into the device
// runtime, which implements the instruction from the PTX ISA's description: the warp-collective
// ones (mma.sync, ldmatrix) gather all 32 lanes first, exactly as `.sync.aligned` requires, and
// place every element where the ISA's fragment tables put it. This is the only file of cuda/ with
// an #if for the two targets; no kernel has one.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type";
// g = lane / 4, t = lane % 4; two 16-bit elements per 32-bit register, the lower column or k in the
// low half):
//   A (16 x 16, row-major):  a[0] = (row g,   k 2t..2t+1)   a[1] = (row g+8, k 2t..2t+1)
//                            a[2] = (row g,   k 2t+8..+9)   a[3] = (row g+8, k 2t+8..+9)
//   B (16 x 8, "col"):       b0 = (k 2t..2t+1, col g)        b1 = (k 2t+8..+9, col g)
//   C, D (16 x 8, FP32):     c[0..1] = (row g, col 2t..2t+1)  c[2..3] = (row g+8, col 2t..2t+1)
// ldmatrix .x4 ("Warp-level matrix load instruction: ldmatrix"): lanes 8i .. 8i+7 give the row
// addresses of 8 x 8 matrix i (16-byte aligned, shared memory); register r[i] of lane (g, t) gets
// (row g, columns 2t..2t+1) of matrix i, or with .trans (rows 2t..2t+1, column g).
#pragma once

#include <stdint.h>

// QK_CALL_SITE, as the last parameter of a function that issues one of these instructions (the
// functions below, and any wrapper of them in a kernel file), makes the software device report the
// instruction at the line of the kernel that called it, not at a line of this file: there it adds
// `file` and `line` parameters whose defaults the host compiler evaluates at the call site
// (__builtin_FILE, __builtin_LINE), and QK_AT_CALL_SITE passes them on. The software device matches
// a warp's lanes at a collective by that call site, so half a warp at one mma call and half at
// another is a divergent warp. On a GPU both are empty: the code nvcc compiles is unchanged.
#if defined(QK_SOFTGPU)
#define QK_CALL_SITE , const char* file = __builtin_FILE(), int line = __builtin_LINE()
#define QK_AT_CALL_SITE , file, line
#else
#define QK_CALL_SITE
#define QK_AT_CALL_SITE
#endif

namespace qk {

#if defined(QK_SOFTGPU)

// 16-byte vector load and store (ld / st .v4.b32: one access, which must be 16-byte aligned). The
// host compiler would split the 16 bytes into smaller accesses; the device runtime makes it the one
// access a GPU makes, for the tools (softgpu/tools.cpp) to check and count as such. Values cross
// into the runtime by value (kernel_api.h's Bits16): a register's contents are not memory.
template <typename V> __device__ __forceinline__ V ld16(const V* p) {
    static_assert(sizeof(V) == 16, "a 16-byte vector");
    const ::qksoft::Bits16 b = ::qksoft::ptx_ld16(p);
    V v;
    memcpy(&v, &b, 16);
    return v;
}
template <typename V> __device__ __forceinline__ void st16(V* p, const V& v) {
    static_assert(sizeof(V) == 16, "a 16-byte vector");
    ::qksoft::Bits16 b;
    memcpy(&b, &v, 16);
    ::qksoft::ptx_st16(p, b);
}

// 16-byte global -> shared copy that bypasses registers; `valid == false` copies nothing and
// zero-fills the 16 bytes (src-size 0). `src` must still be a mapped address.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid QK_CALL_SITE) {
    ::qksoft::ptx_cp_async16(dst, src, valid ? 16 : 0, file, line);
}
// Close the group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { ::qksoft::ptx_cp_async_commit(); }
// Wait until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING> __device__ __forceinline__ void cp_async_wait(const char* file = __builtin_FILE(),
                                                                    int line = __builtin_LINE()) {
    ::qksoft::ptx_cp_async_wait(PENDING, file, line);
}
// D = A B + C, m16n8k16, 16-bit inputs, FP32 accumulation (c is C on entry, D on return); the
// registers cross into the runtime by value.
__device__ __forceinline__ void soft_mma_m16n8k16(::qksoft::MmaType type, float (&c)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1, const char* file, int line) {
    const ::qksoft::Floats4 cin = {{c[0], c[1], c[2], c[3]}};
    const ::qksoft::Bits16 ain = {a[0] | static_cast<uint64_t>(a[1]) << 32, a[2] | static_cast<uint64_t>(a[3]) << 32};
    const ::qksoft::Floats4 d = ::qksoft::ptx_mma_m16n8k16(type, cin, ain, b0, b1, file, line);
    c[0] = d.v[0], c[1] = d.v[1], c[2] = d.v[2], c[3] = d.v[3];
}
__device__ __forceinline__ void mma_m16n8k16_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1
                                                 QK_CALL_SITE) {
    soft_mma_m16n8k16(::qksoft::MmaType::F16, c, a, b0, b1, file, line);
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1
                                                  QK_CALL_SITE) {
    soft_mma_m16n8k16(::qksoft::MmaType::BF16, c, a, b0, b1, file, line);
}
// Four 8 x 8 matrices of 16-bit elements from shared memory (see the header).
template <bool TRANS> __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row QK_CALL_SITE) {
    const ::qksoft::Bits16 b = ::qksoft::ptx_ldmatrix_x4(TRANS, row, file, line);
    r[0] = static_cast<uint32_t>(b.lo), r[1] = static_cast<uint32_t>(b.lo >> 32);
    r[2] = static_cast<uint32_t>(b.hi), r[3] = static_cast<uint32_t>(b.hi >> 32);
}
// The launch's dynamic shared memory (`sharedMemBytes` of the launch), 16-byte aligned.
template <typename T> __device__ __forceinline__ T* dynamic_shared() {
    return static_cast<T*>(::qksoft::dynamic_shared());
}
// A hint: bring the L2 line of global address p in (see the GPU version below).
__device__ __forceinline__ void prefetch_l2(const void* p) { ::qksoft::ptx_prefetch_l2(p); }
// Programmatic dependent launch (see the GPU versions below).
__device__ __forceinline__ void grid_dependency_wait() { ::qksoft::ptx_griddepcontrol_wait(); }
__device__ __forceinline__ void grid_dependents_launch() { ::qksoft::ptx_griddepcontrol_launch_dependents(); }

#else

template <typename V> __device__ __forceinline__ V ld16(const V* p) { return *p; }
template <typename V> __device__ __forceinline__ void st16(V* p, const V& v) { *p = v; }

__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    const uint32_t d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int PENDING> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
}
__device__ __forceinline__ void mma_m16n8k16_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <bool TRANS> __device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
    const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
    if (TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
    }
}
template <typename T> __device__ __forceinline__ T* dynamic_shared() {
    extern __shared__ __align__(16) unsigned char qk_dynamic_shared[];
    return reinterpret_cast<T*>(qk_dynamic_shared);
}
// prefetch.global.L2: a hint that the line of global address p will be read soon; it reads nothing
// the kernel sees, so it may run before griddepcontrol.wait.
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }
// Programmatic dependent launch (PTX ISA "griddepcontrol", sm_90). A kernel launched with the
// programmatic-stream-serialization attribute may start while the kernel before it on the stream
// is still running: grid_dependency_wait() returns once that kernel has completed and its memory
// writes are visible, so a thread calls it before it touches anything that kernel (or an earlier
// one) wrote. grid_dependents_launch() lets the next programmatic launch start now rather than at
// this grid's end. Without the attribute (or below sm_90, where the instructions do not exist and
// these compile to nothing) the launch waits for its predecessor anyway, and both are no-ops.
__device__ __forceinline__ void grid_dependency_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependents_launch() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

#endif

}  // namespace qk
