#!/usr/bin/env bash
# Runs a qwen-kernels bundle (made by scripts/bundle.sh) on a machine with an NVIDIA driver and no
# Rust toolchain.
#
# usage: ./run [--require-gpu] [--sanitizer TOOL[,TOOL]] [--sanitizer-filter "NAME ..."] [--no-bench] [--no-peers]
#   --require-gpu        GPU tests fail instead of skipping when no device is usable
#   --sanitizer memcheck,racecheck
#                        also run the GPU tests whose name contains NAME (default "rmsnorm") under
#                        compute-sanitizer with each tool; any sanitizer error fails the run
#   --no-bench           skip the benchmarks;  --no-peers: skip the PyTorch peer benchmarks
# Exit status: non-zero if any step failed. The last lines summarise each step; every step's output
# is also written to $QK_LOG_DIR (default: logs/ beside this script).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
require=0 sanitizers="" filter="rmsnorm swiglu argmax rope linear attention::goldens attention::decode" bench=1 peers=1
while [ $# -gt 0 ]; do
    case "$1" in
        --require-gpu) require=1 ;;
        --sanitizer) sanitizers=${2//,/ }; shift ;;
        --sanitizer-filter) filter=$2; shift ;;
        --no-bench) bench=0 ;;
        --no-peers) peers=0 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "run: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

# cuBLAS is loaded at run time: find libcublas.so.13 (CUDA 13 pip wheels keep it in
# site-packages/nvidia/cu13/lib; a toolkit in lib64).
dirs=$(python3 - 2>/dev/null <<'PY'
import site, sys, glob, os
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")):
        print(d)
PY
)
for d in $dirs /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    if ls "$d"/libcublas.so* >/dev/null 2>&1; then
        export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "run: cuBLAS from $d"
        break
    fi
done

export QK_COMMIT=$(cat "$here/COMMIT")
[ -d "$here/golden" ] && export QK_GOLDEN_DIR="$here/golden"
[ "$require" = 1 ] && export QK_REQUIRE_GPU=1
cd "$here"

summary=()
failed=0
logs=${QK_LOG_DIR:-$here/logs}
mkdir -p "$logs"
step() {  # step NAME COMMAND...: run, log to $logs/NAME.log, record the outcome and its closing line
    local name=$1; shift
    local log="$logs/${name//[^A-Za-z0-9_.-]/_}.log"
    echo; echo "=== $name: $*"
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local last
    last=$(grep -E "test result:|passed, [0-9]+ failed|skipped:" "$log" | tail -n 1)
    if [ $rc -eq 0 ]; then summary+=("ok      $name  ${last}"); else summary+=("FAILED  $name (exit $rc)  ${last}"); failed=1; fi
}

echo "run: commit $QK_COMMIT, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
step "info" bin/qwen-kernels info
for t in bin/test-*; do
    step "$(basename "$t")" "$t"
done
step "check" bin/qwen-kernels check $([ "$require" = 1 ] && echo --backend cuda)

if [ -n "$sanitizers" ]; then
    cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
    for tool in $sanitizers; do
        if [ -z "$cs" ]; then
            summary+=("FAILED  compute-sanitizer $tool (compute-sanitizer not found)"); failed=1; continue
        fi
        step "compute-sanitizer $tool ($filter)" "$cs" --tool "$tool" --error-exitcode 99 bin/test-gpu $filter  # word-split: each word is a name filter
    done
fi

if [ "$bench" = 1 ]; then
    for b in bin/bench-*; do
        step "$(basename "$b")" "$b" --bench
    done
    if [ "$peers" = 1 ]; then
        for p in peers/*_torch.py; do  # timing.py is their shared module
            step "peer $(basename "$p")" python3 "$p"
        done
    fi
fi

echo; echo "=== summary (commit $QK_COMMIT)"
printf '%s\n' "${summary[@]}"
exit $failed
