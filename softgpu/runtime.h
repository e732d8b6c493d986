// runtime.h: the software device's internals, shared by runtime.cpp (fibers, scheduler, memory),
// driver.cpp (the CUDA driver API) and cublas.cpp (the cuBLAS API). Not seen by kernels.
#pragma once

#include <cstddef>
#include <cstdint>
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

// ---- device memory -------------------------------------------------------------------------------

// Every allocation sits between two PROT_NONE guard pages, its end (rounded up to 16 bytes) against
// the second, and starts filled with GLOBAL_POISON.
constexpr uint32_t GLOBAL_POISON = 0x7ff77ff7u;  // NaN as f32, and as each f16 / bf16 half
constexpr uint32_t SHARED_POISON = 0x7fff7fffu;  // likewise, a different NaN
uint64_t mem_alloc(size_t bytes);
bool mem_free(uint64_t ptr);
// Whether [ptr, ptr + bytes) lies inside one live allocation; `why` says what is wrong otherwise.
bool mem_check(uint64_t ptr, size_t bytes, std::string* why);
size_t mem_in_use();

// ---- launches ------------------------------------------------------------------------------------

struct LaunchDims {
    unsigned gx, gy, gz, bx, by, bz;
    unsigned dynamic_shared;
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

}  // namespace qksoft
