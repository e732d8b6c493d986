// driver.cpp: the part of the CUDA driver API that qwen-kernels (through cudarc) calls, for the
// software device. Built into a shared library whose SONAME is libcuda.so, so that once it is loaded
// by absolute path, cudarc's own dlopen("libcuda.so") binds to it (src/gpu.rs, Gpu::emulated).
//
// Semantics kept from the hardware driver, because the crate's correctness depends on them:
// - Streams run their work in order. Work runs when it is queued (a stream that is always idle),
//   except while the stream is being captured: then it is recorded into the graph, and runs on
//   each cuGraphLaunch of the instantiated graph, in capture order.
// - cuModuleLoadData accepts only the fatbins this build of the crate embeds (by size and
//   FNV-1a hash), and cuModuleGetFunction only the kernels ptxas compiled into that fatbin.
// - cuLaunchKernel checks the launch as a GPU does: block and grid limits, and dynamic shared
//   memory above 48 KiB only up to what cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) allowed.
//   It reads exactly sizeof(parameter) bytes from each kernelParams[i]; cuFuncGetParamInfo
//   reports the parameter sizes of the kernel's declaration.
// - Errors are CUresult codes; a kernel that faults or breaks a synchronisation rule makes every
//   later call fail (sticky), as on a GPU. The reason is printed to stderr and kept
//   (qksoft_last_error).
// - Events read the host clock.
// The device reports itself as compute capability 9.0 with 132 multiprocessors and an H100/H200's
// limits, so that launch planning takes the paths it takes on the target hardware.
#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "runtime.h"

namespace qksoft {

constexpr int DEFAULT_DYNAMIC_SHARED = 48 * 1024;
constexpr int MAX_DYNAMIC_SHARED_OPTIN = 232448;  // sm_90: 227 KiB per block
constexpr int SM_COUNT = 132;

struct Function {
    const KernelDesc* kernel;
    const ModuleDesc* module;
    int max_dynamic_shared = DEFAULT_DYNAMIC_SHARED;
    bool loaded = false;  // by cuFuncLoad or a launch (only QK_SOFTGPU_LAZY_FUNCTIONS=1 tells)
};

struct Module {
    const ModuleDesc* desc;
    std::vector<Function*> functions;
};

struct Node {
    enum Kind { Kernel, Copy, Set, Host, Stamp } kind = Kernel;
    Function* function = nullptr;
    LaunchDims dims{};
    std::vector<unsigned char> params;
    void* dst = nullptr;
    const void* src = nullptr;
    size_t bytes = 0;
    uint32_t value = 0;
    int element = 1;
    std::function<int()> host;
    struct Event* event = nullptr;
};

struct Graph {
    std::vector<Node> nodes;
};

struct Stream {
    Graph* capture = nullptr;
};

struct Event {
    double ms = 0.0;
};

namespace {

int g_context_tag;  // the one context's handle points here
CUcontext g_current = nullptr;  // one context; no thread_local in this library (runtime.cpp)
bool g_initialised = false;
// QK_SOFTGPU_LAZY_FUNCTIONS=1: functions behave as under CUDA's lazy loading, where a function not
// yet loaded (no cuFuncLoad, no launch) answers cuFuncGetParamInfo with CUDA_ERROR_NOT_FOUND.
bool g_lazy_functions = false;
std::mutex g_init_mutex;
const auto g_epoch = std::chrono::steady_clock::now();

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - g_epoch).count();
}

CUresult note(CUresult code, const std::string& why) {
    fprintf(stderr, "qwen-kernels software device: %s\n", why.c_str());
    fflush(stderr);
    return code;
}

CUresult sticky() { return static_cast<CUresult>(sticky_error()); }

Stream* stream_of(CUstream s) { return reinterpret_cast<Stream*>(s); }

bool capturing(CUstream s) { return s && stream_of(s)->capture; }

CUresult run_node(const Node& n) {
    switch (n.kind) {
        case Node::Kernel:
            return static_cast<CUresult>(run_kernel(n.function->kernel, n.function->module, n.dims, n.params.data()));
        case Node::Copy:
            memmove(n.dst, n.src, n.bytes);
            tools::host_copy("cuMemcpy", reinterpret_cast<uint64_t>(n.dst), reinterpret_cast<uint64_t>(n.src), n.bytes);
            return CUDA_SUCCESS;
        case Node::Set: {
            // The element repeated to 4 bytes (little-endian), then filled at memcpy's speed.
            const uint32_t pattern = n.element == 1 ? (n.value & 0xffu) * 0x01010101u
                                     : n.element == 2 ? (n.value & 0xffffu) * 0x00010001u
                                                      : n.value;
            fill_pattern(n.dst, n.bytes, pattern);
            tools::host_copy("cuMemset", reinterpret_cast<uint64_t>(n.dst), 0, n.bytes);
            return CUDA_SUCCESS;
        }
        case Node::Host:
            return static_cast<CUresult>(n.host());
        case Node::Stamp:
            n.event->ms = now_ms();
            return CUDA_SUCCESS;
    }
    return CUDA_ERROR_UNKNOWN;
}

// Run now, or record into the stream's capture.
CUresult submit(CUstream s, Node n) {
    if (capturing(s)) {
        stream_of(s)->capture->nodes.push_back(std::move(n));
        return CUDA_SUCCESS;
    }
    return run_node(n);
}

CUresult check_range(uint64_t ptr, size_t bytes, const char* call, const char* which) {
    std::string why;
    if (bytes == 0 || mem_check(ptr, bytes, &why)) return CUDA_SUCCESS;
    return note(CUDA_ERROR_INVALID_VALUE, std::string(call) + ": " + which + ": " + why);
}

uint64_t fnv1a(const unsigned char* p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

size_t physical_memory() {
    const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(size) : size_t(16) << 30;
}

}  // namespace

// For cublas.cpp: host work on a stream (recorded while capturing), with fault reports naming `what`.
int enqueue_host(void* stream, const char* what, std::function<void()> task) {
    if (CUresult e = sticky()) return e;
    Node n;
    n.kind = Node::Host;
    n.host = [what, task]() { return run_host_task(what, task); };
    return submit(static_cast<CUstream>(stream), std::move(n));
}

}  // namespace qksoft

using namespace qksoft;

#define QKSOFT_API extern "C" __attribute__((visibility("default")))

// ---- identity and control (for src/gpu.rs, not part of CUDA) -------------------------------------

QKSOFT_API const char* qksoft_version() { return "qwen-kernels software device 1"; }

QKSOFT_API int qksoft_set_schedule(const char* spec, char* why, size_t why_len) {
    std::string w;
    if (set_schedule(spec, &w)) return 0;
    if (why && why_len) snprintf(why, why_len, "%s", w.c_str());
    return 1;
}

QKSOFT_API void qksoft_schedule(char* out, size_t len) { snprintf(out, len, "%s", schedule_name().c_str()); }

QKSOFT_API void qksoft_last_error(char* out, size_t len) { snprintf(out, len, "%s", last_error().c_str()); }

QKSOFT_API void qksoft_measure_switch(double* custom_ns, double* ucontext_ns) { measure_switch(custom_ns, ucontext_ns); }

// ---- initialisation, device, context --------------------------------------------------------------

QKSOFT_API CUresult cuInit(unsigned int flags) {
    if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
    std::lock_guard<std::mutex> lock(g_init_mutex);
    if (g_initialised) return CUDA_SUCCESS;
#if QK_SOFTGPU_FMA
    // The kernels were compiled with -mfma on a machine that has it (softgpu/build.rs, host_fma).
    if (!__builtin_cpu_supports("fma")) {
        return note(CUDA_ERROR_NOT_INITIALIZED, "this build's kernels use FMA instructions (the building machine has them) and this CPU has none: build the crate on this machine");
    }
#endif
    // Test builds: QK_SOFTGPU_MUTANT names a library holding a source mutant of one module, which
    // replaces that module (tests/softgpu.rs shows the suite catching each planted defect).
    if (const char* mutant = getenv("QK_SOFTGPU_MUTANT")) {
        if (*mutant && !dlopen(mutant, RTLD_NOW | RTLD_LOCAL)) {
            return note(CUDA_ERROR_NOT_INITIALIZED, std::string("QK_SOFTGPU_MUTANT: cannot load ") + mutant + ": " + dlerror());
        }
    }
    if (const char* spec = getenv("QK_SOFTGPU_SCHEDULE")) {
        std::string why;
        if (!set_schedule(spec, &why)) return note(CUDA_ERROR_NOT_INITIALIZED, "QK_SOFTGPU_SCHEDULE: " + why);
    }
    g_lazy_functions = getenv("QK_SOFTGPU_LAZY_FUNCTIONS") && strcmp(getenv("QK_SOFTGPU_LAZY_FUNCTIONS"), "1") == 0;
    if (const char* spec = getenv("QK_SOFTGPU_TOOLS")) {
        std::string why;
        if (!set_tools(spec, &why)) return note(CUDA_ERROR_NOT_INITIALIZED, "QK_SOFTGPU_TOOLS: " + why);
    }
    g_initialised = true;
    return CUDA_SUCCESS;
}

#define QKSOFT_REQUIRE_INIT() \
    do {                      \
        if (!g_initialised) return CUDA_ERROR_NOT_INITIALIZED; \
    } while (0)

QKSOFT_API CUresult cuDriverGetVersion(int* version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = 13000;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDeviceGetCount(int* count) {
    QKSOFT_REQUIRE_INIT();
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    QKSOFT_REQUIRE_INIT();
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
    QKSOFT_REQUIRE_INIT();
    if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, static_cast<size_t>(len), "qwen-kernels software device (CPU)");
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
    QKSOFT_REQUIRE_INIT();
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    *bytes = physical_memory();
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice device) {
    QKSOFT_REQUIRE_INIT();
    if (!uuid) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    memset(uuid, 0, sizeof *uuid);
    memcpy(uuid->bytes, "qk-softgpu", 10);
    return CUDA_SUCCESS;
}

// cuda.h maps the unversioned names to _v2; cudarc may look up either.
QKSOFT_API CUresult qksoft_device_get_uuid(CUuuid* uuid, CUdevice device) __asm__("cuDeviceGetUuid");
QKSOFT_API CUresult qksoft_device_get_uuid(CUuuid* uuid, CUdevice device) { return cuDeviceGetUuid_v2(uuid, device); }

QKSOFT_API CUresult cuDeviceGetAttribute(int* value, CUdevice_attribute attr, CUdevice device) {
    QKSOFT_REQUIRE_INIT();
    if (!value) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    int v = 0;
    switch (attr) {
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: v = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: v = 0; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: v = SM_COUNT; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: v = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: v = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: v = 2147483647; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: v = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: v = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: v = DEFAULT_DYNAMIC_SHARED; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: v = MAX_DYNAMIC_SHARED_OPTIN; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: v = 233472; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: v = 32; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: v = 2048; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: v = 65536; break;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: v = 50 * 1024 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: v = 1; break;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: v = 1; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: v = 0; break;  // cuMemAlloc, not the async pools
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: v = 1980000; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: v = 2619000; break;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: v = 5120; break;
        default: v = 0; break;
    }
    *value = v;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice device) {
    QKSOFT_REQUIRE_INIT();
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    if (device != 0) return CUDA_ERROR_INVALID_DEVICE;
    *ctx = reinterpret_cast<CUcontext>(&g_context_tag);
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
    return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

QKSOFT_API CUresult cuCtxSetCurrent(CUcontext ctx) {
    QKSOFT_REQUIRE_INIT();
    if (ctx && ctx != reinterpret_cast<CUcontext>(&g_context_tag)) return CUDA_ERROR_INVALID_CONTEXT;
    g_current = ctx;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuCtxGetCurrent(CUcontext* ctx) {
    QKSOFT_REQUIRE_INIT();
    if (!ctx) return CUDA_ERROR_INVALID_VALUE;
    *ctx = g_current;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuCtxPushCurrent_v2(CUcontext ctx) { return cuCtxSetCurrent(ctx); }

QKSOFT_API CUresult cuCtxPopCurrent_v2(CUcontext* ctx) {
    if (ctx) *ctx = g_current;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuCtxGetDevice(CUdevice* device) {
    QKSOFT_REQUIRE_INIT();
    if (!device) return CUDA_ERROR_INVALID_VALUE;
    *device = 0;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuCtxSynchronize() { return sticky(); }

// ---- errors ---------------------------------------------------------------------------------------

QKSOFT_API CUresult cuGetErrorName(CUresult error, const char** out) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    switch (error) {
        case CUDA_SUCCESS: *out = "CUDA_SUCCESS"; break;
        case CUDA_ERROR_INVALID_VALUE: *out = "CUDA_ERROR_INVALID_VALUE"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *out = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case CUDA_ERROR_NOT_INITIALIZED: *out = "CUDA_ERROR_NOT_INITIALIZED"; break;
        case CUDA_ERROR_INVALID_DEVICE: *out = "CUDA_ERROR_INVALID_DEVICE"; break;
        case CUDA_ERROR_INVALID_IMAGE: *out = "CUDA_ERROR_INVALID_IMAGE"; break;
        case CUDA_ERROR_INVALID_CONTEXT: *out = "CUDA_ERROR_INVALID_CONTEXT"; break;
        case CUDA_ERROR_INVALID_HANDLE: *out = "CUDA_ERROR_INVALID_HANDLE"; break;
        case CUDA_ERROR_NOT_FOUND: *out = "CUDA_ERROR_NOT_FOUND"; break;
        case CUDA_ERROR_ILLEGAL_ADDRESS: *out = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *out = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case CUDA_ERROR_NOT_SUPPORTED: *out = "CUDA_ERROR_NOT_SUPPORTED"; break;
        case CUDA_ERROR_ILLEGAL_STATE: *out = "CUDA_ERROR_ILLEGAL_STATE"; break;
        case CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED: *out = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; break;
        case CUDA_ERROR_STREAM_CAPTURE_INVALIDATED: *out = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"; break;
        default: *out = "CUDA_ERROR_UNKNOWN"; break;
    }
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuGetErrorString(CUresult error, const char** out) {
    if (!out) return CUDA_ERROR_INVALID_VALUE;
    switch (error) {
        case CUDA_SUCCESS: *out = "no error"; break;
        case CUDA_ERROR_INVALID_VALUE: *out = "invalid argument"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *out = "out of memory"; break;
        case CUDA_ERROR_ILLEGAL_ADDRESS: *out = "an illegal memory access was encountered"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *out = "unspecified launch failure"; break;
        case CUDA_ERROR_NOT_FOUND: *out = "named symbol not found"; break;
        case CUDA_ERROR_INVALID_IMAGE: *out = "device kernel image is invalid"; break;
        default: return cuGetErrorName(error, out);
    }
    return CUDA_SUCCESS;
}

// ---- memory ---------------------------------------------------------------------------------------

QKSOFT_API CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
    QKSOFT_REQUIRE_INIT();
    if (!ptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
    if (CUresult e = sticky()) return e;
    const uint64_t p = mem_alloc(bytes);
    if (!p) return CUDA_ERROR_OUT_OF_MEMORY;
    *ptr = p;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuMemFree_v2(CUdeviceptr ptr) {
    if (ptr == 0) return CUDA_SUCCESS;
    return mem_free(ptr) ? CUDA_SUCCESS : note(CUDA_ERROR_INVALID_VALUE, "cuMemFree: not a live allocation");
}

QKSOFT_API CUresult cuMemAllocAsync(CUdeviceptr* ptr, size_t bytes, CUstream) { return cuMemAlloc_v2(ptr, bytes); }
QKSOFT_API CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream) { return cuMemFree_v2(ptr); }

QKSOFT_API CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
    QKSOFT_REQUIRE_INIT();
    const size_t total = physical_memory(), used = mem_in_use();
    if (free_bytes) *free_bytes = used < total ? total - used : 0;
    if (total_bytes) *total_bytes = total;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuMemAllocHost_v2(void** p, size_t bytes) {
    if (!p) return CUDA_ERROR_INVALID_VALUE;
    *p = malloc(bytes ? bytes : 1);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
QKSOFT_API CUresult cuMemHostAlloc(void** p, size_t bytes, unsigned int) { return cuMemAllocHost_v2(p, bytes); }
QKSOFT_API CUresult cuMemFreeHost(void* p) {
    free(p);
    return CUDA_SUCCESS;
}

static CUresult copy(CUstream s, void* dst, const void* src, size_t bytes) {
    if (CUresult e = sticky()) return e;
    Node n;
    n.kind = Node::Copy;
    n.dst = dst;
    n.src = src;
    n.bytes = bytes;
    return submit(s, std::move(n));
}

QKSOFT_API CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream s) {
    if (CUresult e = check_range(dst, bytes, "cuMemcpyHtoD", "destination")) return e;
    return copy(s, reinterpret_cast<void*>(dst), src, bytes);
}
QKSOFT_API CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream s) {
    if (CUresult e = check_range(src, bytes, "cuMemcpyDtoH", "source")) return e;
    return copy(s, dst, reinterpret_cast<const void*>(src), bytes);
}
QKSOFT_API CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s) {
    if (CUresult e = check_range(dst, bytes, "cuMemcpyDtoD", "destination")) return e;
    if (CUresult e = check_range(src, bytes, "cuMemcpyDtoD", "source")) return e;
    return copy(s, reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes);
}
QKSOFT_API CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    return cuMemcpyHtoDAsync_v2(dst, src, bytes, nullptr);
}
QKSOFT_API CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    return cuMemcpyDtoHAsync_v2(dst, src, bytes, nullptr);
}
QKSOFT_API CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    return cuMemcpyDtoDAsync_v2(dst, src, bytes, nullptr);
}

static CUresult set(CUstream s, CUdeviceptr dst, uint32_t value, size_t count, int element, const char* call) {
    if (CUresult e = check_range(dst, count * element, call, "destination")) return e;
    if (CUresult e = sticky()) return e;
    Node n;
    n.kind = Node::Set;
    n.dst = reinterpret_cast<void*>(dst);
    n.value = value;
    n.bytes = count * element;
    n.element = element;
    return submit(s, std::move(n));
}
QKSOFT_API CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream s) {
    return set(s, dst, v, n, 1, "cuMemsetD8");
}
QKSOFT_API CUresult cuMemsetD16Async(CUdeviceptr dst, unsigned short v, size_t n, CUstream s) {
    return set(s, dst, v, n, 2, "cuMemsetD16");
}
QKSOFT_API CUresult cuMemsetD32Async(CUdeviceptr dst, unsigned int v, size_t n, CUstream s) {
    return set(s, dst, v, n, 4, "cuMemsetD32");
}
QKSOFT_API CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) { return cuMemsetD8Async(dst, v, n, nullptr); }
QKSOFT_API CUresult cuMemsetD32_v2(CUdeviceptr dst, unsigned int v, size_t n) { return cuMemsetD32Async(dst, v, n, nullptr); }

// ---- streams and events ---------------------------------------------------------------------------

QKSOFT_API CUresult cuStreamCreate(CUstream* s, unsigned int) {
    QKSOFT_REQUIRE_INIT();
    if (!s) return CUDA_ERROR_INVALID_VALUE;
    *s = reinterpret_cast<CUstream>(new Stream());
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuStreamCreateWithPriority(CUstream* s, unsigned int flags, int) { return cuStreamCreate(s, flags); }
QKSOFT_API CUresult cuStreamDestroy_v2(CUstream s) {
    if (!s) return CUDA_ERROR_INVALID_HANDLE;
    delete stream_of(s)->capture;
    delete stream_of(s);
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuStreamSynchronize(CUstream s) {
    if (capturing(s)) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    return sticky();
}
QKSOFT_API CUresult cuStreamQuery(CUstream) { return sticky(); }
QKSOFT_API CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { return sticky(); }

QKSOFT_API CUresult cuLaunchHostFunc(CUstream s, CUhostFn fn, void* data) {
    if (!fn) return CUDA_ERROR_INVALID_VALUE;
    Node n;
    n.kind = Node::Host;
    n.host = [fn, data]() {
        fn(data);
        return 0;
    };
    return submit(s, std::move(n));
}

QKSOFT_API CUresult cuEventCreate(CUevent* e, unsigned int) {
    if (!e) return CUDA_ERROR_INVALID_VALUE;
    *e = reinterpret_cast<CUevent>(new Event());
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuEventDestroy_v2(CUevent e) {
    delete reinterpret_cast<Event*>(e);
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuEventRecord(CUevent e, CUstream s) {
    if (!e) return CUDA_ERROR_INVALID_HANDLE;
    Node n;
    n.kind = Node::Stamp;
    n.event = reinterpret_cast<Event*>(e);
    return submit(s, std::move(n));
}
QKSOFT_API CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned int) { return cuEventRecord(e, s); }
QKSOFT_API CUresult cuEventSynchronize(CUevent) { return sticky(); }
QKSOFT_API CUresult cuEventQuery(CUevent) { return sticky(); }
QKSOFT_API CUresult cuEventElapsedTime_v2(float* ms, CUevent start, CUevent end) {
    if (!ms || !start || !end) return CUDA_ERROR_INVALID_VALUE;
    *ms = static_cast<float>(reinterpret_cast<Event*>(end)->ms - reinterpret_cast<Event*>(start)->ms);
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult qksoft_event_elapsed(float* ms, CUevent start, CUevent end) __asm__("cuEventElapsedTime");
QKSOFT_API CUresult qksoft_event_elapsed(float* ms, CUevent start, CUevent end) { return cuEventElapsedTime_v2(ms, start, end); }

// ---- capture and graphs ---------------------------------------------------------------------------

QKSOFT_API CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode) {
    if (!s) return note(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "cuStreamBeginCapture: the legacy stream cannot be captured");
    if (stream_of(s)->capture) return CUDA_ERROR_ILLEGAL_STATE;
    stream_of(s)->capture = new Graph();
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuStreamEndCapture(CUstream s, CUgraph* graph) {
    if (!s || !graph) return CUDA_ERROR_INVALID_VALUE;
    if (!stream_of(s)->capture) return CUDA_ERROR_ILLEGAL_STATE;
    *graph = reinterpret_cast<CUgraph>(stream_of(s)->capture);
    stream_of(s)->capture = nullptr;
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus* status) {
    if (!status) return CUDA_ERROR_INVALID_VALUE;
    *status = capturing(s) ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuGraphInstantiateWithFlags(CUgraphExec* exec, CUgraph graph, unsigned long long) {
    if (!exec || !graph) return CUDA_ERROR_INVALID_VALUE;
    *exec = reinterpret_cast<CUgraphExec>(new Graph(*reinterpret_cast<Graph*>(graph)));
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuGraphLaunch(CUgraphExec exec, CUstream s) {
    if (!exec) return CUDA_ERROR_INVALID_VALUE;
    if (capturing(s)) return note(CUDA_ERROR_NOT_SUPPORTED, "cuGraphLaunch into a capturing stream");
    if (CUresult e = sticky()) return e;
    for (const Node& n : reinterpret_cast<Graph*>(exec)->nodes) {
        if (CUresult e = run_node(n)) return e;
    }
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuGraphGetNodes(CUgraph graph, CUgraphNode* nodes, size_t* num) {
    if (!graph || !num) return CUDA_ERROR_INVALID_VALUE;
    std::vector<Node>& all = reinterpret_cast<Graph*>(graph)->nodes;
    if (!nodes) {
        *num = all.size();
        return CUDA_SUCCESS;
    }
    // As the driver: the first *num handles, the rest of a larger array null, *num the count written.
    const size_t n = std::min(*num, all.size());
    for (size_t i = 0; i < *num; ++i) nodes[i] = i < n ? reinterpret_cast<CUgraphNode>(&all[i]) : nullptr;
    *num = n;
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuGraphUpload(CUgraphExec, CUstream) { return sticky(); }
QKSOFT_API CUresult cuGraphExecDestroy(CUgraphExec exec) {
    delete reinterpret_cast<Graph*>(exec);
    return CUDA_SUCCESS;
}
QKSOFT_API CUresult cuGraphDestroy(CUgraph graph) {
    delete reinterpret_cast<Graph*>(graph);
    return CUDA_SUCCESS;
}

// ---- modules, functions, launches ------------------------------------------------------------------

QKSOFT_API CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    QKSOFT_REQUIRE_INIT();
    if (!module || !image) return CUDA_ERROR_INVALID_VALUE;
    // Fatbin header: u32 magic 0xBA55ED50, u16 version, u16 header size, u64 size of what follows.
    const unsigned char* p = static_cast<const unsigned char*>(image);
    uint32_t magic;
    uint16_t header;
    uint64_t rest;
    memcpy(&magic, p, 4);
    memcpy(&header, p + 6, 2);
    memcpy(&rest, p + 8, 8);
    if (magic != 0xBA55ED50u) {
        return note(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: not a fatbin (the software device runs the kernels of "
                                              "this crate's fatbins only)");
    }
    const uint64_t size = header + rest;
    const ModuleDesc* desc = find_module(fnv1a(p, size), size);
    if (!desc) {
        return note(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: this fatbin is not one this build of qwen-kernels embeds");
    }
    *module = reinterpret_cast<CUmodule>(new Module{desc, {}});
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuModuleUnload(CUmodule module) {
    Module* m = reinterpret_cast<Module*>(module);
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    for (Function* f : m->functions) delete f;
    delete m;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
    if (!function || !module || !name) return CUDA_ERROR_INVALID_VALUE;
    Module* m = reinterpret_cast<Module*>(module);
    bool in_fatbin = false;
    const KernelDesc* k = find_kernel(m->desc, name, &in_fatbin);
    if (!in_fatbin) {
        return note(CUDA_ERROR_NOT_FOUND, std::string("cuModuleGetFunction: no kernel '") + name + "' in " + m->desc->name +
                                              ".fatbin");
    }
    if (!k) {
        return note(CUDA_ERROR_NOT_FOUND, std::string("cuModuleGetFunction: '") + name + "' is in " + m->desc->name +
                                              ".fatbin but has no host build");
    }
    Function* f = new Function{k, m->desc};
    m->functions.push_back(f);
    *function = reinterpret_cast<CUfunction>(f);
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuFuncSetAttribute(CUfunction function, CUfunction_attribute attr, int value) {
    Function* f = reinterpret_cast<Function*>(function);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (attr == CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) {
        if (value < 0 || value > MAX_DYNAMIC_SHARED_OPTIN) {
            return note(CUDA_ERROR_INVALID_VALUE, "cuFuncSetAttribute(" + std::string(f->kernel->name) +
                                                      ", MAX_DYNAMIC_SHARED_SIZE_BYTES, " + std::to_string(value) +
                                                      "): above the device's " + std::to_string(MAX_DYNAMIC_SHARED_OPTIN));
        }
        f->max_dynamic_shared = value;
    }
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuFuncGetAttribute(int* value, CUfunction_attribute attr, CUfunction function) {
    Function* f = reinterpret_cast<Function*>(function);
    if (!f || !value) return CUDA_ERROR_INVALID_VALUE;
    switch (attr) {
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = f->max_dynamic_shared; break;
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
        default: *value = 0; break;
    }
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuFuncGetParamInfo(CUfunction function, size_t index, size_t* offset, size_t* size) {
    Function* f = reinterpret_cast<Function*>(function);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (g_lazy_functions && !f->loaded) return CUDA_ERROR_NOT_FOUND;
    if (index >= static_cast<size_t>(f->kernel->n_params)) return CUDA_ERROR_INVALID_VALUE;
    if (offset) *offset = f->kernel->offsets[index];
    if (size) *size = f->kernel->sizes[index];
    return CUDA_SUCCESS;
}

// Every function is loaded with its module; these only validate the handle (and mark it loaded
// for QK_SOFTGPU_LAZY_FUNCTIONS).
QKSOFT_API CUresult cuFuncLoad(CUfunction function) {
    Function* f = reinterpret_cast<Function*>(function);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    f->loaded = true;
    return CUDA_SUCCESS;
}

QKSOFT_API CUresult cuFuncIsLoaded(CUfunctionLoadingState* state, CUfunction function) {
    Function* f = reinterpret_cast<Function*>(function);
    if (!f || !state) return CUDA_ERROR_INVALID_HANDLE;
    *state = !g_lazy_functions || f->loaded ? CU_FUNCTION_LOADING_STATE_LOADED : CU_FUNCTION_LOADING_STATE_UNLOADED;
    return CUDA_SUCCESS;
}

static CUresult launch(CUfunction function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared, CUstream s, void** params, void** extra, bool programmatic) {
    Function* f = reinterpret_cast<Function*>(function);
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    f->loaded = true;
    if (CUresult e = sticky()) return e;
    const char* name = f->kernel->name;
    const uint64_t threads = uint64_t(bx) * by * bz;
    if (bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 || threads > 1024) {
        return note(CUDA_ERROR_INVALID_VALUE, std::string("cuLaunchKernel(") + name + "): block (" + std::to_string(bx) +
                                                  "," + std::to_string(by) + "," + std::to_string(bz) +
                                                  ") is outside the device's limits (1024 threads)");
    }
    if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535) {
        return note(CUDA_ERROR_INVALID_VALUE, std::string("cuLaunchKernel(") + name + "): grid (" + std::to_string(gx) +
                                                  "," + std::to_string(gy) + "," + std::to_string(gz) +
                                                  ") is outside the device's limits");
    }
    if (static_cast<int64_t>(shared) > f->max_dynamic_shared) {
        return note(CUDA_ERROR_INVALID_VALUE,
                    std::string("cuLaunchKernel(") + name + "): " + std::to_string(shared) +
                        " bytes of dynamic shared memory, above the kernel's limit of " +
                        std::to_string(f->max_dynamic_shared) +
                        " (more than 48 KiB needs cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) first)");
    }
    if (extra) return note(CUDA_ERROR_NOT_SUPPORTED, "cuLaunchKernel: `extra` parameters are not supported");
    if (f->kernel->n_params > 0 && !params) return CUDA_ERROR_INVALID_VALUE;
    Node n;
    n.kind = Node::Kernel;
    n.function = f;
    n.dims = LaunchDims{gx, gy, gz, bx, by, bz, shared, programmatic};
    n.params.assign(f->kernel->param_bytes + 1, 0);
    for (int i = 0; i < f->kernel->n_params; ++i) {
        if (!params[i]) return CUDA_ERROR_INVALID_VALUE;
        memcpy(n.params.data() + f->kernel->offsets[i], params[i], f->kernel->sizes[i]);
    }
    return submit(s, std::move(n));
}

QKSOFT_API CUresult cuLaunchKernel(CUfunction function, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                   unsigned bz, unsigned shared, CUstream s, void** params, void** extra) {
    return launch(function, gx, gy, gz, bx, by, bz, shared, s, params, extra, false);
}

// cuLaunchKernelEx: the one attribute this project uses, programmatic stream serialization (PDL);
// any other is refused, never ignored. Launches run one after another here, so the overlap a GPU
// allows never happens; what a programmatic launch promises is checked instead: each of its
// threads passes griddepcontrol.wait before touching device memory (tools.cpp).
QKSOFT_API CUresult cuLaunchKernelEx(const CUlaunchConfig* config, CUfunction function, void** params, void** extra) {
    if (!config) return CUDA_ERROR_INVALID_VALUE;
    bool programmatic = false;
    for (unsigned i = 0; i < config->numAttrs; ++i) {
        const CUlaunchAttribute& a = config->attrs[i];
        if (a.id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION) {
            programmatic = a.value.programmaticStreamSerializationAllowed != 0;
        } else {
            return note(CUDA_ERROR_NOT_SUPPORTED,
                        "cuLaunchKernelEx: launch attribute " + std::to_string(static_cast<int>(a.id)) +
                            " is not supported by the software device (only programmatic stream serialization)");
        }
    }
    return launch(function, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                  config->blockDimZ, config->sharedMemBytes, config->hStream, params, extra, programmatic);
}
