#!/usr/bin/env bash
# Install CUDA 13.0 nvcc into .toolchain/cuda from PyPI, for build.rs, and libclang into
# .toolchain/libclang, for tests/kernel_args.rs (bindgen regenerates src/kernel_args.rs from
# cuda/args.h and compares; building the crate never needs libclang). Idempotent; no system CUDA.
#
# libclang: the PyPI wheel libclang==18.1.1 (~25 MB; clang/native/libclang.so), pinned because
# bindgen's output depends on its version. Skipped when $LIBCLANG_PATH is set.
#
# Pinned as one consistent 13.0 set: cuda-toolkit[nvcc,crt,nvvm,cudart,cccl]==13.0.2 (~270 MB).
# A bare `pip install nvidia-cuda-nvcc==13.0.88` pulls 13.5 back-end parts whose PTX (.version 9.5)
# the 13.0 ptxas and CUDA 13.0 drivers reject; cccl provides the headers cuda_fp16.h includes.
#
# Skipped when build.rs will use another nvcc anyway ($NVCC, $CUDA_HOME, $CUDA_PATH or nvcc on PATH).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

libclang_dest="$root/.toolchain/libclang"
libclang_spec='libclang==18.1.1'
if [ -n "${LIBCLANG_PATH:-}" ]; then
    echo "setup-cuda: using LIBCLANG_PATH=$LIBCLANG_PATH"
elif [ -f "$libclang_dest/clang/native/libclang.so" ]; then
    echo "setup-cuda: $libclang_dest ($libclang_spec) already installed"
else
    echo "setup-cuda: installing $libclang_spec into $libclang_dest"
    rm -rf "$libclang_dest.tmp"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$libclang_dest.tmp" "$libclang_spec"
    rm -rf "$libclang_dest"
    mv "$libclang_dest.tmp" "$libclang_dest"
fi

dest="$root/.toolchain/cuda"
nvcc="$dest/nvidia/cu13/bin/nvcc"
spec='cuda-toolkit[nvcc,crt,nvvm,cudart,cccl]==13.0.2'

if [ -n "${NVCC:-}" ]; then echo "setup-cuda: using NVCC=$NVCC"; exit 0; fi
for home in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
    if [ -n "$home" ] && [ -x "$home/bin/nvcc" ]; then echo "setup-cuda: using $home/bin/nvcc"; exit 0; fi
done
if command -v nvcc >/dev/null 2>&1; then echo "setup-cuda: using $(command -v nvcc)"; exit 0; fi

if [ -x "$nvcc" ] && "$nvcc" --version | grep -q "release 13.0"; then
    echo "setup-cuda: $nvcc (CUDA 13.0) already installed"
    exit 0
fi

echo "setup-cuda: installing $spec into $dest"
rm -rf "$dest.tmp"
python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$dest.tmp" "$spec"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
"$nvcc" --version | grep -q "release 13.0" || { echo "setup-cuda: $nvcc is not CUDA 13.0" >&2; exit 1; }
echo "setup-cuda: $("$nvcc" --version | tail -n 2 | head -n 1)"
