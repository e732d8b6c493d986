#!/usr/bin/env bash
# Build everything a GPU runner needs into one folder that runs without a Rust toolchain:
#   bin/test-*    release test binaries (bin/test-gpu holds every GPU test)
#   bin/bench-*   release criterion benches
#   bin/qwen-kernels, peers/ (PyTorch peer benchmarks), golden/ (golden data, when present)
#   run           the runner: ./run --help
#   GLIBC_REQUIRED  the newest glibc symbol version the binaries use (run checks it first)
#   tools/        with --sanitizer: compute-sanitizer from PyPI (cuda-toolkit[sanitizer]==13.0.2), so
#                 the GPU machine needs neither a CUDA toolkit nor network access for it
# usage: scripts/bundle.sh [--sanitizer] [DIR]   (default DIR: bundle/, which git ignores)
#
#        scripts/bundle.sh --lease [DIR]
# A lease bundle, for a short GPU slot whose carry holds the repository tree and at most 38 MiB
# more: only bin/test-gpu, bin/qwen-kernels and the benches (model, ops, attention, rmsnorm),
# stripped and xz-compressed (bin/*.xz; run unpacks them with xz or Python's lzma), peers/, run,
# GLIBC_REQUIRED, COMMIT. No golden data (run finds golden/data in the repository it is carried
# in) and no software-device mutants (hardware does not use them). Prints the bundle's size and
# fails above $QK_BUNDLE_LIMIT_MIB (default 38) MiB. On the GPU machine, from the repository root:
#   bundle/run --lease SECONDS --results DIR
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ship_sanitizer=0 lease=0
case "${1:-}" in
    --sanitizer) ship_sanitizer=1; shift ;;
    --lease) lease=1; shift ;;
    -*) echo "bundle: unknown option $1 (usage: scripts/bundle.sh [--sanitizer | --lease] [DIR])" >&2; exit 2 ;;
esac
out=${1:-bundle}
scripts/setup-cuda.sh

executables() {
    # cargo's JSON messages name each built executable; keep "<kind>-<target name> <path>".
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        kind = m["target"]["kind"][0]
        name = m["target"]["name"]
        prefix = {"test": "test", "bench": "bench", "lib": "test", "bin": "bin"}.get(kind, kind)
        if kind == "lib":
            name = "lib"
        print(prefix + "-" + name, m["executable"])
'
}

# The binaries link against this machine's glibc and need at least the newest symbol version they
# use; record it for run's check. objdump lists the versioned symbols; without binutils the
# version names are read from the binaries' string tables.
glibc_versions() {
    if command -v objdump >/dev/null 2>&1; then
        objdump -T "$@" 2>/dev/null | grep -o 'GLIBC_[0-9][0-9.]*'
    else
        grep -a -o -h 'GLIBC_[0-9][0-9.]*' "$@"
    fi
}
record_glibc() {
    local required here_glibc
    required=$(glibc_versions "$@" | sed 's/^GLIBC_//' | sort -u -V | tail -n 1)
    here_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
    echo "$required" > "$out/GLIBC_REQUIRED"
    echo "bundle: the binaries need glibc >= $required (built with glibc ${here_glibc:-unknown})"
}
record_commit() {
    git rev-parse --short HEAD > "$out/COMMIT" 2>/dev/null || echo unknown > "$out/COMMIT"
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then echo "$(cat "$out/COMMIT")+dirty" > "$out/COMMIT"; fi
}

if [ "$lease" = 1 ]; then
    limit_mib=${QK_BUNDLE_LIMIT_MIB:-38}
    rm -rf "$out"
    mkdir -p "$out/bin"
    # One cargo invocation: the library is built once for all six.
    cargo build --release --bin qwen-kernels --test gpu --bench model --bench ops --bench attention --bench rmsnorm \
        --message-format=json-render-diagnostics | executables | while read -r name path; do
        case "$name" in
            bin-qwen-kernels) cp "$path" "$out/bin/qwen-kernels" ;;
            test-gpu|bench-*) cp "$path" "$out/bin/$name" ;;
        esac
    done
    for b in qwen-kernels test-gpu bench-model bench-ops bench-attention bench-rmsnorm; do
        [ -f "$out/bin/$b" ] || { echo "bundle: cargo built no $b" >&2; exit 1; }
    done
    strip "$out"/bin/*
    record_glibc "$out"/bin/*
    echo "bundle: compressing (xz -9): $(du -sh "$out/bin" | cut -f1) of stripped binaries"
    for b in "$out"/bin/*; do
        xz -9 -T1 "$b"  # replaces b with b.xz
    done
    mkdir -p "$out/peers"
    cp benches/peers/*.py "$out/peers/"
    record_commit
    cp scripts/bundle-run.sh "$out/run"
    chmod +x "$out/run"
    ls -l "$out"/bin
    bytes=$(du -sb "$out" | cut -f1)
    tree=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
    mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
    echo "bundle: $out is $(mib "$bytes") ($bytes bytes; limit $limit_mib MiB); with the tracked tree ($(mib "$tree")): $(mib $((bytes + tree)))"
    if [ "$bytes" -gt $((limit_mib * 1048576)) ]; then
        echo "bundle: $out is over the $limit_mib MiB a lease carries beside the tree: $(mib "$bytes")" >&2
        exit 1
    fi
    echo "bundle: $out (commit $(cat "$out/COMMIT")); on the GPU machine, from the repository root: $out/run --lease SECONDS --results DIR"
    exit 0
fi

rm -rf "$out"
mkdir -p "$out/bin"
{
    cargo test --release --no-run --message-format=json-render-diagnostics
    cargo bench --no-run --message-format=json-render-diagnostics
} | executables | while read -r name path; do
    case "$name" in
        bin-*) ;;  # the CLI is copied below under its own name
        test-kernel_args) ;;  # bindgen against libclang: a check of the sources, nothing for a GPU
        *) cp "$path" "$out/bin/$name" ;;
    esac
done
cargo build --release --bin qwen-kernels
cp target/release/qwen-kernels "$out/bin/qwen-kernels"
# The software device's source mutants (tests/gpu/negative.rs runs them where no GPU is usable).
# shellcheck disable=SC2012  # the newest build directory: ls sorts by time
mutants=$(ls -td target/release/build/qwen-kernels-*/out/softgpu/mutants 2>/dev/null | head -n 1)
if [ -n "$mutants" ]; then
    mkdir -p "$out/softgpu-mutants"
    cp "$mutants"/lib*.so "$out/softgpu-mutants/"
fi
# Debug info is for local profiling; the bundle travels.
strip "$out"/bin/* 2>/dev/null || true

record_glibc "$out"/bin/*

if [ "$ship_sanitizer" = 1 ]; then
    spec='cuda-toolkit[sanitizer]==13.0.2'
    echo "bundle: shipping compute-sanitizer ($spec) in $out/tools"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --target "$out/tools" "$spec"
    ls "$out"/tools/nvidia/*/bin/compute-sanitizer
fi

cp -r benches/peers "$out/peers"
if [ -d golden/data ]; then cp -r golden/data "$out/golden"; fi
record_commit
cp scripts/bundle-run.sh "$out/run"
chmod +x "$out/run"
du -sh "$out"
echo "bundle: $out (commit $(cat "$out/COMMIT")); on the GPU machine: $out/run --require-gpu"
