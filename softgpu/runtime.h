// runtime.h: the software device's internals, shared by runtime.cpp (fibers, scheduler, memory),
// driver.cpp (the CUDA driver API) and cublas.cpp (the cuBLAS API). Not seen by kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace qksoft {

// ---- kernels and modules (registered by the generated per-module sources, see register.h) -------

struct KernelDesc {
    const char* name;
    void (*invoke)(void* fn, const unsigned char* params);  // unpacks the parameter buffer, calls fn
    void* fn;
    int n_params;
    const size_t* sizes;     // bytes of each parameter, as the kernel declares it
    const size_t* offsets;   // offset of each parameter in the buffer (each aligned to its type)
    size_t param_bytes;
};

struct ModuleDesc {
    const char* name;                 // cuda/<name>.cu
    uint64_t fatbin_hash;             // FNV-1a 64 of the nvcc fatbin this module stands for
    uint64_t fatbin_size;
    const char* const* fatbin_kernels;  // entry functions in that fatbin (ptxas' report)
    int n_fatbin_kernels;
    const KernelDesc* kernels;        // the host build of each
    int n_kernels;
    // The static shared memory of the library holding the module, for the calling thread (register.h).
    void (*shared)(char** begin, size_t* bytes);
    const char* mutant;               // null, or the name of the source mutant this module is built from
};

void register_module(const ModuleDesc* module);
const ModuleDesc* find_module(uint64_t hash, uint64_t size);
const KernelDesc* find_kernel(const ModuleDesc* module, const char* name, bool* in_fatbin);

// printf into a std::string (reports); a fill of `bytes` with a repeated 32-bit pattern (poison).
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fill_pattern(void* p, size_t bytes, uint32_t pattern);

// ---- device memory (memory.cpp) ---------------------------------------------------------------------

// Every allocation sits between two PROT_NONE guard pages, its end (rounded up to 16 bytes) against
// the second, and starts filled with GLOBAL_POISON.
constexpr uint32_t GLOBAL_POISON = 0x7ff77ff7u;  // NaN as f32, and as each f16 / bf16 half
constexpr uint32_t SHARED_POISON = 0x7fff7fffu;  // likewise, a different NaN
uint64_t mem_alloc(size_t bytes);
bool mem_free(uint64_t ptr);
// Whether [ptr, ptr + bytes) lies inside one live allocation; `why` says what is wrong otherwise.
bool mem_check(uint64_t ptr, size_t bytes, std::string* why);
size_t mem_in_use();
// "N bytes past the end of device allocation #I (...)" for an address in an allocation's region;
// false for any other address (or, with may_block false, when the allocation table is busy).
bool describe_device_address(uint64_t a, bool may_block, std::string* text);

// Every allocation lies in one arena; two bitmaps beside it hold one bit per arena byte:
// addressable (inside a live allocation) and initialised (written since it was allocated).
extern uintptr_t g_arena_base;
extern size_t g_arena_bytes;
extern uint8_t* g_addressable;
extern uint8_t* g_written;
inline bool in_arena(uint64_t p) { return p - g_arena_base < g_arena_bytes; }
// Whether the n <= 16 bits of `map` for [p, p + n) are all set (p in the arena).
inline bool shadow_all_set(const uint8_t* map, uint64_t p, unsigned n) {
    const size_t off = p - g_arena_base;
    uint32_t w;
    memcpy(&w, map + (off >> 3), 4);
    const uint32_t mask = ((1u << n) - 1) << (off & 7);
    return (w & mask) == mask;
}
void shadow_set(uint8_t* map, uint64_t ptr, size_t bytes, bool value);
// The offset of the first clear bit in [ptr, ptr + bytes), or `bytes` when all are set.
size_t shadow_first_clear(const uint8_t* map, uint64_t ptr, size_t bytes);
void shadow_copy(uint8_t* map, uint64_t dst, uint64_t src, size_t bytes);

// ---- launches ------------------------------------------------------------------------------------

struct LaunchDims {
    unsigned gx, gy, gz, bx, by, bz;
    unsigned dynamic_shared;
    // Launched with programmatic stream serialization (cuLaunchKernelEx's PDL attribute): on a GPU
    // it may start while the kernel before it finishes, so every thread must pass
    // griddepcontrol.wait before it touches device memory (tools.cpp checks).
    bool programmatic = false;
};

// Run one launch to completion on the calling thread. Returns CUDA_SUCCESS or the error a GPU would
// report; on a failure the reason has been printed to stderr and is kept (last_error()).
int run_kernel(const KernelDesc* kernel, const ModuleDesc* module, const LaunchDims& dims,
               const unsigned char* params);
// Host work on the device's timeline (cuBLAS calls): runs with fault reports naming `what`.
int run_host_task(const char* what, const std::function<void()>& task);

// Host work queued on `stream` (a CUstream): run now, or recorded while the stream is captured
// (driver.cpp). cuBLAS calls go through this, so they are ordered and captured like kernels.
int enqueue_host(void* stream, const char* what, std::function<void()> task);

const std::string& last_error();
// A failed launch makes the device unusable, as on a GPU: every later call returns this.
int sticky_error();
void set_sticky_error(int code, const std::string& message);

// Scheduling of threads, blocks and cp.async completion (see runtime.cpp); parsed from a string
// such as "threads=random:7,blocks=reverse,cp.async=wait". Returns false on a bad string.
bool set_schedule(const char* spec, std::string* why);
std::string schedule_name();

// Nanoseconds per fiber switch, measured with the hand-written switch and with ucontext.
void measure_switch(double* custom_ns, double* ucontext_ns);

// ---- tools (tools.cpp): memcheck, initcheck, racecheck, traffic counters ------------------------------

enum : unsigned { TOOL_MEMCHECK = 1, TOOL_INITCHECK = 2, TOOL_RACECHECK = 4, TOOL_COUNTERS = 8 };
extern unsigned g_tools;
// "memcheck,initcheck,racecheck,counters" (any subset; "none" for none). False on a bad string.
bool set_tools(const char* spec, std::string* why);
std::string tools_name();

// What the tools see of the running CUDA thread; runtime.cpp keeps it current at every switch.
struct Running {
    bool active = false;  // a kernel's thread is running (not a host task, not between launches)
    const KernelDesc* kernel = nullptr;
    LaunchDims dims{};
    uint3 block{};
    uint64_t block_linear = 0;
    int thread = 0, warp = 0, lane = 0, threads = 0;
    char* stat = nullptr;  // static shared memory
    size_t stat_bytes = 0;
    char* dyn = nullptr;  // dynamic shared memory
    size_t dyn_bytes = 0;
};
extern Running g_running;
// Stop the running launch with `message` (from a kernel's thread), as a fault does.
[[noreturn]] void fail_running(const std::string& message);
// "kernel K, block (x,y,z), thread (x,y,z)" for linear thread `thread` of the running block.
std::string running_where(int thread);
// Fail the running host task (a cuBLAS call) with `message`; the task returns by itself.
void fail_host_task(const std::string& message);

namespace tools {
void launch_begin();
void launch_end();
void block_begin();
void block_end();
void barrier_released();
// griddepcontrol.wait by thread `thread` of the running block.
void dependency_waited(int thread);
void warp_synced(int warp);
// An L2 prefetch's address (memcheck only: a hint reads nothing).
void prefetch(const void* p, uintptr_t site);
// A memory access the runtime makes for a thread (cp.async, ldmatrix), with its call site.
void runtime_access(int thread, const void* p, unsigned bytes, bool write, const char* file, int line);
// Device memory written or read by a copy or a set on the stream (initialised bits, counters).
void host_copy(const char* what, uint64_t dst, uint64_t src, size_t bytes);
// cublasGemmEx as it runs: initcheck of the op(A) and op(B) elements it reads, C marked written,
// and a counters record of the bytes each operand holds. False (with `why`) on a finding.
struct GemmOperand {
    uint64_t ptr;
    size_t rows, cols, ld, elem;  // column-major: cols runs of `rows` elements, `ld` apart
};
bool gemm(const GemmOperand& a, const GemmOperand& b, const GemmOperand& c, bool reads_c, std::string* why);
}  // namespace tools

}  // namespace qksoft
