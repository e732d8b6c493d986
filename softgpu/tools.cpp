// tools.cpp: the software device's memcheck, initcheck, racecheck and traffic counters.
//
// How every access is seen
// The host build of cuda/*.cu is compiled with GCC's ThreadSanitizer instrumentation
// (-fsanitize=thread, function entry/exit hooks off) but linked without libtsan: GCC then calls
// __tsan_readN / __tsan_writeN (N = 1, 2, 4, 8, 16), their _unaligned_ forms,
// __tsan_read_range / __tsan_write_range (small memcpy) and __tsan_atomicN_* before every load,
// store and atomic of a kernel that may touch memory, with the address. This file defines those
// hooks; the return address names the access site, and softgpu/build.rs's line table turns it
// into cuda/<file>:<line> (with the kernel's line when the access sits in an inlined helper).
// GCC's hooks were chosen over Clang's -fsanitize-coverage=trace-loads,trace-stores because the
// host compiler here is GCC (the cc crate's default, and what CI has), and they also mark
// atomics, which racecheck must exempt. Accesses to a thread's own stack, the kernel's
// parameters and the runtime's data are hooked too and ignored: only device memory (the arena of
// memory.cpp) and the running block's shared memory are checked.
//
// The tools (g_tools; QK_SOFTGPU_TOOLS or Gpu::set_software_tools):
// - memcheck: every byte of a global access inside a live allocation (the addressable bitmap),
//   so reads and writes into the slack before an allocation or after its end are reported even
//   where no guard page is; an access through an aligned hook at an address that is not a
//   multiple of its size (a 16-byte vector load at an 8-byte-aligned address) is reported too.
// - initcheck: a global read (or atomic) of a byte nothing has written since its allocation.
// - racecheck: shared memory: for each byte, the last write and the last read(s) with the thread,
//   its barrier interval (bumped at every block start and __syncthreads release) and its warp's
//   __syncwarp epoch. Two accesses of different threads, at least one a write, in the same
//   interval, and not both of one warp with a __syncwarp between them, are a hazard (RAW, WAR,
//   WAW). Shared-memory atomics are not recorded (atomics do not race with each other; a flag
//   raised by atomicOr is read after a barrier, which the plain read's check still covers). Warp-synchronous code has no exemption: lanes of one warp that communicate through
//   shared memory need __syncwarp (Volta and later do not keep a warp in lockstep); shuffles do
//   not order memory. Global memory: two blocks of one launch writing the same 2-byte granule
//   without an atomic.
// - counters: per launch, the bytes requested (read, written; global and shared), the distinct
//   32-byte sectors and bytes touched, the sectors per warp request (lane i's k-th execution of
//   an access site is paired with lane j's k-th), and shared-memory bank conflicts per request
//   (32 banks of 4 bytes; 8-byte accesses in 2 phases of 16 lanes, 16-byte in 4 of 8). Copies,
//   sets and cuBLAS calls on the stream get a record from their operands.
// A finding of memcheck, initcheck or racecheck stops the launch as a fault does
// (CUDA_ERROR_LAUNCH_FAILED, sticky), with the tool, what, where (kernel, block, thread, source
// line) and the allocation.
#include "runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace qksoft {

unsigned g_tools = TOOL_MEMCHECK | TOOL_INITCHECK;
Running g_running;

namespace {


// ---- access sites ------------------------------------------------------------------------------
//
// A site is the return address of a hook call in a kernel library, or, for accesses the runtime
// makes (cp.async, ldmatrix), an interned file:line with bit 47 set.

constexpr uintptr_t RUNTIME_SITE = uintptr_t(1) << 47;
std::vector<std::pair<const char*, int>> g_runtime_sites;
std::map<std::pair<const char*, int>, uintptr_t> g_runtime_site_ids;

uintptr_t runtime_site(const char* file, int line) {
    auto key = std::make_pair(file, line);
    auto it = g_runtime_site_ids.find(key);
    if (it != g_runtime_site_ids.end()) return it->second;
    const uintptr_t id = RUNTIME_SITE | g_runtime_sites.size();
    g_runtime_sites.push_back(key);
    g_runtime_site_ids[key] = id;
    return id;
}

// Line tables: per library (by file name), return-address offset -> "cuda/x.cu:L ...", sorted.
struct LineTable {
    std::vector<std::pair<uint64_t, std::string>> rows;
};
std::mutex g_lines_mutex;
std::map<std::string, LineTable> g_lines;

std::string base_name(const char* path) {
    const char* slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

// The table text: one "<hex offset> <location>" per line.
void add_lines(const std::string& library, const char* text, size_t len) {
    LineTable t;
    const char* p = text;
    const char* end = text + len;
    while (p < end) {
        const char* nl = static_cast<const char*>(memchr(p, '\n', end - p));
        if (!nl) nl = end;
        const char* sp = static_cast<const char*>(memchr(p, ' ', nl - p));
        if (sp) t.rows.emplace_back(strtoull(p, nullptr, 16), std::string(sp + 1, nl));
        p = nl + 1;
    }
    std::sort(t.rows.begin(), t.rows.end());
    std::lock_guard<std::mutex> lock(g_lines_mutex);
    g_lines[library] = std::move(t);
}

std::string site_text(uintptr_t site) {
    if (site & RUNTIME_SITE) {
        const auto& s = g_runtime_sites[site & ~RUNTIME_SITE];
        const char* slash = s.first ? strrchr(s.first, '/') : nullptr;
        std::string file = s.first ? s.first : "?";
        if (slash) {
            const char* q = slash;
            while (q > s.first && *(q - 1) != '/') --q;
            file = q > s.first ? q : s.first;
        }
        return format("%s:%d", file.c_str(), s.second);
    }
    Dl_info info;
    if (!dladdr(reinterpret_cast<void*>(site), &info) || !info.dli_fname) return format("pc 0x%llx", (unsigned long long)site);
    const std::string lib = base_name(info.dli_fname);
    const uint64_t off = site - reinterpret_cast<uintptr_t>(info.dli_fbase);
    bool known;
    {
        std::lock_guard<std::mutex> lock(g_lines_mutex);
        known = g_lines.find(lib) != g_lines.end();
    }
    if (!known) {
        // A library loaded by path (a source mutant) keeps its table beside it.
        std::string text;
        if (FILE* f = fopen((std::string(info.dli_fname) + ".lines").c_str(), "rb")) {
            char buf[65536];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
            fclose(f);
        }
        add_lines(lib, text.data(), text.size());
    }
    {
        std::lock_guard<std::mutex> lock(g_lines_mutex);
        const auto& rows = g_lines[lib].rows;
        auto r = std::lower_bound(rows.begin(), rows.end(), std::make_pair(off, std::string()));
        if (r != rows.end() && r->first == off) return r->second;
    }
    return format("%s+0x%llx (no line table)", lib.c_str(), (unsigned long long)off);
}

// ---- reports -----------------------------------------------------------------------------------

std::string alloc_text(uint64_t p) {
    std::string t;
    if (describe_device_address(p, true, &t)) return t;
    return format("0x%llx, in no live device allocation", (unsigned long long)p);
}

[[noreturn]] void report(const char* tool, const std::string& what, uintptr_t site, int thread) {
    fail_running(format("%s: %s at %s (%s)", tool, what.c_str(), site_text(site).c_str(), running_where(thread).c_str()));
}

// ---- racecheck state ---------------------------------------------------------------------------

struct ShAccess {
    uint32_t interval = 0;  // 0: none
    uint32_t wepoch = 0;
    int32_t thread = -1;
    uintptr_t site = 0;
};
// The reads of one byte in the current barrier interval: the first and the latest, the warps
// that read, and, for reads of one warp, the readers at its latest __syncwarp epoch.
struct ShReads {
    uint32_t interval = 0;
    uint32_t warps = 0;       // bit w: a thread of warp w read (a block has at most 32 warps)
    uint32_t top_wepoch = 0;  // the latest warp epoch a read was made at (one warp only)
    int32_t top_thread = -1;
    bool top_many = false;    // several threads read at that epoch
    ShAccess first, last;
};
struct ShCell {
    ShAccess w;
    ShReads r;
};
std::vector<ShCell> g_shadow_shared;  // static shared bytes, then dynamic shared bytes
uint32_t g_interval = 0;
std::vector<uint32_t> g_wepoch;  // per warp of the block

struct GlobalWriter {
    uint64_t block;
    uintptr_t site;
    int thread;
};
std::unordered_map<uint64_t, GlobalWriter> g_global_writers;  // 2-byte granule -> first writer block

// Whether an access recorded in `a` and one by `thread` now can happen in either order.
inline bool concurrent(const ShAccess& a, int thread) {
    if (a.interval != g_interval || a.thread == thread) return false;
    if (a.thread / 32 != thread / 32) return true;
    return a.wepoch == g_wepoch[thread / 32];
}

// A read of this interval that a write by `thread` now is not ordered after, or null.
const ShAccess* concurrent_read(const ShReads& r, int thread) {
    if (r.interval != g_interval) return nullptr;
    const int warp = thread / 32;
    const ShAccess* other = r.last.thread != thread ? &r.last : &r.first;
    if (r.warps & ~(1u << warp)) {
        // A thread of another warp read: only a barrier orders it, and there was none. Name it.
        if (r.last.thread / 32 != warp) return &r.last;
        if (r.first.thread / 32 != warp) return &r.first;
        return other;
    }
    // Every read was by this warp: ordered unless made at its current __syncwarp epoch by
    // another thread.
    if (r.top_wepoch != g_wepoch[warp]) return nullptr;
    if (!r.top_many && r.top_thread == thread) return nullptr;
    return other->thread != thread ? other : &r.last;
}

const char* kind_text(bool write) { return write ? "write" : "read"; }

void race_shared(ShCell& c, int thread, bool write, uintptr_t site, const char* where, size_t offset) {
    auto hazard = [&](const char* name, const ShAccess& other, bool other_write) {
        fail_running(format("racecheck: shared-memory %s hazard at byte %zu of %s: thread (%d) %ss at %s and thread (%d) "
                            "%ss at %s in the same barrier interval, with no __syncthreads or __syncwarp between them (%s)",
                            name, offset, where, other.thread, kind_text(other_write), site_text(other.site).c_str(), thread,
                            kind_text(write), site_text(site).c_str(), running_where(thread).c_str()));
    };
    const uint32_t we = g_wepoch[thread / 32];
    const ShAccess now{g_interval, we, thread, site};
    if (write) {
        if (concurrent(c.w, thread)) hazard("write-after-write", c.w, true);
        if (const ShAccess* r = concurrent_read(c.r, thread)) hazard("write-after-read", *r, false);
        c.w = now;
        return;
    }
    if (concurrent(c.w, thread)) hazard("read-after-write", c.w, true);
    ShReads& r = c.r;
    if (r.interval != g_interval) {
        r = ShReads{g_interval, 1u << (thread / 32), we, thread, false, now, now};
        return;
    }
    r.warps |= 1u << (thread / 32);
    r.last = now;
    if (we != r.top_wepoch || r.warps != (1u << (thread / 32))) {
        // A later epoch of the one warp (epochs of different warps are not compared: two warps
        // reading already makes any write a hazard).
        if (we > r.top_wepoch) r.top_wepoch = we, r.top_thread = thread, r.top_many = false;
    } else if (thread != r.top_thread) {
        r.top_many = true;
    }
}

// ---- counters ----------------------------------------------------------------------------------

struct Counters {
    char name[64];
    uint32_t kind;  // 0 kernel, 1 copy or set, 2 cuBLAS
    uint32_t grid[3], block[3];
    uint32_t dynamic_shared, static_shared;
    uint32_t flags;  // bit 0: a programmatic launch (PDL)
    uint64_t global_read_bytes, global_write_bytes;        // as requested, summed over accesses
    uint64_t global_read_requests, global_write_requests;  // warp-level requests
    uint64_t global_read_sectors, global_write_sectors;    // summed over requests
    uint64_t distinct_read_sectors, distinct_write_sectors;
    uint64_t distinct_read_bytes, distinct_write_bytes;
    uint64_t shared_read_bytes, shared_write_bytes;
    uint64_t shared_requests, shared_wavefronts, shared_bank_conflicts;
};
static_assert(sizeof(Counters) == 64 + 10 * 4 + 15 * 8, "Counters: the layout of SoftwareCounters in src/gpu.rs");

std::mutex g_counters_mutex;
std::vector<Counters> g_records;
Counters g_current;

struct SectorBits {
    uint32_t read = 0, write = 0;
};
std::unordered_map<uint64_t, SectorBits> g_sectors;  // this launch's global sectors

struct Request {
    uint32_t lanes = 0;
    uint8_t shared = 0, write = 0, width = 0;
    uint64_t addr[32];
};
// (warp, site, k) -> the lanes' addresses
struct RequestKey {
    uint64_t site;
    uint32_t warp, k;
    bool operator==(const RequestKey& o) const { return site == o.site && warp == o.warp && k == o.k; }
};
struct RequestHash {
    size_t operator()(const RequestKey& k) const {
        return std::hash<uint64_t>()(k.site * 0x9e3779b97f4a7c15ull ^ (uint64_t(k.warp) << 32 | k.k));
    }
};
std::unordered_map<RequestKey, Request, RequestHash> g_requests;
std::unordered_map<uint64_t, uint32_t> g_executions;  // (thread << 48 | site) -> times executed

void count_access(int thread, uint64_t p, unsigned n, bool write, bool shared, uintptr_t site) {
    Counters& c = g_current;
    if (shared) {
        (write ? c.shared_write_bytes : c.shared_read_bytes) += n;
    } else {
        (write ? c.global_write_bytes : c.global_read_bytes) += n;
        for (uint64_t s = p >> 5; s <= (p + n - 1) >> 5; ++s) {
            const uint64_t lo = std::max<uint64_t>(p, s << 5), hi = std::min<uint64_t>(p + n, (s + 1) << 5);
            const uint32_t bits = static_cast<uint32_t>((hi - lo == 32 ? 0xffffffffull : ((1ull << (hi - lo)) - 1)) << (lo & 31));
            SectorBits& b = g_sectors[s];
            (write ? b.write : b.read) |= bits;
        }
    }
    const uint32_t k = g_executions[uint64_t(thread) << 48 | site]++;
    Request& r = g_requests[RequestKey{site, static_cast<uint32_t>(thread / 32), k}];
    r.lanes |= 1u << (thread % 32);
    r.shared = shared;
    r.write = write;
    r.width = static_cast<uint8_t>(n);
    r.addr[thread % 32] = p;
}

void flush_requests() {
    Counters& c = g_current;
    std::vector<uint64_t> sectors;
    for (auto& [key, r] : g_requests) {
        if (!r.shared) {
            sectors.clear();
            for (int l = 0; l < 32; ++l) {
                if (!(r.lanes >> l & 1)) continue;
                for (uint64_t s = r.addr[l] >> 5; s <= (r.addr[l] + r.width - 1) >> 5; ++s) sectors.push_back(s);
            }
            std::sort(sectors.begin(), sectors.end());
            const uint64_t distinct = std::unique(sectors.begin(), sectors.end()) - sectors.begin();
            (r.write ? c.global_write_requests : c.global_read_requests) += 1;
            (r.write ? c.global_write_sectors : c.global_read_sectors) += distinct;
        } else {
            // Phases: 4-byte (and smaller) accesses in one of 32 lanes, 8-byte in two of 16, 16-byte in four of 8.
            const int phase_lanes = r.width >= 16 ? 8 : r.width >= 8 ? 16 : 32;
            uint64_t wavefronts = 0, phases = 0;
            for (int p0 = 0; p0 < 32; p0 += phase_lanes) {
                std::vector<uint64_t> words[32];
                bool any = false;
                for (int l = p0; l < p0 + phase_lanes; ++l) {
                    if (!(r.lanes >> l & 1)) continue;
                    any = true;
                    for (uint64_t w = r.addr[l] >> 2; w <= (r.addr[l] + r.width - 1) >> 2; ++w) words[w % 32].push_back(w);
                }
                if (!any) continue;
                ++phases;
                size_t worst = 1;
                for (auto& b : words) {
                    std::sort(b.begin(), b.end());
                    worst = std::max<size_t>(worst, std::unique(b.begin(), b.end()) - b.begin());
                }
                wavefronts += worst;
            }
            c.shared_requests += 1;
            c.shared_wavefronts += wavefronts;
            c.shared_bank_conflicts += wavefronts - phases;
        }
    }
    g_requests.clear();
    g_executions.clear();
}

void set_name(Counters& c, const char* name) { snprintf(c.name, sizeof c.name, "%s", name); }

void push_record(const Counters& c) {
    std::lock_guard<std::mutex> lock(g_counters_mutex);
    if (g_records.size() < 1000000) g_records.push_back(c);
}

// ---- the access path ---------------------------------------------------------------------------

// Which byte of [p, p + n) first has its bit clear in `map` (n when none).
size_t first_clear(const uint8_t* map, uint64_t p, unsigned n) {
    if (n <= 16 && shadow_all_set(map, p, n)) return n;
    return shadow_first_clear(map, p, n);
}

// Threads of the running block that passed griddepcontrol.wait (programmatic launches only).
std::vector<uint8_t> g_dependency_waited;

inline void global_access(uint64_t p, unsigned n, bool write, bool atomic, bool aligned, uintptr_t site, int thread) {
    const unsigned tools = g_tools;
    if (g_running.dims.programmatic && !g_dependency_waited[thread]) {
        // Always on, whatever the tools: the contract of the launch, not a tool's finding.
        report("programmatic launch",
               format("a %u-byte %s%s at 0x%llx (%s) before this thread's griddepcontrol.wait: the launch may overlap the "
                      "kernel before it, whose writes are visible only after the wait",
                      n, atomic ? "atomic " : "", kind_text(write), (unsigned long long)p, alloc_text(p).c_str()),
               site, thread);
    }
    if (tools & TOOL_MEMCHECK) {
        const bool inside = n <= 16 ? shadow_all_set(g_addressable, p, n) : first_clear(g_addressable, p, n) == n;
        if (!inside) {
            const size_t bad = first_clear(g_addressable, p, n);
            report("memcheck", format("invalid %u-byte %s%s at 0x%llx: byte %zu is %s", n, atomic ? "atomic " : "", kind_text(write),
                                      (unsigned long long)p, bad, alloc_text(p + bad).c_str()),
                   site, thread);
        }
        if ((aligned || atomic) && n > 1 && (p % n) != 0) {
            report("memcheck", format("misaligned %u-byte %s%s at 0x%llx (a multiple of %u is required; %s)", n,
                                      atomic ? "atomic " : "", kind_text(write), (unsigned long long)p, n, alloc_text(p).c_str()),
                   site, thread);
        }
    }
    if ((!write || atomic) && (tools & TOOL_INITCHECK) && !(n <= 16 && shadow_all_set(g_written, p, n))) {
        const size_t bad = first_clear(g_written, p, n);
        if (bad != n) {
            report("initcheck", format("%u-byte %s%s at 0x%llx of memory nothing has written since it was allocated: byte %zu is %s", n,
                                       atomic ? "atomic " : "", kind_text(false), (unsigned long long)p, bad,
                                       alloc_text(p + bad).c_str()),
                   site, thread);
        }
    }
    if (write) {
        if (n <= 16 && ((p - g_arena_base) & 7) + n <= 8) {
            const size_t off = p - g_arena_base;
            g_written[off >> 3] |= static_cast<uint8_t>(((1u << n) - 1) << (off & 7));
        } else {
            shadow_set(g_written, p, n, true);
        }
        if ((tools & TOOL_RACECHECK) && !atomic) {
            for (uint64_t g = p >> 1; g <= (p + n - 1) >> 1; ++g) {
                auto [it, fresh] = g_global_writers.try_emplace(g, GlobalWriter{g_running.block_linear, site, thread});
                if (!fresh && it->second.block != g_running.block_linear) {
                    const uint64_t b = it->second.block, gx = g_running.dims.gx, gy = g_running.dims.gy;
                    fail_running(format("racecheck: two blocks of one launch write %s without an atomic: block (%llu,%llu,%llu) "
                                        "thread (%d) at %s, and block (%u,%u,%u) thread (%d) at %s (%s)",
                                        alloc_text(g << 1).c_str(), (unsigned long long)(b % gx), (unsigned long long)(b / gx % gy),
                                        (unsigned long long)(b / (gx * gy)), it->second.thread, site_text(it->second.site).c_str(),
                                        g_running.block.x, g_running.block.y, g_running.block.z, thread, site_text(site).c_str(),
                                        running_where(thread).c_str()));
                }
            }
        }
    }
    if (tools & TOOL_COUNTERS) count_access(thread, p, n, write, false, site);
}

inline void shared_access(uint64_t p, unsigned n, bool write, bool atomic, uintptr_t site, int thread) {
    const unsigned tools = g_tools;
    if ((tools & TOOL_RACECHECK) && !atomic) {
        const Running& R = g_running;
        const char* stat = R.stat;
        size_t base;
        const char* where;
        if (stat && p >= reinterpret_cast<uint64_t>(stat) && p < reinterpret_cast<uint64_t>(stat) + R.stat_bytes) {
            base = p - reinterpret_cast<uint64_t>(stat);
            where = "static shared memory";
        } else {
            base = R.stat_bytes + (p - reinterpret_cast<uint64_t>(R.dyn));
            where = "dynamic shared memory";
        }
        const size_t local = where[0] == 's' ? base : base - R.stat_bytes;
        for (unsigned i = 0; i < n && base + i < g_shadow_shared.size(); ++i) {
            race_shared(g_shadow_shared[base + i], thread, write, site, where, local + i);
        }
    }
    if (tools & TOOL_COUNTERS) count_access(thread, p, n, write, true, site);
}

inline bool in_shared(uint64_t p) {
    const Running& R = g_running;
    return (R.stat && p - reinterpret_cast<uint64_t>(R.stat) < R.stat_bytes) ||
           (R.dyn && p - reinterpret_cast<uint64_t>(R.dyn) < R.dyn_bytes);
}

inline void access(const void* a, unsigned n, bool write, bool atomic, bool aligned, uintptr_t site) {
    if (!g_running.active || n == 0) return;
    const uint64_t p = reinterpret_cast<uint64_t>(a);
    if (in_arena(p)) {
        global_access(p, n, write, atomic, aligned, site, g_running.thread);
    } else if (in_shared(p)) {
        shared_access(p, n, write, atomic, site, g_running.thread);
    }
    // Anything else is the thread's stack, the kernel's parameters or the runtime's data.
}

}  // namespace

// ---- the runtime's side ------------------------------------------------------------------------

namespace tools {

void launch_begin() {
    const Running& R = g_running;
    if (g_tools & TOOL_RACECHECK) {
        g_global_writers.clear();
        const size_t need = R.stat_bytes + R.dyn_bytes;
        if (g_shadow_shared.size() < need) g_shadow_shared.resize(need);
    }
    if (g_tools & TOOL_COUNTERS) {
        g_current = Counters{};
        set_name(g_current, R.kernel ? R.kernel->name : "?");
        g_current.grid[0] = R.dims.gx, g_current.grid[1] = R.dims.gy, g_current.grid[2] = R.dims.gz;
        g_current.block[0] = R.dims.bx, g_current.block[1] = R.dims.by, g_current.block[2] = R.dims.bz;
        g_current.dynamic_shared = R.dims.dynamic_shared;
        g_current.static_shared = static_cast<uint32_t>(R.stat_bytes);
        g_current.flags = R.dims.programmatic ? 1u : 0u;
        g_sectors.clear();
        g_requests.clear();
        g_executions.clear();
    }
}

void launch_end() {
    if (g_tools & TOOL_COUNTERS) {
        flush_requests();
        Counters& c = g_current;
        for (const auto& [s, b] : g_sectors) {
            c.distinct_read_sectors += b.read != 0;
            c.distinct_write_sectors += b.write != 0;
            c.distinct_read_bytes += __builtin_popcount(b.read);
            c.distinct_write_bytes += __builtin_popcount(b.write);
        }
        g_sectors.clear();
        push_record(c);
    }
    g_global_writers.clear();
}

void block_begin() {
    ++g_interval;
    if (g_interval == 0) ++g_interval;  // 0 marks "no access"
    if (g_running.dims.programmatic) g_dependency_waited.assign(g_running.threads, 0);
    const size_t warps = (g_running.threads + 31) / 32;
    if (g_wepoch.size() < warps) g_wepoch.resize(warps);
}

void block_end() {
    // Requests pair executions within a warp of one block.
    if (g_tools & TOOL_COUNTERS) flush_requests();
}

void dependency_waited(int thread) {
    if (g_running.dims.programmatic) g_dependency_waited[thread] = 1;
}

void barrier_released() {
    ++g_interval;
    if (g_interval == 0) ++g_interval;
}

void warp_synced(int warp) { ++g_wepoch[warp]; }

void prefetch(const void* a, uintptr_t site) {
    if (!g_running.active || !(g_tools & TOOL_MEMCHECK)) return;
    const uint64_t p = reinterpret_cast<uint64_t>(a);
    if (!in_arena(p) || !shadow_all_set(g_addressable, p, 1)) {
        report("memcheck", format("prefetch.global.L2 of 0x%llx, which is not in a device allocation (%s)", (unsigned long long)p,
                                  alloc_text(p).c_str()),
               site, g_running.thread);
    }
}

void runtime_access(int thread, const void* a, unsigned n, bool write, const char* file, int line) {
    if (!g_running.active || !(g_tools & (TOOL_MEMCHECK | TOOL_INITCHECK | TOOL_RACECHECK | TOOL_COUNTERS))) return;
    const uint64_t p = reinterpret_cast<uint64_t>(a);
    const uintptr_t site = runtime_site(file, line);
    if (in_arena(p)) {
        global_access(p, n, write, false, true, site, thread);
    } else if (in_shared(p)) {
        shared_access(p, n, write, false, site, thread);
    }
}

void host_copy(const char* what, uint64_t dst, uint64_t src, size_t bytes) {
    if (bytes == 0) return;
    const bool dst_dev = in_arena(dst), src_dev = src && in_arena(src);
    if (dst_dev) {
        if (src_dev) {
            shadow_copy(g_written, dst, src, bytes);
        } else {
            shadow_set(g_written, dst, bytes, true);
        }
    }
    if (g_tools & TOOL_COUNTERS) {
        Counters c{};
        set_name(c, what);
        c.kind = 1;
        if (src_dev) c.global_read_bytes = c.distinct_read_bytes = bytes, c.distinct_read_sectors = (bytes + 31) / 32;
        if (dst_dev) c.global_write_bytes = c.distinct_write_bytes = bytes, c.distinct_write_sectors = (bytes + 31) / 32;
        push_record(c);
    }
}

bool gemm(const GemmOperand& a, const GemmOperand& b, const GemmOperand& c, bool reads_c, std::string* why) {
    auto first_uninit = [](const GemmOperand& o, uint64_t* at) {
        for (size_t j = 0; j < o.cols; ++j) {
            const uint64_t p = o.ptr + j * o.ld * o.elem;
            const size_t bad = shadow_first_clear(g_written, p, o.rows * o.elem);
            if (bad != o.rows * o.elem) {
                *at = p + bad;
                return true;
            }
        }
        return false;
    };
    if (g_tools & TOOL_INITCHECK) {
        const GemmOperand* ops[3] = {&a, &b, &c};
        const char* names[3] = {"A", "B", "C (beta != 0)"};
        for (int i = 0; i < (reads_c ? 3 : 2); ++i) {
            uint64_t at = 0;
            if (ops[i]->rows && ops[i]->cols && first_uninit(*ops[i], &at)) {
                *why = format("initcheck: cublasGemmEx reads %s, where %s has never been written since it was allocated", names[i],
                              alloc_text(at).c_str());
                return false;
            }
        }
    }
    for (size_t j = 0; j < c.cols; ++j) shadow_set(g_written, c.ptr + j * c.ld * c.elem, c.rows * c.elem, true);
    if (g_tools & TOOL_COUNTERS) {
        Counters r{};
        set_name(r, "cublasGemmEx");
        r.kind = 2;
        const uint64_t ab = a.rows * a.cols * a.elem + b.rows * b.cols * b.elem + (reads_c ? c.rows * c.cols * c.elem : 0);
        const uint64_t cb = c.rows * c.cols * c.elem;
        r.global_read_bytes = r.distinct_read_bytes = ab;
        r.global_write_bytes = r.distinct_write_bytes = cb;
        r.distinct_read_sectors = (ab + 31) / 32;
        r.distinct_write_sectors = (cb + 31) / 32;
        push_record(r);
    }
    return true;
}

}  // namespace tools

bool set_tools(const char* spec, std::string* why) {
    unsigned t = 0;
    std::string all = spec ? spec : "";
    size_t start = 0;
    while (start <= all.size()) {
        size_t comma = all.find(',', start);
        if (comma == std::string::npos) comma = all.size();
        const std::string item = all.substr(start, comma - start);
        start = comma + 1;
        if (item == "memcheck") t |= TOOL_MEMCHECK;
        else if (item == "initcheck") t |= TOOL_INITCHECK;
        else if (item == "racecheck") t |= TOOL_RACECHECK;
        else if (item == "counters") t |= TOOL_COUNTERS;
        else if (item == "none" || item.empty()) continue;
        else {
            *why = "unknown tool '" + item + "' (expected memcheck, initcheck, racecheck, counters or none)";
            return false;
        }
    }
    g_tools = t;
    return true;
}

std::string tools_name() {
    std::string s;
    const char* names[4] = {"memcheck", "initcheck", "racecheck", "counters"};
    for (int i = 0; i < 4; ++i) {
        if (g_tools >> i & 1) s += (s.empty() ? "" : ",") + std::string(names[i]);
    }
    return s.empty() ? "none" : s;
}

// ---- 16-byte vector accesses (ptx.cuh's ld16 and st16) -------------------------------------------
//
// The kernels' one 16-byte access each (the weights of every GEMV stream through ptx_ld16). A read
// that no tool has anything to say about or record (no counters; past a programmatic launch's
// wait; 16 aligned bytes of device memory, addressable and written as far as memcheck and
// initcheck look) takes the short path: two 16-bit words of the bitmaps; anything else goes the
// way of every other access.

namespace {
inline bool quiet_read16(uint64_t p) {
    const unsigned tools = g_tools;
    if ((tools & TOOL_COUNTERS) || (p & 15) || !in_arena(p)) return false;
    if (g_running.dims.programmatic && !g_dependency_waited[g_running.thread]) return false;
    const size_t at = (p - g_arena_base) >> 3;
    uint16_t addressable = 0xffff, written = 0xffff;
    if (tools & TOOL_MEMCHECK) memcpy(&addressable, g_addressable + at, 2);
    if (tools & TOOL_INITCHECK) memcpy(&written, g_written + at, 2);
    return (addressable & written) == 0xffff;
}
}  // namespace

Bits16 ptx_ld16(const void* src) {
    const uint64_t p = reinterpret_cast<uint64_t>(src);
    // The same thread's next vector of a warp-strided loop (32 lanes x 16 bytes on), the way the
    // kernels read weights: a hint to the host's caches, which never faults.
    __builtin_prefetch(static_cast<const char*>(src) + 512);
    if (!(g_running.active && quiet_read16(p))) access(src, 16, false, false, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
    Bits16 v;
    memcpy(&v, src, 16);
    return v;
}

void ptx_st16(void* dst, Bits16 v) {
    access(dst, 16, true, false, true, reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
    memcpy(dst, &v, 16);
}

}  // namespace qksoft

using namespace qksoft;

// ---- GCC's ThreadSanitizer hooks ---------------------------------------------------------------

#define QKSOFT_HOOK extern "C" __attribute__((visibility("default")))
#define SITE reinterpret_cast<uintptr_t>(__builtin_return_address(0))

QKSOFT_HOOK void __tsan_init() {}
QKSOFT_HOOK void __tsan_func_entry(void*) {}
QKSOFT_HOOK void __tsan_func_exit() {}

#define QKSOFT_RW(N)                                                                                      \
    QKSOFT_HOOK void __tsan_read##N(void* a) { access(a, N, false, false, true, SITE); }                  \
    QKSOFT_HOOK void __tsan_write##N(void* a) { access(a, N, true, false, true, SITE); }                  \
    QKSOFT_HOOK void __tsan_unaligned_read##N(void* a) { access(a, N, false, false, false, SITE); }       \
    QKSOFT_HOOK void __tsan_unaligned_write##N(void* a) { access(a, N, true, false, false, SITE); }       \
    QKSOFT_HOOK void __tsan_volatile_read##N(void* a) { access(a, N, false, false, true, SITE); }         \
    QKSOFT_HOOK void __tsan_volatile_write##N(void* a) { access(a, N, true, false, true, SITE); }
QKSOFT_RW(1)
QKSOFT_RW(2)
QKSOFT_RW(4)
QKSOFT_RW(8)
QKSOFT_RW(16)

QKSOFT_HOOK void __tsan_read_range(void* a, unsigned long n) {
    for (unsigned long i = 0; i < n; i += 16) access(static_cast<char*>(a) + i, std::min<unsigned long>(16, n - i), false, false, false, SITE);
}
QKSOFT_HOOK void __tsan_write_range(void* a, unsigned long n) {
    for (unsigned long i = 0; i < n; i += 16) access(static_cast<char*>(a) + i, std::min<unsigned long>(16, n - i), true, false, false, SITE);
}

// Atomics: checked as a read and a write, exempt from the global race check, then done.
#define QKSOFT_ATOMIC_RMW(N, T, OP, BUILTIN)                                                              \
    QKSOFT_HOOK T __tsan_atomic##N##_##OP(volatile T* a, T v, int) {                                      \
        access(const_cast<T*>(a), N / 8, true, true, true, SITE);                                         \
        return BUILTIN(a, v, __ATOMIC_SEQ_CST);                                                           \
    }
#define QKSOFT_ATOMICS(N, T)                                                                              \
    QKSOFT_ATOMIC_RMW(N, T, fetch_add, __atomic_fetch_add)                                                \
    QKSOFT_ATOMIC_RMW(N, T, fetch_sub, __atomic_fetch_sub)                                                \
    QKSOFT_ATOMIC_RMW(N, T, fetch_and, __atomic_fetch_and)                                                \
    QKSOFT_ATOMIC_RMW(N, T, fetch_or, __atomic_fetch_or)                                                  \
    QKSOFT_ATOMIC_RMW(N, T, fetch_xor, __atomic_fetch_xor)                                                \
    QKSOFT_ATOMIC_RMW(N, T, exchange, __atomic_exchange_n)                                                \
    QKSOFT_HOOK T __tsan_atomic##N##_load(const volatile T* a, int) {                                     \
        access(const_cast<T*>(a), N / 8, false, true, true, SITE);                                        \
        return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                      \
    }                                                                                                     \
    QKSOFT_HOOK void __tsan_atomic##N##_store(volatile T* a, T v, int) {                                  \
        access(const_cast<T*>(a), N / 8, true, true, true, SITE);                                         \
        __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                         \
    }                                                                                                     \
    QKSOFT_HOOK int __tsan_atomic##N##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {      \
        access(const_cast<T*>(a), N / 8, true, true, true, SITE);                                         \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);           \
    }                                                                                                     \
    QKSOFT_HOOK int __tsan_atomic##N##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {        \
        access(const_cast<T*>(a), N / 8, true, true, true, SITE);                                         \
        return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);           \
    }                                                                                                     \
    QKSOFT_HOOK T __tsan_atomic##N##_compare_exchange_val(volatile T* a, T c, T v, int, int) {            \
        access(const_cast<T*>(a), N / 8, true, true, true, SITE);                                         \
        __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                 \
        return c;                                                                                         \
    }
QKSOFT_ATOMICS(8, uint8_t)
QKSOFT_ATOMICS(16, uint16_t)
QKSOFT_ATOMICS(32, uint32_t)
QKSOFT_ATOMICS(64, uint64_t)
QKSOFT_HOOK void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
QKSOFT_HOOK void __tsan_atomic_signal_fence(int) {}

// ---- control, for src/gpu.rs -------------------------------------------------------------------

QKSOFT_HOOK int qksoft_set_tools(const char* spec, char* why, size_t why_len) {
    std::string w;
    if (set_tools(spec, &w)) return 0;
    if (why && why_len) snprintf(why, why_len, "%s", w.c_str());
    return 1;
}

QKSOFT_HOOK void qksoft_tools(char* out, size_t len) { snprintf(out, len, "%s", tools_name().c_str()); }

QKSOFT_HOOK void qksoft_add_line_table(const char* library, const char* text, size_t len) { add_lines(library, text, len); }

// Moves up to `max` counter records (oldest first) into `out`; returns how many.
QKSOFT_HOOK size_t qksoft_take_counters(void* out, size_t max) {
    std::lock_guard<std::mutex> lock(g_counters_mutex);
    const size_t n = std::min(max, g_records.size());
    memcpy(out, g_records.data(), n * sizeof(Counters));
    g_records.erase(g_records.begin(), g_records.begin() + n);
    return n;
}

QKSOFT_HOOK size_t qksoft_counters_size() { return sizeof(Counters); }
