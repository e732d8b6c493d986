// register.h: how a host-compiled cuda/<module>.cu announces its kernels to the software device.
//
// build.rs generates one source per module that includes the kernel file, then this header, then
//     QKSOFT_MODULE(name, fatbin_hash, fatbin_size, mutant, "kernel_a", ..., )  with
//     QKSOFT_KERNEL(kernel_a) QKSOFT_KERNEL(kernel_b) ...
// The kernel list is the list of entry functions ptxas compiled into the module's fatbin, so a
// kernel that exists in one build and not the other is a compile error here.
//
// Each kernel's parameter types are deduced from its declaration: the driver copies exactly
// sizeof(parameter) bytes from each `kernelParams[i]`, as a GPU does, and cuFuncGetParamInfo reports
// those sizes (src/gpu.rs checks every launch's arguments against them).
#pragma once

#include <cstddef>
#include <utility>

#include "runtime.h"

namespace qksoft {

template <typename F> struct KernelTraits;

template <typename... A> struct KernelTraits<void (*)(A...)> {
    static constexpr int n = sizeof...(A);
    static constexpr size_t sizes[n > 0 ? n : 1] = {sizeof(A)...};
    static constexpr size_t aligns[n > 0 ? n : 1] = {alignof(A)...};
    struct Layout {
        size_t offsets[n > 0 ? n : 1];
        size_t bytes;
    };
    static constexpr Layout layout() {
        Layout l{};
        size_t off = 0;
        for (int i = 0; i < n; ++i) {
            off = (off + aligns[i] - 1) / aligns[i] * aligns[i];
            l.offsets[i] = off;
            off += sizes[i];
        }
        l.bytes = off;
        return l;
    }
    static constexpr Layout kLayout = layout();

    template <size_t... I>
    static void call(void (*fn)(A...), const unsigned char* params, std::index_sequence<I...>) {
        fn(*reinterpret_cast<const A*>(params + kLayout.offsets[I])...);
    }
    static void invoke(void* fn, const unsigned char* params) {
        call(reinterpret_cast<void (*)(A...)>(fn), params, std::index_sequence_for<A...>{});
    }
};

}  // namespace qksoft

#define QKSOFT_KERNEL(NAME)                                                                          \
    qksoft::KernelDesc{#NAME, &qksoft::KernelTraits<decltype(&NAME)>::invoke, reinterpret_cast<void*>(&NAME), \
                       qksoft::KernelTraits<decltype(&NAME)>::n, qksoft::KernelTraits<decltype(&NAME)>::sizes, \
                       qksoft::KernelTraits<decltype(&NAME)>::kLayout.offsets,                        \
                       qksoft::KernelTraits<decltype(&NAME)>::kLayout.bytes},

// The static shared memory of this library's kernels: its TLS block for the calling thread, which
// holds every `static thread_local` that `__shared__` became (cuda_host.h) and nothing else. Found
// from the library's PT_TLS segment (dl_iterate_phdr) and __tls_get_addr with its module id.
#include <dlfcn.h>
#include <link.h>

extern "C" void* __tls_get_addr(void*);

namespace {

struct QksoftTlsFound {
    uintptr_t code;  // an address inside this library
    size_t modid;
    size_t bytes;
};

int qksoft_find_tls(struct dl_phdr_info* info, size_t, void* data) {
    QksoftTlsFound* f = static_cast<QksoftTlsFound*>(data);
    bool ours = false;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr)& p = info->dlpi_phdr[i];
        const uintptr_t start = info->dlpi_addr + p.p_vaddr;
        if (p.p_type == PT_LOAD && f->code >= start && f->code < start + p.p_memsz) ours = true;
    }
    if (!ours) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        if (info->dlpi_phdr[i].p_type == PT_TLS) {
            f->modid = info->dlpi_tls_modid;
            f->bytes = info->dlpi_phdr[i].p_memsz;
        }
    }
    return 1;
}

void qksoft_library_shared(char** begin, size_t* bytes) {
    static QksoftTlsFound found{0, 0, 0};
    static bool searched = false;
    if (!searched) {
        found.code = reinterpret_cast<uintptr_t>(&qksoft_library_shared);
        dl_iterate_phdr(qksoft_find_tls, &found);
        searched = true;
    }
    if (found.bytes == 0) {
        *begin = nullptr;
        *bytes = 0;
        return;
    }
    struct {
        unsigned long module, offset;
    } index{found.modid, 0};
    *begin = static_cast<char*>(__tls_get_addr(&index));
    *bytes = found.bytes;
}

}  // namespace
