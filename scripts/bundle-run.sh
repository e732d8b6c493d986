#!/usr/bin/env bash
# Runs a qwen-kernels bundle (made by scripts/bundle.sh) on a machine with an NVIDIA driver and no
# Rust toolchain.
#
# usage: ./run [--require-gpu] [--sanitizer TOOL[,TOOL]] [--sanitizer-filter "NAME ..."] [--no-bench] [--no-peers]
#   --require-gpu        GPU tests fail instead of skipping when no device is usable
#   --sanitizer memcheck,racecheck
#                        also run the GPU tests whose name contains NAME (default: every op's
#                        functional and golden tests) under compute-sanitizer with each tool; any
#                        sanitizer error fails the run; without compute-sanitizer the step is skipped
#   --no-bench           skip the benchmarks;  --no-peers: skip the PyTorch peer benchmarks
# Environment: PYTHON (default python3) is the Python whose site-packages hold the CUDA 13 wheels
# (cuBLAS, compute-sanitizer) and torch for the peers; COMPUTE_SANITIZER names the binary outright.
# The binaries need the glibc recorded in GLIBC_REQUIRED (checked first).
# Exit status: non-zero if any step failed (3: glibc too old). The last lines summarise each step;
# every step's output is also written to $QK_LOG_DIR (default: logs/ beside this script).
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
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "run: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

# glibc: the binaries were linked on the bundling machine and need at least its newest symbol
# version that they use (PyTorch's wheels need only 2.28, so a machine that runs torch may be older).
required=$(cat "$here/GLIBC_REQUIRED" 2>/dev/null)
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
[ -n "$have" ] || have=$(ldd --version 2>/dev/null | head -n 1 | awk '{print $NF}')
if [ -z "$required" ]; then
    echo "run: glibc: no GLIBC_REQUIRED in the bundle; not checked (this machine: ${have:-unknown})"
elif [ -z "$have" ]; then
    echo "run: glibc: the binaries need >= $required; this machine's version is unknown (getconf GNU_LIBC_VERSION and ldd --version failed): trying anyway"
elif [ "$(printf '%s\n%s\n' "$required" "$have" | sort -V | head -n 1)" != "$required" ]; then
    echo "run: glibc $have here (getconf GNU_LIBC_VERSION), but the binaries need glibc >= $required." >&2
    echo "run: build the bundle on a machine whose glibc is at most $have (scripts/bundle.sh there)." >&2
    exit 3
else
    echo "run: glibc $have here, the binaries need >= $required: ok"
fi

# Python: cuBLAS and compute-sanitizer may live in its site-packages (CUDA 13 wheels:
# site-packages/nvidia/cu13/{lib,bin}).
python=${PYTHON:-python3}
site_dirs=""
if command -v "$python" >/dev/null 2>&1; then
    site_dirs=$("$python" - 2>/dev/null <<'PY'
import site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
print("\n".join(dict.fromkeys(r for r in roots if r)))
PY
)
    echo "run: Python $(command -v "$python") ($("$python" --version 2>&1)); site-packages searched: $(echo $site_dirs)"
else
    echo "run: Python '$python' (\$PYTHON, default python3) not found: site-packages are not searched"
fi
wheel_dirs() {  # wheel_dirs SUBDIR: site-packages/nvidia/*/SUBDIR that exist
    local r d
    for r in $site_dirs; do
        for d in "$r"/nvidia/*/"$1"; do [ -d "$d" ] && echo "$d"; done
    done
}

# cuBLAS is loaded at run time (libcublas.so.13): the library path, then the wheels, then toolkits.
cublas=""
ld_path=${LD_LIBRARY_PATH:-}
for d in ${ld_path//:/ } $(wheel_dirs lib) /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
    if ls "$d"/libcublas.so* >/dev/null 2>&1; then cublas=$d; break; fi
done
if [ -n "$cublas" ]; then
    export LD_LIBRARY_PATH="$cublas${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "run: cuBLAS from $cublas"
else
    echo "run: cuBLAS NOT found (LD_LIBRARY_PATH, $python's site-packages/nvidia/*/lib, /usr/local/cuda): the linear-layer tests and check rows fail; pip install nvidia-cublas (CUDA 13) into \$PYTHON's environment or add its lib directory to LD_LIBRARY_PATH"
fi

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
    # compute-sanitizer: $COMPUTE_SANITIZER, the bundle's tools/ (bundle.sh --sanitizer), PATH,
    # CUDA toolkits, then the wheels (pip install "cuda-toolkit[sanitizer]==13.0.2").
    cs=""
    for c in "${COMPUTE_SANITIZER:-}" "$here"/tools/nvidia/*/bin/compute-sanitizer "$(command -v compute-sanitizer 2>/dev/null)" \
             /usr/local/cuda*/bin/compute-sanitizer $(for d in $(wheel_dirs bin); do echo "$d/compute-sanitizer"; done); do
        if [ -n "$c" ] && [ -x "$c" ]; then cs=$c; break; fi
    done
    if [ -n "$cs" ]; then
        echo "run: compute-sanitizer $cs"
    else
        echo "run: compute-sanitizer not found (\$COMPUTE_SANITIZER, $here/tools, PATH, /usr/local/cuda*/bin, $python's site-packages/nvidia/*/bin); the sanitizer steps are skipped. Install it with: $python -m pip install 'cuda-toolkit[sanitizer]==13.0.2', or bundle it: scripts/bundle.sh --sanitizer"
    fi
    for tool in $sanitizers; do
        if [ -z "$cs" ]; then
            summary+=("skipped compute-sanitizer $tool  skipped: compute-sanitizer not found"); continue
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
            step "peer $(basename "$p")" "$python" "$p"
        done
    fi
fi

echo; echo "=== summary (commit $QK_COMMIT)"
printf '%s\n' "${summary[@]}"
exit $failed
