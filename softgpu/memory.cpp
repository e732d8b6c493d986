// memory.cpp: the software device's global memory, and the shadow bits the tools read.
//
// Layout
// - One arena of virtual address space is reserved at the first allocation (PROT_NONE,
//   MAP_NORESERVE: 1 TiB where the kernel allows it, halving down to 16 GiB). Every allocation is a
//   region of it: a guard page, the pages that hold the data (read-write), a guard page. The data
//   ends, rounded up to 16 bytes, against the second guard page, so a run past the end faults; the
//   bytes between the rounded end and the true end, and the slack before the start, are mapped but
//   not addressable, and memcheck reports them (tools.cpp).
// - Regions are handed out in address order and not reused until the arena is full (then the
//   first freed range that fits), so a stale pointer into freed memory faults instead of reading
//   a newer allocation.
// - Data starts filled with GLOBAL_POISON (a NaN in every 16-bit half).
//
// Shadow: two bitmaps with one bit per arena byte, reserved beside the arena and touched only
// where allocations are (MAP_NORESERVE):
//   addressable  set for [ptr, ptr + bytes) of each live allocation, nothing else
//   initialised  set for every byte written since the allocation (kernel stores and atomics,
//                cuMemcpy*, cuMemset*, cublasGemmEx's C), cleared on allocation and free;
//                a DtoD copy copies the source's bits.
#include "runtime.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>

namespace qksoft {

uintptr_t g_arena_base = 0;
size_t g_arena_bytes = 0;
uint8_t* g_addressable = nullptr;
uint8_t* g_written = nullptr;

namespace {

constexpr size_t PAGE = 4096;

size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }


struct Alloc {
    uint64_t region;  // arena address: guard page, pages, guard page
    size_t region_bytes;
    uint64_t ptr;
    size_t bytes;
    uint64_t id;
};

std::mutex g_mem_mutex;
std::map<uint64_t, Alloc> g_allocs;  // by region
std::map<size_t, size_t> g_freed;    // arena offset -> bytes, reused only once the arena is full
size_t g_bump = 0;                   // arena offset of the next fresh region
uint64_t g_next_alloc_id = 1;
size_t g_in_use = 0;

// Reserve the arena and its two bitmaps once; false when no size down to 16 GiB could be had.
bool reserve_arena() {
    if (g_arena_base) return true;
    for (size_t bytes = size_t(1) << 40; bytes >= (size_t(1) << 34); bytes >>= 1) {
        void* arena = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (arena == MAP_FAILED) continue;
        // Each bitmap has 8 bytes of slack so that a 4-byte read of its last byte stays inside.
        const size_t map_bytes = bytes / 8 + PAGE;
        void* a = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        void* i = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a == MAP_FAILED || i == MAP_FAILED) {
            munmap(arena, bytes);
            if (a != MAP_FAILED) munmap(a, map_bytes);
            if (i != MAP_FAILED) munmap(i, map_bytes);
            continue;
        }
        g_arena_base = reinterpret_cast<uintptr_t>(arena);
        g_arena_bytes = bytes;
        g_addressable = static_cast<uint8_t*>(a);
        g_written = static_cast<uint8_t*>(i);
        return true;
    }
    fprintf(stderr, "qwen-kernels software device: cannot reserve a device memory arena of 16 GiB or more\n");
    return false;
}


// An arena offset for `bytes` of region: fresh address space first, then a freed range.
bool place(size_t bytes, size_t* offset) {
    if (g_bump + bytes <= g_arena_bytes) {
        *offset = g_bump;
        g_bump += bytes;
        return true;
    }
    for (auto it = g_freed.begin(); it != g_freed.end(); ++it) {
        if (it->second < bytes) continue;
        *offset = it->first;
        const size_t rest = it->second - bytes;
        const size_t at = it->first + bytes;
        g_freed.erase(it);
        if (rest) g_freed[at] = rest;
        return true;
    }
    return false;
}

void give_back(size_t offset, size_t bytes) {
    auto next = g_freed.lower_bound(offset);
    if (next != g_freed.end() && offset + bytes == next->first) {
        bytes += next->second;
        next = g_freed.erase(next);
    }
    if (next != g_freed.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == offset) {
            prev->second += bytes;
            return;
        }
    }
    g_freed[offset] = bytes;
}

const Alloc* find_alloc_locked(uint64_t a) {
    auto it = g_allocs.upper_bound(a);
    if (it == g_allocs.begin()) return nullptr;
    const Alloc& al = std::prev(it)->second;
    return a >= al.region && a < al.region + al.region_bytes ? &al : nullptr;
}

}  // namespace

// ---- bit ranges --------------------------------------------------------------------------------

void shadow_set(uint8_t* map, uint64_t ptr, size_t bytes, bool value) {
    size_t off = ptr - g_arena_base, end = off + bytes;
    for (; off < end && (off & 7); ++off) map[off >> 3] = value ? map[off >> 3] | (1u << (off & 7)) : map[off >> 3] & ~(1u << (off & 7));
    const size_t whole = (end - off) / 8;
    memset(map + (off >> 3), value ? 0xff : 0, whole);
    off += whole * 8;
    for (; off < end; ++off) map[off >> 3] = value ? map[off >> 3] | (1u << (off & 7)) : map[off >> 3] & ~(1u << (off & 7));
}

size_t shadow_first_clear(const uint8_t* map, uint64_t ptr, size_t bytes) {
    const size_t base = ptr - g_arena_base;
    size_t i = 0;
    while (i < bytes) {
        const size_t off = base + i;
        if ((off & 7) == 0 && bytes - i >= 64) {
            uint64_t w;
            memcpy(&w, map + (off >> 3), 8);
            if (w == ~uint64_t(0)) {
                i += 64;
                continue;
            }
        }
        if (!(map[off >> 3] >> (off & 7) & 1)) return i;
        ++i;
    }
    return bytes;
}

void shadow_copy(uint8_t* map, uint64_t dst, uint64_t src, size_t bytes) {
    const size_t d = dst - g_arena_base, s = src - g_arena_base;
    if ((d & 7) == 0 && (s & 7) == 0) {
        memmove(map + (d >> 3), map + (s >> 3), bytes / 8);
        for (size_t i = bytes / 8 * 8; i < bytes; ++i) {
            const bool v = map[(s + i) >> 3] >> ((s + i) & 7) & 1;
            map[(d + i) >> 3] = v ? map[(d + i) >> 3] | (1u << ((d + i) & 7)) : map[(d + i) >> 3] & ~(1u << ((d + i) & 7));
        }
        return;
    }
    std::vector<uint8_t> bits(bytes);
    for (size_t i = 0; i < bytes; ++i) bits[i] = map[(s + i) >> 3] >> ((s + i) & 7) & 1;
    for (size_t i = 0; i < bytes; ++i) {
        map[(d + i) >> 3] = bits[i] ? map[(d + i) >> 3] | (1u << ((d + i) & 7)) : map[(d + i) >> 3] & ~(1u << ((d + i) & 7));
    }
}

// ---- allocations ---------------------------------------------------------------------------------

uint64_t mem_alloc(size_t bytes) {
    const size_t span = round_up(std::max<size_t>(bytes, 1), 16);
    const size_t pages = round_up(span, PAGE);
    const size_t region_bytes = pages + 2 * PAGE;
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    if (!reserve_arena()) return 0;
    size_t offset = 0;
    if (!place(region_bytes, &offset)) return 0;
    char* region = reinterpret_cast<char*>(g_arena_base + offset);
    if (mprotect(region + PAGE, pages, PROT_READ | PROT_WRITE) != 0) {
        give_back(offset, region_bytes);
        return 0;
    }
    fill_pattern(region + PAGE, pages, GLOBAL_POISON);
    const uint64_t ptr = reinterpret_cast<uint64_t>(region + PAGE + pages - span);
    shadow_set(g_addressable, ptr, bytes, true);
    shadow_set(g_written, ptr, bytes, false);
    g_allocs[reinterpret_cast<uint64_t>(region)] = Alloc{reinterpret_cast<uint64_t>(region), region_bytes, ptr, bytes,
                                                         g_next_alloc_id++};
    g_in_use += bytes;
    return ptr;
}

bool mem_free(uint64_t ptr) {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    for (auto it = g_allocs.begin(); it != g_allocs.end(); ++it) {
        const Alloc& a = it->second;
        if (a.ptr != ptr) continue;
        char* region = reinterpret_cast<char*>(a.region);
        // The pages go back to the system; the range faults again, as a guard page does.
        mprotect(region, a.region_bytes, PROT_NONE);
        madvise(region, a.region_bytes, MADV_DONTNEED);
        shadow_set(g_addressable, a.ptr, a.bytes, false);
        shadow_set(g_written, a.ptr, a.bytes, false);
        give_back(a.region - g_arena_base, a.region_bytes);
        g_in_use -= a.bytes;
        g_allocs.erase(it);
        return true;
    }
    return false;
}

bool mem_check(uint64_t ptr, size_t bytes, std::string* why) {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    auto it = g_allocs.upper_bound(ptr);
    if (it != g_allocs.begin()) {
        const Alloc& a = std::prev(it)->second;
        if (ptr >= a.ptr && ptr <= a.ptr + a.bytes) {
            if (ptr + bytes <= a.ptr + a.bytes) return true;
            *why = format("%zu bytes at 0x%llx run %llu bytes past the end of device allocation #%llu (%zu bytes)", bytes,
                          (unsigned long long)ptr, (unsigned long long)(ptr + bytes - a.ptr - a.bytes),
                          (unsigned long long)a.id, a.bytes);
            return false;
        }
    }
    *why = format("0x%llx is not in a live device allocation", (unsigned long long)ptr);
    return false;
}

size_t mem_in_use() {
    std::lock_guard<std::mutex> lock(g_mem_mutex);
    return g_in_use;
}

bool describe_device_address(uint64_t a, bool may_block, std::string* text) {
    std::unique_lock<std::mutex> lock(g_mem_mutex, std::defer_lock);
    if (may_block) {
        lock.lock();
    } else if (!lock.try_lock()) {
        return false;
    }
    const Alloc* al = find_alloc_locked(a);
    if (!al) return false;
    if (a >= al->ptr + al->bytes) {
        *text = format("%llu bytes past the end of device allocation #%llu (%zu bytes at 0x%llx)",
                       (unsigned long long)(a - (al->ptr + al->bytes)), (unsigned long long)al->id, al->bytes,
                       (unsigned long long)al->ptr);
    } else if (a < al->ptr) {
        *text = format("%llu bytes before the start of device allocation #%llu (%zu bytes at 0x%llx)",
                       (unsigned long long)(al->ptr - a), (unsigned long long)al->id, al->bytes, (unsigned long long)al->ptr);
    } else {
        *text = format("byte %llu of device allocation #%llu (%zu bytes at 0x%llx)", (unsigned long long)(a - al->ptr),
                       (unsigned long long)al->id, al->bytes, (unsigned long long)al->ptr);
    }
    return true;
}

}  // namespace qksoft
