// runtime.cpp: how the software device runs a kernel.
//
// Execution model
// - Each CUDA thread of a block is a fiber with its own stack (guard page below). A block's fibers
//   run on the launching OS thread, one at a time; a fiber runs until it reaches a switch point:
//   __syncthreads, a warp collective (__shfl_*_sync, __syncwarp, mma.sync, ldmatrix) or
//   cp.async.wait_group. Between switch points nothing else of the block runs, so what a schedule
//   changes is the order of those stretches, exactly the freedom a GPU has.
// - __syncthreads is a real barrier: it releases when every thread of the block waits at the same
//   one. Threads waiting at different source lines, or a thread that exited while others wait, is a
//   reported error, never a hang. A warp collective runs when every lane of its mask has arrived at
//   the same instruction; a lane that exited or waits elsewhere is reported with kernel, block,
//   thread and source line.
// - Blocks run one after another, in an order the schedule picks; launches are serialised.
// - Schedules (set_schedule): threads forward | reverse | random:SEED | warp-ahead:W (warp W runs
//   whenever it can), blocks forward | reverse | random:SEED, cp.async landing at issue | at wait |
//   random:SEED. Kernels without races give bit-identical results under every schedule.
//
// Memory that tells on bugs
// - Static __shared__ variables are the kernel library's thread-local storage (cuda_host.h,
//   register.h); it and the launch's dynamic shared memory are filled with SHARED_POISON when each
//   block starts. Dynamic
//   shared memory ends against a guard page, so a block that reads past `sharedMemBytes` faults.
// - Device allocations end against a guard page and start poisoned (GLOBAL_POISON). A fault inside
//   a kernel or a cuBLAS call is reported with the kernel, block, thread and how far outside which
//   allocation, and the launch fails with CUDA_ERROR_ILLEGAL_ADDRESS (sticky, as on a GPU).
#include "runtime.h"

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

extern "C" {
const qksoft::ThreadView* qksoft_current = nullptr;
}

namespace qksoft {

void fill_pattern(void* p, size_t bytes, uint32_t pattern) {
    unsigned char* b = static_cast<unsigned char*>(p);
    // The first 4 bytes, then the filled prefix copied onto what follows it, doubling (memcpy's
    // speed: shared memory is poisoned at every block's start).
    size_t done = std::min<size_t>(bytes, 4);
    memcpy(b, &pattern, done);
    while (done < bytes) {
        const size_t n = std::min(done, bytes - done);
        memcpy(b + done, b, n);
        done += n;
    }
}

std::string format(const char* fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

namespace {

constexpr size_t PAGE = 4096;
constexpr size_t STACK_BYTES = 256 * 1024;
// Where fiber i's stack starts below its top: the stacks are separate 256 KiB mappings, so at one
// offset every fiber's hot frames would fall in the same cache sets (L1's and L2's) and evict one
// another at each switch; fiber i starts 17 i cache lines lower (mod 32 KiB), which spreads 512
// fibers over 512 distinct line offsets and 64 of them over all of L1's sets.
constexpr size_t stack_color(int i) { return static_cast<size_t>(i) * 17 % 512 * 64; }

size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }



// ---- context switch ------------------------------------------------------------------------------
//
// x86-64: a hand-written switch saves the six callee-saved registers, MXCSR and the x87 control
// word on the old stack and swaps stack pointers (no system call); it loads the new stack's MXCSR
// and control word only when their control bits differ from the running ones (ldmxcsr and fldcw
// serialise the pipeline; the kernels never change rounding or masks, so the loads are rare; the
// sticky exception flags, which nothing reads, are left as they are). Elsewhere: ucontext, whose
// swapcontext makes a sigprocmask system call per switch (measure_switch compares the two).

#if defined(__x86_64__)
#define QKSOFT_CUSTOM_SWITCH 1
extern "C" void qksoft_switch(void** save_sp, void* to_sp);
asm(R"(
    .text
    .globl qksoft_switch
    .hidden qksoft_switch
    .type qksoft_switch, @function
qksoft_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movl (%rsp), %eax
    andl $0xffc0, %eax
    movzwl 4(%rsp), %edx
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    movl (%rsp), %ecx
    andl $0xffc0, %ecx
    cmpl %ecx, %eax
    jne 2f
    cmpw 4(%rsp), %dx
    jne 2f
1:
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
2:
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    jmp 1b
    .size qksoft_switch, .-qksoft_switch
)");

struct Context {
    void* sp = nullptr;
};

// A stack that, switched to, "returns" into entry() with the SysV alignment of a fresh call.
void context_init(Context& c, char* stack_top, void (*entry)()) {
    uint64_t* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15));
    *--sp = 0;                                    // entry's return address: never used
    *--sp = reinterpret_cast<uint64_t>(entry);    // popped by `ret`
    for (int i = 0; i < 6; ++i) *--sp = 0;        // rbp rbx r12 r13 r14 r15
    uint32_t mxcsr;
    uint16_t fpcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpcw));
    uint64_t control = mxcsr | (uint64_t(fpcw) << 32);
    *--sp = control;
    c.sp = sp;
}
inline void context_switch(Context& from, Context& to) { qksoft_switch(&from.sp, to.sp); }
#else
#define QKSOFT_CUSTOM_SWITCH 0
struct Context {
    ucontext_t uc;
};
void context_init(Context& c, char* stack_top, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack_top - (STACK_BYTES - PAGE);
    c.uc.uc_stack.ss_size = STACK_BYTES - PAGE;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void context_switch(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// ---- schedule ------------------------------------------------------------------------------------

enum class ThreadOrder { Forward, Reverse, Random, WarpAhead };
enum class BlockOrder { Forward, Reverse, Random };
enum class Landing { AtIssue, AtWait, Random };

struct Schedule {
    ThreadOrder threads = ThreadOrder::Forward;
    int ahead_warp = 0;
    uint64_t thread_seed = 0;
    BlockOrder blocks = BlockOrder::Forward;
    uint64_t block_seed = 0;
    Landing landing = Landing::AtWait;
    uint64_t landing_seed = 0;
    std::string name = "threads=forward,blocks=forward,cp.async=wait";
};

struct Rng {
    uint64_t s;
    uint64_t next() {  // splitmix64
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

// ---- fibers and blocks ---------------------------------------------------------------------------

struct Copy {
    void* dst;
    const void* src;
    int bytes;  // 16, or 0: zero-fill
    const char* file;  // the cp.async's call site
    int line;
};

enum class State : uint8_t { Runnable, AtBarrier, AtWarp, Exited };

struct Fiber {
    Context ctx;
    char* stack = nullptr;  // mmap base; the lowest page is the guard
    ThreadView view;
    int linear = 0, warp = 0, lane = 0;
    State state = State::Runnable;
    const char* file = nullptr;
    int line = 0;
    uint32_t out[4] = {0, 0, 0, 0};
    std::vector<Copy> open;                 // issued since the last commit
    std::vector<std::vector<Copy>> groups;  // committed, oldest first
};

enum class OpKind { SyncWarp, Shfl, Mma, Ldmatrix };

const char* op_name(OpKind k, int sub) {
    switch (k) {
        case OpKind::SyncWarp: return "__syncwarp";
        case OpKind::Shfl:
            switch (static_cast<Shfl>(sub)) {
                case Shfl::Xor: return "__shfl_xor_sync";
                case Shfl::Idx: return "__shfl_sync";
                case Shfl::Down: return "__shfl_down_sync";
                case Shfl::Up: return "__shfl_up_sync";
            }
            return "__shfl";
        case OpKind::Mma: return sub == 0 ? "mma.sync.m16n8k16.f16" : "mma.sync.m16n8k16.bf16";
        case OpKind::Ldmatrix: return sub ? "ldmatrix.x4.trans" : "ldmatrix.x4";
    }
    return "?";
}

struct LaneIn {
    uint32_t v[4];
    uint32_t b[2];
    float c[4];
    const void* addr;
};

struct WarpOp {
    OpKind kind = OpKind::SyncWarp;
    int sub = 0;
    unsigned mask = 0;
    int operand = 0, width = 32;
    const char* file = nullptr;
    int line = 0;
    uint32_t arrived = 0;
    LaneIn in[32];
};

struct Launch {
    const KernelDesc* kernel = nullptr;
    const ModuleDesc* module = nullptr;
    LaunchDims dims{};
    const unsigned char* params = nullptr;
    uint3 block{};
    int n = 0;  // threads per block
    int cur = -1;
    Context sched;
    bool failed = false;
    int code = CUDA_SUCCESS;
    std::string failure;
    char* dyn = nullptr;  // dynamic shared memory: dims.dynamic_shared bytes ending at a guard page
    char* stat = nullptr;  // static shared memory (the kernel library's TLS block)
    size_t stat_bytes = 0;
    const char* host_task = nullptr;  // non-null while a cuBLAS call runs
    std::vector<WarpOp> ops;
    std::vector<uint32_t> exited_lanes;  // per warp
    int exited = 0, at_barrier = 0;
    size_t cursor = 0;
    Rng thread_rng{0}, landing_rng{0};
};

std::mutex g_launch_mutex;  // one launch (or host task) at a time
Launch* g_launch = nullptr;
pthread_t g_launch_thread;
sigjmp_buf g_fault_jmp;
Schedule g_schedule;
std::vector<Fiber> g_fibers;
char* g_dyn_region = nullptr;  // reused between launches
size_t g_dyn_region_bytes = 0;

std::mutex g_error_mutex;
int g_sticky = CUDA_SUCCESS;
std::string g_last_error;

Fiber& me() { return g_fibers[g_launch->cur]; }

std::string where(const Fiber& f) {
    const uint3 b = g_launch->block;
    return format("kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", g_launch->kernel->name, b.x, b.y, b.z,
                  f.view.thread_idx.x, f.view.thread_idx.y, f.view.thread_idx.z);
}

std::string short_file(const char* file) {
    if (!file) return "?";
    const char* slash = strrchr(file, '/');
    if (!slash) return file;
    // keep the last two components (cuda/attention.cu)
    const char* p = slash;
    while (p > file && *(p - 1) != '/') --p;
    return p > file ? std::string(p) : std::string(file);
}

std::string lanes_text(uint32_t lanes) {
    std::string s;
    for (int l = 0; l < 32; ++l) {
        if (!(lanes >> l & 1)) continue;
        int e = l;
        while (e + 1 < 32 && (lanes >> (e + 1) & 1)) ++e;
        if (!s.empty()) s += ",";
        s += e > l ? format("%d-%d", l, e) : format("%d", l);
        l = e;
    }
    return s.empty() ? "none" : s;
}

// Stop the launch from inside a fiber: the scheduler sees `failed` and never resumes any fiber.
[[noreturn]] void fail_in_fiber(const std::string& message) {
    g_launch->failed = true;
    g_launch->code = CUDA_ERROR_LAUNCH_FAILED;
    g_launch->failure = message;
    Fiber& f = me();
    context_switch(f.ctx, g_launch->sched);
    abort();  // never resumed
}

}  // namespace

void fail_running(const std::string& message) { fail_in_fiber(message); }
std::string running_where(int thread) { return where(g_fibers[thread]); }
void fail_host_task(const std::string& message) {
    g_launch->failed = true;
    g_launch->code = CUDA_ERROR_LAUNCH_FAILED;
    g_launch->failure = message;
}

namespace {

int pick();
void enter_fiber(int i);

// The running fiber gives way to the next one the schedule picks: directly, fiber to fiber (half
// the switches of going through the scheduler), or to the scheduler when no fiber can run (the
// block ended or deadlocked: run_block decides which). The same picks in the same order as a
// round trip through run_block's loop, so every schedule runs exactly as it would there.
void yield_fiber() {
    Launch& L = *g_launch;
    Fiber& f = me();
    const int next = pick();
    if (next == L.cur) return;
    if (next < 0) {
        context_switch(f.ctx, L.sched);
        return;
    }
    enter_fiber(next);
    // The fiber after this one in the round robin is the likely next: start loading the top of its
    // stack (its saved registers and the frames it resumes into), which is cold by the time the
    // other fibers of the block have run.
    const int after = next + 1 < L.n ? next + 1 : 0;
    if (const char* sp = static_cast<const char*>(g_fibers[after].ctx.sp)) {
        for (int line = 0; line < 8; ++line) __builtin_prefetch(sp + 64 * line);
    }
    context_switch(f.ctx, g_fibers[next].ctx);
}

// Lands a copy issued by the running thread (the tools see its shared-memory write there).
void land(const Copy& c) {
    tools::runtime_access(me().linear, c.dst, 16, true, c.file, c.line);
    if (c.bytes == 16) {
        memcpy(c.dst, c.src, 16);
    } else {
        memset(c.dst, 0, 16);
    }
}

bool in_shared(const void* p, size_t bytes) {
    const char* c = static_cast<const char*>(p);
    const char* st = g_launch->stat;
    if (st && c >= st && c + bytes <= st + g_launch->stat_bytes) return true;
    const char* d = g_launch->dyn;
    return d && c >= d && c + bytes <= d + g_launch->dims.dynamic_shared;
}

void check_barrier() {
    Launch& L = *g_launch;
    if (L.at_barrier == 0 || L.at_barrier + L.exited != L.n) return;
    const Fiber* first = nullptr;
    for (int i = 0; i < L.n; ++i) {
        const Fiber& f = g_fibers[i];
        if (f.state != State::AtBarrier) continue;
        if (!first) {
            first = &f;
        } else if (f.line != first->line || f.file != first->file) {
            fail_in_fiber(format("divergent __syncthreads: %s waits at %s:%d while thread (%u,%u,%u) waits at %s:%d",
                                 where(*first).c_str(), short_file(first->file).c_str(), first->line,
                                 f.view.thread_idx.x, f.view.thread_idx.y, f.view.thread_idx.z,
                                 short_file(f.file).c_str(), f.line));
        }
    }
    if (L.exited > 0) {
        std::string gone;
        int count = 0;
        for (int i = 0; i < L.n; ++i) {
            if (g_fibers[i].state == State::Exited && count++ < 8) gone += format(" %d", i);
        }
        fail_in_fiber(format("__syncthreads at %s:%d is never reached by %d thread(s) of the block that "
                             "exited (linear ids%s%s); %s waits there",
                             short_file(first->file).c_str(), first->line, L.exited, gone.c_str(),
                             count > 8 ? " ..." : "", where(*first).c_str()));
    }
    for (int i = 0; i < L.n; ++i) {
        if (g_fibers[i].state == State::AtBarrier) g_fibers[i].state = State::Runnable;
    }
    L.at_barrier = 0;
    tools::barrier_released();
}

uint32_t warp_lanes(int warp) {
    const int n = g_launch->n - warp * 32;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1);
}

void execute(WarpOp& op, int warp);

// A lane arrives at a warp collective: arrive_at checks it and returns the lane's input slot, which
// the caller fills (in place: a struct built on the stack and copied would be read back as 16-byte
// vectors right after its scalar stores, which the host cannot forward), then arrive_done runs the
// collective once every lane of the mask is in and returns once it has run.
LaneIn& arrive_at(OpKind kind, int sub, unsigned mask, int operand, int width, const char* file, int line) {
    Fiber& f = me();
    Launch& L = *g_launch;
    WarpOp& op = L.ops[f.warp];
    if (!(mask >> f.lane & 1) || (mask & ~warp_lanes(f.warp)) || (mask & L.exited_lanes[f.warp])) {
        const char* name = op_name(kind, sub);
        if (mask & L.exited_lanes[f.warp]) {
            const int l = __builtin_ctz(mask & L.exited_lanes[f.warp]);
            fail_in_fiber(format("%s at %s:%d: lane %d of its mask 0x%08x has exited and never reaches it (%s)", name,
                                 short_file(file).c_str(), line, l, mask, where(f).c_str()));
        }
        if (!(mask >> f.lane & 1)) {
            fail_in_fiber(format("%s at %s:%d: lane %d calls it with mask 0x%08x, which does not include itself (%s)", name,
                                 short_file(file).c_str(), line, f.lane, mask, where(f).c_str()));
        }
        fail_in_fiber(format("%s at %s:%d: mask 0x%08x names lanes %s that do not exist (the block has %d threads; %s)",
                             name, short_file(file).c_str(), line, mask, lanes_text(mask & ~warp_lanes(f.warp)).c_str(),
                             L.n, where(f).c_str()));
    }
    if (op.arrived == 0) {
        op.kind = kind;
        op.sub = sub;
        op.mask = mask;
        op.operand = operand;
        op.width = width;
        op.file = file;
        op.line = line;
    } else if (op.kind != kind || op.sub != sub || op.line != line || (op.file != file && strcmp(op.file, file) != 0) || op.mask != mask ||
               op.operand != operand || op.width != width) {
        fail_in_fiber(format("divergent warp: lane %d reaches %s at %s:%d (mask 0x%08x) while lanes %s wait at %s at "
                             "%s:%d (mask 0x%08x) (%s)",
                             f.lane, op_name(kind, sub), short_file(file).c_str(), line, mask, lanes_text(op.arrived).c_str(),
                             op_name(op.kind, op.sub), short_file(op.file).c_str(), op.line, op.mask, where(f).c_str()));
    }
    f.file = file;
    f.line = line;
    return op.in[f.lane];
}

void arrive_done() {
    Fiber& f = me();
    WarpOp& op = g_launch->ops[f.warp];
    op.arrived |= 1u << f.lane;
    f.state = State::AtWarp;
    if (op.arrived == op.mask) {
        execute(op, f.warp);
        op.arrived = 0;
        for (int l = 0; l < 32; ++l) {
            if (op.mask >> l & 1) g_fibers[f.warp * 32 + l].state = State::Runnable;
        }
    }
    yield_fiber();
}

float half_bits_to_float(uint16_t h, int sub) {
    if (sub == 0) {
        __half_raw r;
        r.x = h;
        return __half2float(__half(r));
    }
    // A bfloat16 is the high half of the float it stands for (what __bfloat162float computes).
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// Out of line: arrive_done() stays small for the 31 lanes that only wait.
__attribute__((noinline)) void execute(WarpOp& op, int warp) {
    Fiber* lanes = &g_fibers[warp * 32];
    switch (op.kind) {
        case OpKind::SyncWarp:
            tools::warp_synced(warp);
            break;
        case OpKind::Shfl: {
            for (int l = 0; l < 32; ++l) {
                if (!(op.mask >> l & 1)) continue;
                const int w = op.width, seg = l / w * w;
                int src = l;
                switch (static_cast<Shfl>(op.sub)) {
                    case Shfl::Xor: src = l ^ op.operand; break;
                    case Shfl::Idx: src = seg + (op.operand % w); break;
                    case Shfl::Down: src = l + op.operand < seg + w ? l + op.operand : l; break;
                    case Shfl::Up: src = l - op.operand >= seg ? l - op.operand : l; break;
                }
                if (src < 0 || src > 31 || !(op.mask >> src & 1)) {
                    Fiber& f = lanes[l];
                    fail_in_fiber(format("%s at %s:%d: lane %d reads lane %d, which is not in the mask 0x%08x (%s)",
                                         op_name(op.kind, op.sub), short_file(op.file).c_str(), op.line, l, src, op.mask,
                                         where(f).c_str()));
                }
                lanes[l].out[0] = op.in[src].v[0];
            }
            break;
        }
        case OpKind::Mma: {
            // Gather A (16 x 16), B (16 x 8, [k][n]) and C (16 x 8) from the fragments (ptx.cuh's
            // table), then D = A B + C with exact products summed in double and rounded once.
            //
            // A row of A that is all zeros (a decode GEMV's padding rows: 15 of 16 at one row) with
            // B finite contributes only zero products: D = C there, computed without them, except
            // where C is -0 (-0 + +0 is +0: the products' signs decide, so that element is summed).
            // Both are read from the bits: an element is +-0 when its bits other than the sign
            // (0x8000 in f16 and bf16) are clear, and B's element is finite unless its exponent
            // (0x7c00 in f16, 0x7f80 in bf16) is all ones.
            const uint32_t exponent = op.sub == 0 ? 0x7c00u : 0x7f80u;
            auto finite2 = [&](uint32_t x) { return (x & exponent) != exponent && (x >> 16 & exponent) != exponent; };
            bool b_finite = true;
            uint32_t nonzero[2][8] = {};  // [row g or g + 8][g]: OR of the row's bits, sign cleared
            for (int l = 0; l < 32; ++l) {
                const LaneIn& in = op.in[l];
                b_finite &= finite2(in.b[0]) && finite2(in.b[1]);
                nonzero[0][l / 4] |= (in.v[0] | in.v[2]) & 0x7fff7fffu;
                nonzero[1][l / 4] |= (in.v[1] | in.v[3]) & 0x7fff7fffu;
            }
            // Element (i, k) of A from its fragment: lane 4 (i % 8) + (k % 8) / 2, register a[0] (row
            // g, k < 8), a[1] (row g + 8, k < 8), a[2], a[3] (k >= 8), the odd k in the high half.
            auto a_element = [&](int i, int k) {
                const uint32_t r = op.in[4 * (i % 8) + (k % 8) / 2].v[(i / 8) + 2 * (k / 8)];
                return half_bits_to_float(static_cast<uint16_t>(k % 2 ? r >> 16 : r & 0xffff), op.sub);
            };
            // Element (k, j) of B: lane 4 j + (k % 8) / 2, register b[0] (k < 8) or b[1], odd k high.
            auto b_element = [&](int k, int j) {
                const uint32_t r = op.in[4 * j + (k % 8) / 2].b[k / 8];
                return half_bits_to_float(static_cast<uint16_t>(k % 2 ? r >> 16 : r & 0xffff), op.sub);
            };
            // Element (i, j) of C: lane 4 (i % 8) + j / 2, c[2 (i / 8) + j % 2].
            auto c_element = [&](int i, int j) { return op.in[4 * (i % 8) + j / 2].c[2 * (i / 8) + j % 2]; };
            bool zero_row[16];
            bool all_zero = true;
            for (int i = 0; i < 16; ++i) {
                zero_row[i] = b_finite && nonzero[i / 8][i % 8] == 0;
                all_zero &= zero_row[i];
            }
            // D element (i, j): C plus the 16 products in k order, summed in double, rounded once.
            // A zero row reaches here only for C = -0: its elements (+-0, whose signs count) are
            // summed as any row's.
            double B[16][8];
            if (!all_zero) {
                for (int l = 0; l < 32; ++l) {  // lane 4 j + t holds k = 2t, 2t + 1 (b[0]) and + 8 (b[1])
                    const int j = l / 4, t = l % 4;
                    const uint32_t b0 = op.in[l].b[0], b1 = op.in[l].b[1];
                    B[2 * t][j] = half_bits_to_float(static_cast<uint16_t>(b0 & 0xffff), op.sub);
                    B[2 * t + 1][j] = half_bits_to_float(static_cast<uint16_t>(b0 >> 16), op.sub);
                    B[2 * t + 8][j] = half_bits_to_float(static_cast<uint16_t>(b1 & 0xffff), op.sub);
                    B[2 * t + 9][j] = half_bits_to_float(static_cast<uint16_t>(b1 >> 16), op.sub);
                }
            }
            auto dot = [&](int i, int j) {  // a zero row's element where C is -0 (rare: from the fragments)
                double s = c_element(i, j);
                for (int k = 0; k < 16; ++k) s += static_cast<double>(a_element(i, k)) * static_cast<double>(b_element(k, j));
                return static_cast<float>(s);
            };
            float D[16][8];
            for (int i = 0; i < 16; ++i) {
                if (zero_row[i]) continue;
                double a[16];
                for (int k = 0; k < 16; ++k) a[k] = static_cast<double>(a_element(i, k));
                // The row's 8 sums side by side (each still in k order: the same additions).
                double s[8];
                for (int j = 0; j < 8; ++j) s[j] = c_element(i, j);
                for (int k = 0; k < 16; ++k) {
                    for (int j = 0; j < 8; ++j) s[j] += a[k] * B[k][j];
                }
                for (int j = 0; j < 8; ++j) D[i][j] = static_cast<float>(s[j]);
            }
            for (int l = 0; l < 32; ++l) {
                const int g = l / 4, t = l % 4;
                const float* c = op.in[l].c;
                for (int e = 0; e < 4; ++e) {
                    const int i = g + 8 * (e / 2), j = 2 * t + e % 2;
                    float d;
                    if (!zero_row[i]) {
                        d = D[i][j];
                    } else if (c[e] == 0.0f && std::signbit(c[e])) {
                        d = dot(i, j);
                    } else {
                        d = static_cast<float>(static_cast<double>(c[e]));
                    }
                    memcpy(&lanes[l].out[e], &d, sizeof d);
                }
            }
            break;
        }
        case OpKind::Ldmatrix: {
            // Matrix m's row r is at lane 8m + r's address: 8 elements of 16 bits.
            for (int l = 0; l < 32; ++l) {
                const char* row = static_cast<const char*>(op.in[l].addr);
                if (reinterpret_cast<uintptr_t>(row) % 16 != 0 || !in_shared(row, 16)) {
                    fail_in_fiber(format("%s at %s:%d: lane %d gives row address %p, which is %s (%s)",
                                         op_name(op.kind, op.sub), short_file(op.file).c_str(), op.line, l,
                                         static_cast<const void*>(row),
                                         reinterpret_cast<uintptr_t>(row) % 16 ? "not 16-byte aligned"
                                                                                 : "not in the block's shared memory",
                                         where(lanes[l]).c_str()));
                }
            }
            for (int l = 0; l < 32; ++l) tools::runtime_access(warp * 32 + l, op.in[l].addr, 16, false, op.file, op.line);
            auto element = [&](int m, int r, int c) {
                uint16_t e;
                memcpy(&e, static_cast<const char*>(op.in[8 * m + r].addr) + 2 * c, 2);
                return static_cast<uint32_t>(e);
            };
            for (int l = 0; l < 32; ++l) {
                const int g = l / 4, t = l % 4;
                for (int m = 0; m < 4; ++m) {
                    lanes[l].out[m] = op.sub ? element(m, 2 * t, g) | element(m, 2 * t + 1, g) << 16
                                             : element(m, g, 2 * t) | element(m, g, 2 * t + 1) << 16;
                }
            }
            break;
        }
    }
}

void fiber_exit_checks(Fiber& f) {
    Launch& L = *g_launch;
    const WarpOp& op = L.ops[f.warp];
    if (op.arrived != 0 && (op.mask >> f.lane & 1)) {
        fail_in_fiber(format("lane %d exits without reaching %s at %s:%d, where lanes %s of mask 0x%08x wait (%s)", f.lane,
                             op_name(op.kind, op.sub), short_file(op.file).c_str(), op.line,
                             lanes_text(op.arrived).c_str(), op.mask, where(f).c_str()));
    }
    check_barrier();
}

void fiber_main() {
    Launch& L = *g_launch;
    L.kernel->invoke(L.kernel->fn, L.params);
    Fiber& f = me();
    for (auto& g : f.groups) {
        for (auto& c : g) land(c);
    }
    for (auto& c : f.open) land(c);
    f.groups.clear();
    f.open.clear();
    f.state = State::Exited;
    ++L.exited;
    L.exited_lanes[f.warp] |= 1u << f.lane;
    fiber_exit_checks(f);
    context_switch(f.ctx, L.sched);
    abort();  // an exited fiber is never resumed
}

// Which runnable fiber runs next, by the schedule; -1 when none can.
int pick() {
    Launch& L = *g_launch;
    const Schedule& s = g_schedule;
    const int n = L.n;
    if (s.threads == ThreadOrder::WarpAhead) {
        const int w0 = s.ahead_warp * 32;
        for (int i = w0; i < std::min(n, w0 + 32); ++i) {
            if (g_fibers[i].state == State::Runnable) return i;
        }
    }
    if (s.threads == ThreadOrder::Random) {
        int count = 0;
        for (int i = 0; i < n; ++i) count += g_fibers[i].state == State::Runnable;
        if (count == 0) return -1;
        size_t k = L.thread_rng.below(count);
        for (int i = 0; i < n; ++i) {
            if (g_fibers[i].state == State::Runnable && k-- == 0) return i;
        }
        return -1;
    }
    // Round robin from the cursor (every fiber's turn comes), without a division per step: this
    // runs at every switch.
    const bool reverse = s.threads == ThreadOrder::Reverse;
    auto after = [&](int i) { return reverse ? (i == 0 ? n - 1 : i - 1) : (i + 1 == n ? 0 : i + 1); };
    int i = static_cast<int>(L.cursor);
    for (int step = 0; step < n; ++step, i = after(i)) {
        if (g_fibers[i].state == State::Runnable) {
            L.cursor = after(i);
            return i;
        }
    }
    return -1;
}

// Makes fiber i the running thread (what the kernel-facing functions and the tools read).
void enter_fiber(int i) {
    g_launch->cur = i;
    qksoft_current = &g_fibers[i].view;
    g_running.thread = i;
    g_running.warp = i / 32;
    g_running.lane = i % 32;
    g_running.active = true;
}

std::string deadlock_report() {
    Launch& L = *g_launch;
    std::string s = format("kernel %s, block (%u,%u,%u): no thread can proceed:", L.kernel->name, L.block.x, L.block.y,
                           L.block.z);
    for (int w = 0; w * 32 < L.n; ++w) {
        const WarpOp& op = L.ops[w];
        if (op.arrived) {
            s += format(" warp %d: lanes %s wait at %s at %s:%d for lanes %s;", w, lanes_text(op.arrived).c_str(),
                        op_name(op.kind, op.sub), short_file(op.file).c_str(), op.line,
                        lanes_text(op.mask & ~op.arrived).c_str());
        }
    }
    for (int i = 0; i < L.n; ++i) {
        const Fiber& f = g_fibers[i];
        if (f.state == State::AtBarrier) {
            s += format(" thread %d waits at __syncthreads at %s:%d;", i, short_file(f.file).c_str(), f.line);
            break;
        }
    }
    return s;
}

void ensure_fibers(int n) {
    while (static_cast<int>(g_fibers.size()) < n) g_fibers.emplace_back();
    for (int i = 0; i < n; ++i) {
        Fiber& f = g_fibers[i];
        if (f.stack) continue;
        void* p = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "qwen-kernels software device: cannot map a fiber stack: %s\n", strerror(errno));
            abort();
        }
        mprotect(p, PAGE, PROT_NONE);  // guard page below the stack
        f.stack = static_cast<char*>(p);
    }
}

// Dynamic shared memory for `bytes`: a region whose last page is a guard; the arena ends at it.
char* dynamic_arena(size_t bytes) {
    const size_t need = round_up(std::max<size_t>(bytes, 1), PAGE) + PAGE;
    if (need > g_dyn_region_bytes) {
        if (g_dyn_region) munmap(g_dyn_region, g_dyn_region_bytes);
        void* p = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        g_dyn_region = static_cast<char*>(p);
        g_dyn_region_bytes = need;
        mprotect(g_dyn_region + need - PAGE, PAGE, PROT_NONE);
    }
    return g_dyn_region + g_dyn_region_bytes - PAGE - round_up(bytes, 16);
}

void run_block(Launch& L, uint3 block, uint64_t linear) {
    L.block = block;
    g_running.block = block;
    g_running.block_linear = linear;
    tools::block_begin();
    if (L.stat_bytes) fill_pattern(L.stat, L.stat_bytes, SHARED_POISON);
    if (L.dims.dynamic_shared) fill_pattern(L.dyn, L.dims.dynamic_shared, SHARED_POISON);
    const unsigned bx = L.dims.bx, by = L.dims.by;
    for (int i = 0; i < L.n; ++i) {
        Fiber& f = g_fibers[i];
        f.linear = i;
        f.warp = i / 32;
        f.lane = i % 32;
        f.state = State::Runnable;
        f.file = nullptr;
        f.line = 0;
        f.open.clear();
        f.groups.clear();
        f.view.thread_idx = make_uint3(i % bx, i / bx % by, i / (bx * by));
        f.view.block_idx = block;
        f.view.block_dim = dim3(L.dims.bx, L.dims.by, L.dims.bz);
        f.view.grid_dim = dim3(L.dims.gx, L.dims.gy, L.dims.gz);
        context_init(f.ctx, f.stack + STACK_BYTES - stack_color(i), fiber_main);
    }
    for (auto& op : L.ops) op.arrived = 0;
    std::fill(L.exited_lanes.begin(), L.exited_lanes.end(), 0u);
    L.exited = 0;
    L.at_barrier = 0;
    L.cursor = g_schedule.threads == ThreadOrder::Reverse ? L.n - 1 : 0;
    for (;;) {
        const int i = pick();
        if (i < 0) {
            if (L.exited == L.n) {
                tools::block_end();
                return;
            }
            L.failed = true;
            L.code = CUDA_ERROR_LAUNCH_FAILED;
            L.failure = deadlock_report();
            return;
        }
        enter_fiber(i);
        context_switch(L.sched, g_fibers[i].ctx);
        g_running.active = false;
        qksoft_current = nullptr;
        if (L.failed) return;
    }
}

// ---- faults --------------------------------------------------------------------------------------

struct sigaction g_old_segv, g_old_bus;
std::atomic<bool> g_handlers_installed{false};

std::string describe_address(uint64_t a) {
    std::string text;
    // Not blocking: a fault inside mem_alloc must still be reported.
    if (describe_device_address(a, false, &text)) return text;
    if (g_launch && g_launch->dyn && g_dyn_region) {
        const uint64_t end = reinterpret_cast<uint64_t>(g_dyn_region + g_dyn_region_bytes - PAGE);
        if (a >= end && a < end + PAGE) {
            return format("%llu bytes past the end of the launch's dynamic shared memory (%u bytes)",
                          (unsigned long long)(a - end), g_launch->dims.dynamic_shared);
        }
    }
    for (const Fiber& f : g_fibers) {
        const uint64_t s = reinterpret_cast<uint64_t>(f.stack);
        if (f.stack && a >= s && a < s + PAGE) return "the guard page below a thread's stack (stack overflow)";
    }
    return format("address 0x%llx, in no live device allocation (freed, never allocated, or a host address)",
                  (unsigned long long)a);
}

// What the handler saw; the report is written after the jump, outside the signal handler.
volatile uint64_t g_fault_address = 0;

void fault_handler(int sig, siginfo_t* info, void* uctx) {
    Launch* L = g_launch;
    if (L && pthread_equal(pthread_self(), g_launch_thread)) {
        // Async-signal-safe only: record the address and leave the kernel.
        g_fault_address = reinterpret_cast<uint64_t>(info->si_addr);
        siglongjmp(g_fault_jmp, 1);
    }
    // Not ours: hand it to whoever handled it before (Rust's stack overflow handler), or crash.
    struct sigaction& old = sig == SIGSEGV ? g_old_segv : g_old_bus;
    if (old.sa_flags & SA_SIGINFO) {
        if (old.sa_sigaction) {
            old.sa_sigaction(sig, info, uctx);
            return;
        }
    } else if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN) {
        old.sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL);
}

// No thread_local in this library: its TLS block is the kernels' static shared memory.
void record_fault(Launch& L) {
    const uint64_t a = g_fault_address;
    L.failed = true;
    L.code = CUDA_ERROR_ILLEGAL_ADDRESS;
    if (L.host_task) {
        L.failure = format("%s: illegal access to %s", L.host_task, describe_address(a).c_str());
    } else if (L.cur >= 0) {
        L.failure = format("illegal address in %s: %s", where(g_fibers[L.cur]).c_str(), describe_address(a).c_str());
    } else {
        L.failure = format("illegal address in kernel %s: %s", L.kernel ? L.kernel->name : "?", describe_address(a).c_str());
    }
}

void install_fault_handlers() {
    stack_t current;
    if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE)) {
        stack_t ss;
        ss.ss_size = 256 * 1024;
        ss.ss_sp = mmap(nullptr, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ss.ss_flags = 0;
        if (ss.ss_sp != MAP_FAILED) sigaltstack(&ss, nullptr);
    }
    bool expected = false;
    if (g_handlers_installed.compare_exchange_strong(expected, true)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = fault_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &g_old_segv);
        sigaction(SIGBUS, &sa, &g_old_bus);
    }
}

// ---- module registry -----------------------------------------------------------------------------

std::vector<const ModuleDesc*>& modules() {
    static std::vector<const ModuleDesc*> m;
    return m;
}

bool parse_seeded(const std::string& v, const char* word, uint64_t* seed) {
    const std::string w = word;
    if (v.compare(0, w.size() + 1, w + ":") != 0) return false;
    char* end = nullptr;
    *seed = strtoull(v.c_str() + w.size() + 1, &end, 10);
    return end && *end == 0 && v.size() > w.size() + 1;
}

}  // namespace

void register_module(const ModuleDesc* module) {
    // A source mutant (test builds) replaces the module it was made from.
    auto& m = modules();
    for (auto& existing : m) {
        if (strcmp(existing->name, module->name) == 0) {
            if (module->mutant) existing = module;
            return;
        }
    }
    m.push_back(module);
}

const ModuleDesc* find_module(uint64_t hash, uint64_t size) {
    for (const ModuleDesc* m : modules()) {
        if (m->fatbin_hash == hash && m->fatbin_size == size) return m;
    }
    return nullptr;
}

const KernelDesc* find_kernel(const ModuleDesc* module, const char* name, bool* in_fatbin) {
    *in_fatbin = false;
    for (int i = 0; i < module->n_fatbin_kernels; ++i) {
        if (strcmp(module->fatbin_kernels[i], name) == 0) *in_fatbin = true;
    }
    if (!*in_fatbin) return nullptr;
    for (int i = 0; i < module->n_kernels; ++i) {
        if (strcmp(module->kernels[i].name, name) == 0) return &module->kernels[i];
    }
    return nullptr;
}

// ---- errors --------------------------------------------------------------------------------------

const std::string& last_error() { return g_last_error; }

int sticky_error() {
    std::lock_guard<std::mutex> lock(g_error_mutex);
    return g_sticky;
}

void set_sticky_error(int code, const std::string& message) {
    std::lock_guard<std::mutex> lock(g_error_mutex);
    if (g_sticky == CUDA_SUCCESS) g_sticky = code;
    g_last_error = message;
    fprintf(stderr, "qwen-kernels software device: %s\n", message.c_str());
    fflush(stderr);
}

// ---- launches ------------------------------------------------------------------------------------

int run_kernel(const KernelDesc* kernel, const ModuleDesc* module, const LaunchDims& dims, const unsigned char* params) {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    if (int e = sticky_error()) return e;
    static Launch L;  // static: survives the siglongjmp of a fault
    L.kernel = kernel;
    L.module = module;
    L.dims = dims;
    L.params = params;
    L.n = static_cast<int>(dims.bx * dims.by * dims.bz);
    L.cur = -1;
    L.failed = false;
    L.code = CUDA_SUCCESS;
    L.failure.clear();
    L.host_task = nullptr;
    L.ops.assign((L.n + 31) / 32, WarpOp());
    L.exited_lanes.assign((L.n + 31) / 32, 0u);
    L.thread_rng = Rng{g_schedule.thread_seed};
    L.landing_rng = Rng{g_schedule.landing_seed};
    L.dyn = dims.dynamic_shared ? dynamic_arena(dims.dynamic_shared) : nullptr;
    module->shared(&L.stat, &L.stat_bytes);
    if (dims.dynamic_shared && !L.dyn) return CUDA_ERROR_OUT_OF_MEMORY;
    ensure_fibers(L.n);
    install_fault_handlers();

    const uint64_t blocks = uint64_t(dims.gx) * dims.gy * dims.gz;
    static std::vector<uint64_t> order;
    order.resize(blocks);
    for (uint64_t b = 0; b < blocks; ++b) order[b] = b;
    if (g_schedule.blocks == BlockOrder::Reverse) std::reverse(order.begin(), order.end());
    if (g_schedule.blocks == BlockOrder::Random) {
        Rng rng{g_schedule.block_seed};
        for (uint64_t i = blocks; i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    }
    g_launch_thread = pthread_self();
    g_launch = &L;
    g_running = Running{};
    g_running.kernel = kernel;
    g_running.dims = dims;
    g_running.threads = L.n;
    g_running.stat = L.stat;
    g_running.stat_bytes = L.stat_bytes;
    g_running.dyn = L.dyn;
    g_running.dyn_bytes = dims.dynamic_shared;
    tools::launch_begin();
    if (sigsetjmp(g_fault_jmp, 1) == 0) {
        for (uint64_t b : order) {
            const uint3 block = make_uint3(b % dims.gx, b / dims.gx % dims.gy, b / (uint64_t(dims.gx) * dims.gy));
            run_block(L, block, b);
            if (L.failed) break;
        }
    } else {
        record_fault(L);
    }
    g_running.active = false;
    tools::launch_end();
    qksoft_current = nullptr;
    g_launch = nullptr;
    if (L.failed) {
        set_sticky_error(L.code, L.failure);
        return L.code;
    }
    return CUDA_SUCCESS;
}

int run_host_task(const char* what, const std::function<void()>& task) {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    if (int e = sticky_error()) return e;
    static Launch L;
    L = Launch();
    L.host_task = what;
    install_fault_handlers();
    g_launch_thread = pthread_self();
    g_launch = &L;
    if (sigsetjmp(g_fault_jmp, 1) == 0) {
        task();
    } else {
        record_fault(L);
    }
    g_launch = nullptr;
    if (L.failed) {
        set_sticky_error(L.code, L.failure);
        return L.code;
    }
    return CUDA_SUCCESS;
}

bool set_schedule(const char* spec, std::string* why) {
    Schedule s;
    std::string all = spec ? spec : "";
    size_t start = 0;
    while (start < all.size()) {
        size_t comma = all.find(',', start);
        if (comma == std::string::npos) comma = all.size();
        const std::string item = all.substr(start, comma - start);
        start = comma + 1;
        const size_t eq = item.find('=');
        const std::string key = item.substr(0, eq), v = eq == std::string::npos ? "" : item.substr(eq + 1);
        uint64_t n = 0;
        if (key == "threads") {
            if (v == "forward") s.threads = ThreadOrder::Forward;
            else if (v == "reverse") s.threads = ThreadOrder::Reverse;
            else if (parse_seeded(v, "random", &s.thread_seed)) s.threads = ThreadOrder::Random;
            else if (parse_seeded(v, "warp-ahead", &n) && n < 32) {
                s.threads = ThreadOrder::WarpAhead;
                s.ahead_warp = static_cast<int>(n);
            } else {
                *why = "threads: expected forward, reverse, random:SEED or warp-ahead:W (W < 32), got '" + v + "'";
                return false;
            }
        } else if (key == "blocks") {
            if (v == "forward") s.blocks = BlockOrder::Forward;
            else if (v == "reverse") s.blocks = BlockOrder::Reverse;
            else if (parse_seeded(v, "random", &s.block_seed)) s.blocks = BlockOrder::Random;
            else {
                *why = "blocks: expected forward, reverse or random:SEED, got '" + v + "'";
                return false;
            }
        } else if (key == "cp.async") {
            if (v == "issue") s.landing = Landing::AtIssue;
            else if (v == "wait") s.landing = Landing::AtWait;
            else if (parse_seeded(v, "random", &s.landing_seed)) s.landing = Landing::Random;
            else {
                *why = "cp.async: expected issue, wait or random:SEED, got '" + v + "'";
                return false;
            }
        } else if (!item.empty()) {
            *why = "unknown schedule key '" + key + "' (expected threads, blocks, cp.async)";
            return false;
        }
    }
    auto threads = [&] {
        switch (s.threads) {
            case ThreadOrder::Forward: return std::string("forward");
            case ThreadOrder::Reverse: return std::string("reverse");
            case ThreadOrder::Random: return format("random:%llu", (unsigned long long)s.thread_seed);
            case ThreadOrder::WarpAhead: return format("warp-ahead:%d", s.ahead_warp);
        }
        return std::string();
    };
    const std::string blocks = s.blocks == BlockOrder::Forward   ? "forward"
                               : s.blocks == BlockOrder::Reverse ? "reverse"
                                                                 : format("random:%llu", (unsigned long long)s.block_seed);
    const std::string landing = s.landing == Landing::AtIssue  ? "issue"
                                : s.landing == Landing::AtWait ? "wait"
                                                               : format("random:%llu", (unsigned long long)s.landing_seed);
    s.name = "threads=" + threads() + ",blocks=" + blocks + ",cp.async=" + landing;
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    g_schedule = s;
    return true;
}

std::string schedule_name() { return g_schedule.name; }

// ---- kernel-facing functions (kernel_api.h) -------------------------------------------------------

void syncthreads(const char* file, int line) {
    Fiber& f = me();
    f.state = State::AtBarrier;
    f.file = file;
    f.line = line;
    ++g_launch->at_barrier;
    check_barrier();
    yield_fiber();
}

void syncwarp(unsigned mask, const char* file, int line) {
    arrive_at(OpKind::SyncWarp, 0, mask, 0, 32, file, line);
    arrive_done();
}

uint32_t shfl(Shfl kind, unsigned mask, uint32_t value, int operand, int width, const char* file, int line) {
    if (width <= 0 || width > 32 || (width & (width - 1))) {
        fail_in_fiber(format("shuffle at %s:%d: width %d is not a power of two in 1..32 (%s)", short_file(file).c_str(),
                             line, width, where(me()).c_str()));
    }
    arrive_at(OpKind::Shfl, static_cast<int>(kind), mask, operand, width, file, line).v[0] = value;
    arrive_done();
    return me().out[0];
}

void ptx_cp_async16(void* dst, const void* src, int src_bytes, const char* file, int line) {
    Fiber& f = me();
    if (reinterpret_cast<uintptr_t>(dst) % 16 || !in_shared(dst, 16)) {
        fail_in_fiber(format("cp.async at %s:%d: destination %p is %s (%s)", short_file(file).c_str(), line, dst,
                             reinterpret_cast<uintptr_t>(dst) % 16 ? "not 16-byte aligned" : "not in the block's shared memory",
                             where(f).c_str()));
    }
    if (reinterpret_cast<uintptr_t>(src) % 16) {
        fail_in_fiber(format("cp.async at %s:%d: source %p is not 16-byte aligned (%s)", short_file(file).c_str(), line,
                             src, where(f).c_str()));
    }
    if (src_bytes == 16) tools::runtime_access(f.linear, src, 16, false, file, line);
    const Copy c{dst, src, src_bytes, file, line};
    const Landing landing = g_schedule.landing;
    if (landing == Landing::AtIssue || (landing == Landing::Random && (g_launch->landing_rng.next() & 1))) {
        land(c);
    } else {
        f.open.push_back(c);
    }
}

void ptx_cp_async_commit() {
    Fiber& f = me();
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}

void ptx_cp_async_wait(int pending, const char*, int) {
    // A switch point first: other threads run while this one waits, and this thread's copies land
    // as it leaves the wait (as late as the instruction allows), so a thread that reads another's
    // copies without the barrier in between reads poison under the default schedule.
    yield_fiber();
    Fiber& f = me();
    size_t done = 0;
    while (f.groups.size() - done > static_cast<size_t>(pending)) {
        for (const Copy& c : f.groups[done]) land(c);
        ++done;
    }
    f.groups.erase(f.groups.begin(), f.groups.begin() + done);
}

Floats4 ptx_mma_m16n8k16(MmaType type, Floats4 c, Bits16 a, uint32_t b0, uint32_t b1, const char* file, int line) {
    LaneIn& in = arrive_at(OpKind::Mma, type == MmaType::F16 ? 0 : 1, 0xffffffffu, 0, 32, file, line);
    memcpy(&in.v[0], &a.lo, 8);  // v[0], v[1]: a[0], a[1] (little-endian halves of lo)
    memcpy(&in.v[2], &a.hi, 8);
    in.b[0] = b0;
    in.b[1] = b1;
    memcpy(in.c, c.v, sizeof in.c);
    arrive_done();
    Floats4 d;
    memcpy(d.v, me().out, sizeof d.v);
    return d;
}

Bits16 ptx_ldmatrix_x4(bool trans, const void* row, const char* file, int line) {
    arrive_at(OpKind::Ldmatrix, trans ? 1 : 0, 0xffffffffu, 0, 32, file, line).addr = row;
    arrive_done();
    const uint32_t* r = me().out;
    return Bits16{r[0] | static_cast<uint64_t>(r[1]) << 32, r[2] | static_cast<uint64_t>(r[3]) << 32};
}

void ptx_griddepcontrol_wait() {
    if (g_running.active) tools::dependency_waited(g_running.thread);
}

void ptx_griddepcontrol_launch_dependents() {}

void ptx_prefetch_l2(const void* p) {
    tools::prefetch(p, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}

void* dynamic_shared() {
    Launch& L = *g_launch;
    // With no dynamic shared memory this is the guard page: any access faults.
    return L.dyn ? L.dyn : g_dyn_region ? g_dyn_region + g_dyn_region_bytes - PAGE : nullptr;
}

// ---- context switch cost ---------------------------------------------------------------------------

namespace {
Context g_bench_main, g_bench_fiber;
long g_bench_left = 0;
void bench_fiber() {
    for (;;) {
        --g_bench_left;
        context_switch(g_bench_fiber, g_bench_main);
    }
}
ucontext_t g_uc_main, g_uc_fiber;
void bench_ucontext() {
    for (;;) {
        --g_bench_left;
        swapcontext(&g_uc_fiber, &g_uc_main);
    }
}
}  // namespace

void measure_switch(double* custom_ns, double* ucontext_ns) {
    constexpr long N = 200000;
    std::vector<char> stack(STACK_BYTES);
    using clock = std::chrono::steady_clock;
    context_init(g_bench_fiber, stack.data() + stack.size(), bench_fiber);
    g_bench_left = N;
    auto t0 = clock::now();
    while (g_bench_left > 0) context_switch(g_bench_main, g_bench_fiber);
    auto t1 = clock::now();
    *custom_ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / (2.0 * N);

    std::vector<char> stack2(STACK_BYTES);
    getcontext(&g_uc_fiber);
    g_uc_fiber.uc_stack.ss_sp = stack2.data();
    g_uc_fiber.uc_stack.ss_size = stack2.size();
    g_uc_fiber.uc_link = nullptr;
    makecontext(&g_uc_fiber, bench_ucontext, 0);
    g_bench_left = N;
    t0 = clock::now();
    while (g_bench_left > 0) swapcontext(&g_uc_main, &g_uc_fiber);
    t1 = clock::now();
    *ucontext_ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / (2.0 * N);
}

}  // namespace qksoft
