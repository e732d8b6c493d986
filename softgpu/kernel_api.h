// kernel_api.h: what host-compiled kernels call in the software device runtime (runtime.cpp), and
// the launch coordinates they read. Included by cuda_host.h (for kernels) and runtime.h.
#pragma once

#include <stdint.h>
#include <string.h>
#include <vector_types.h>

namespace qksoft {

// What a kernel sees of its launch; `qksoft_current` points at the running fiber's.
struct ThreadView {
    uint3 thread_idx;
    uint3 block_idx;
    dim3 block_dim;
    dim3 grid_dim;
};

enum class MmaType { F16, BF16 };

// 16 bytes passed and returned by value: two eightbytes of the SysV ABI, so they travel in
// registers (RAX:RDX, or XMM0:XMM1 for four floats). A kernel's local that went to the runtime by
// pointer would escape, and the compiler's ThreadSanitizer pass would then route every later read
// and write of it through a tools hook; by value it stays in registers, unseen by the tools, as
// a GPU's registers are.
struct Bits16 {
    uint64_t lo, hi;
};
struct Floats4 {
    float v[4];
};

// Defined in softgpu/runtime.cpp. `file`, `line`: the kernel source line, for reports.
void syncthreads(const char* file, int line);
void syncwarp(unsigned mask, const char* file, int line);
enum class Shfl { Xor, Idx, Down, Up };
uint32_t shfl(Shfl kind, unsigned mask, uint32_t value, int operand, int width, const char* file, int line);
void ptx_cp_async16(void* dst, const void* src, int src_bytes, const char* file, int line);
void ptx_cp_async_commit();
void ptx_cp_async_wait(int pending, const char* file, int line);
// D = A B + C: c is C, the result D; a holds A's four registers (a[0] in lo's low half).
Floats4 ptx_mma_m16n8k16(MmaType type, Floats4 c, Bits16 a, uint32_t b0, uint32_t b1, const char* file, int line);
// The four registers r[0..3] (r[0] in the low half of lo).
Bits16 ptx_ldmatrix_x4(bool trans, const void* row, const char* file, int line);
// griddepcontrol.wait / .launch_dependents (programmatic dependent launch). Launches run one after
// another here, so the wait is already true; it is recorded, and a thread of a programmatic launch
// that touches device memory before it is reported (tools.cpp). The trigger has nothing to do.
void ptx_griddepcontrol_wait();
void ptx_griddepcontrol_launch_dependents();
void* dynamic_shared();
// One 16-byte vector load / store (ld/st .v4): checked and counted as one aligned access.
Bits16 ptx_ld16(const void* src);
void ptx_st16(void* dst, Bits16 v);
// prefetch.global.L2: a hint, moving nothing a kernel sees; not counted, and allowed before
// griddepcontrol.wait. memcheck still requires the address to lie in a device allocation.
void ptx_prefetch_l2(const void* p);

template <typename T> inline T shfl_typed(Shfl kind, unsigned mask, T value, int operand, int width,
                                          const char* file, int line) {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "the software device shuffles 32- and 64-bit values");
    uint32_t bits[sizeof(T) / 4];
    memcpy(bits, &value, sizeof(T));
    // A 64-bit shuffle is two 32-bit ones, as nvcc lowers it.
    for (unsigned w = 0; w < sizeof(T) / 4; ++w) bits[w] = shfl(kind, mask, bits[w], operand, width, file, line);
    memcpy(&value, bits, sizeof(T));
    return value;
}

}  // namespace qksoft

extern "C" const qksoft::ThreadView* qksoft_current;
