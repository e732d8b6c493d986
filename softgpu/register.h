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

// The library's `qk_shared` section (every static __shared__ of its kernels), bounded by the
// symbols the linker defines for it; weak, so a library whose kernels declare none gets null.
extern "C" char __start_qk_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_qk_shared[] __attribute__((weak, visibility("hidden")));
