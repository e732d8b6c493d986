#!/usr/bin/env bash
# Runs a qwen-kernels bundle (made by scripts/bundle.sh) on a machine with an NVIDIA driver and no
# Rust toolchain.
#
# usage: ./run [--require-gpu] [--sanitizer TOOL[,TOOL]] [--sanitizer-filter "NAME ..."] [--no-bench] [--no-peers]
#        ./run --lease SECONDS [--device hardware|emulated] [--results DIR] [--min-box S] [--sanitizer-filter "NAME ..."]
#   --require-gpu        GPU tests fail instead of skipping when no device is usable
#   --sanitizer memcheck,racecheck
#                        also run the GPU tests whose name contains NAME (default: every op's
#                        functional and golden tests) under compute-sanitizer with each tool; any
#                        sanitizer error fails the run; without compute-sanitizer the step is skipped
#   --no-bench           skip the benchmarks;  --no-peers: skip the PyTorch peer benchmarks
#   --lease SECONDS      everything that matters within SECONDS (the whole time left): a probe, then
#                        each step in order of value in its own time box (README: "Reading a lease
#                        run"); results in --results DIR (default $QK_RESULTS_DIR, else results/
#                        beside this script): one log per step and results.json
#   --device emulated    (with --lease) a rehearsal on the software device, no GPU required
#   --min-box S          (with --lease) every step's minimum box is S seconds instead of its own
#   --golden DIR         the golden data (default: $QK_GOLDEN_DIR, the bundle's golden/, else
#                        golden/data under the current directory or the folder above the bundle)
# Environment: PYTHON (default python3) is the Python whose site-packages hold the CUDA 13 wheels
# (cuBLAS, compute-sanitizer) and torch for the peers; COMPUTE_SANITIZER names the binary outright
# (no other is looked for then).
# The binaries need the glibc recorded in GLIBC_REQUIRED (checked first).
# Exit status: non-zero if any step failed (3: glibc too old; with --lease: 1 when a step failed or
# no GPU was found, 4 when none failed but a time box cut a step). The last lines summarise each
# step; without --lease every step's output is also written to $QK_LOG_DIR (default: logs/ beside
# this script).
set -uo pipefail

now_ms() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo $((10#$t / 1000))
    else
        echo $(($(date +%s%N) / 1000000))
    fi
}
start_ms=$(now_ms)

here=$(cd "$(dirname "$0")" && pwd)
require=0 sanitizers="" filter="rmsnorm swiglu argmax rope linear gemv:: decode:: attention::goldens attention::decode paged:: sampling::" bench=1 peers=1
lease="" device=${QK_DEVICE:-hardware} results=${QK_RESULTS_DIR:-} min_box="" golden="" filter_given=0
while [ $# -gt 0 ]; do
    case "$1" in
        --require-gpu) require=1 ;;
        --sanitizer) sanitizers=${2//,/ }; shift ;;
        --sanitizer-filter) filter=$2; filter_given=1; shift ;;
        --no-bench) bench=0 ;;
        --no-peers) peers=0 ;;
        --lease) lease=${2:-}; shift ;;
        --device) device=${2:-}; shift ;;
        --results) results=${2:-}; shift ;;
        --min-box) min_box=${2:-}; shift ;;
        --golden) golden=${2:-}; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "run: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
case "$device" in
    hardware|"") device=hardware ;;
    emulated|software) device=emulated ;;
    *) echo "run: --device (or QK_DEVICE) is $device: expected hardware or emulated" >&2; exit 2 ;;
esac
if [ -n "$lease" ] && ! [[ "$lease" =~ ^[0-9]+$ ]]; then
    echo "run: --lease takes the seconds left as a whole number, not '$lease'" >&2; exit 2
fi
if [ -n "$min_box" ] && ! [[ "$min_box" =~ ^[0-9]+$ ]]; then
    echo "run: --min-box takes whole seconds, not '$min_box'" >&2; exit 2
fi
if [ -z "$lease" ] && [ -n "$min_box" ]; then
    echo "run: --min-box goes with --lease SECONDS" >&2; exit 2
fi

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
    echo "run: Python $(command -v "$python") ($("$python" --version 2>&1)); site-packages searched: ${site_dirs//$'\n'/ }"
else
    echo "run: Python '$python' (\$PYTHON, default python3) not found: site-packages are not searched"
fi
wheel_dirs() {  # wheel_dirs SUBDIR: site-packages/nvidia/*/SUBDIR that exist
    local r d
    for r in $site_dirs; do
        for d in "$r"/nvidia/*/"$1"; do [ -d "$d" ] && echo "$d"; done
    done
}

# compute-sanitizer: $COMPUTE_SANITIZER when set (and then only it: a named binary that is not
# there is reported, not replaced by another), else the bundle's tools/ (bundle.sh --sanitizer),
# PATH, CUDA toolkits, then the wheels (pip install "cuda-toolkit[sanitizer]==13.0.2").
if [ -n "${COMPUTE_SANITIZER:-}" ]; then
    sanitizer_places="\$COMPUTE_SANITIZER=$COMPUTE_SANITIZER is not an executable"
else
    sanitizer_places="$here/tools, PATH, /usr/local/cuda*/bin, $python's site-packages/nvidia/*/bin"
fi
find_sanitizer() {
    local c d
    if [ -n "${COMPUTE_SANITIZER:-}" ]; then
        [ -x "$COMPUTE_SANITIZER" ] && echo "$COMPUTE_SANITIZER"
        return
    fi
    for c in "$here"/tools/nvidia/*/bin/compute-sanitizer "$(command -v compute-sanitizer 2>/dev/null)" \
             /usr/local/cuda*/bin/compute-sanitizer $(for d in $(wheel_dirs bin); do echo "$d/compute-sanitizer"; done); do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return; fi
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
    if [ -n "$lease" ] && [ "$device" = emulated ]; then
        echo "run: cuBLAS NOT found (LD_LIBRARY_PATH, $python's site-packages/nvidia/*/lib, /usr/local/cuda): the software device brings its own"
    else
        echo "run: cuBLAS NOT found (LD_LIBRARY_PATH, $python's site-packages/nvidia/*/lib, /usr/local/cuda): the linear-layer tests and check rows fail; pip install nvidia-cublas (CUDA 13) into \$PYTHON's environment or add its lib directory to LD_LIBRARY_PATH"
    fi
fi

# ---- --lease SECONDS: everything that matters within the time left --------------------------------
# A probe (the device, its driver against the one the fatbins need, cuBLAS, the golden data,
# torch), then each step in order of value, each under `timeout` in its own box. A step's box is its
# share of the time left when it starts, over the shares of the steps not yet run, so time a step
# does not use goes to the later ones; a box shorter than the step's minimum skips the step.
lease_ids=(gpu-tests check profile-0.5b-b1 profile-1.5b-b1 profile-1.5b-b32 bench-model peer-model
           bench-ops peer-ops bench-attention peer-attention bench-rmsnorm peer-rmsnorm sanitizer)
declare -A lease_share=([gpu-tests]=24 [check]=14 [profile-0.5b-b1]=4 [profile-1.5b-b1]=4 [profile-1.5b-b32]=4
    [bench-model]=15 [peer-model]=10 [bench-ops]=6 [peer-ops]=3 [bench-attention]=4 [peer-attention]=3
    [bench-rmsnorm]=3 [peer-rmsnorm]=2 [sanitizer]=4)
declare -A lease_min=([gpu-tests]=60 [check]=30 [profile-0.5b-b1]=10 [profile-1.5b-b1]=10 [profile-1.5b-b32]=10
    [bench-model]=45 [peer-model]=45 [bench-ops]=20 [peer-ops]=15 [bench-attention]=15 [peer-attention]=15
    [bench-rmsnorm]=15 [peer-rmsnorm]=15 [sanitizer]=30)
# Criterion's times for a lease: short, every case still measured.
lease_criterion=(--bench --warm-up-time 0.5 --measurement-time 1)

json_str() {  # json_str VAR TEXT: VAR = TEXT as a JSON string literal (null when TEXT is empty)
    local s=$2
    if [ -z "$s" ]; then printf -v "$1" null; return; fi
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\n'/\\n}
    s=${s//[[:cntrl:]]/}
    printf -v "$1" '"%s"' "$s"
}

# One record per step (the probe first), each kept as its JSON object; results.json is rewritten
# after every step, so a run stopped from outside still leaves a valid file.
rec_name=() rec_status=() rec_reason=() rec_secs=() rec_closing=() rec_json=()
record() {  # record NAME COMMAND STATUS REASON BOX SECONDS CLOSING LOG
    local n c st r cl l
    rec_name+=("$1") rec_status+=("$3") rec_reason+=("$4") rec_secs+=("$6") rec_closing+=("$7")
    json_str n "$1"; json_str c "$2"; json_str st "$3"; json_str r "$4"; json_str cl "$7"; json_str l "$8"
    rec_json+=("{\"name\": $n, \"command\": $c, \"status\": $st, \"reason\": $r, \"box_seconds\": ${5:-null}, \"seconds\": ${6:-null}, \"closing_line\": $cl, \"log\": $l}")
}
write_results() {  # write_results FINISHED(true|false) [EXIT]
    local f="$results/results.json" dev commit gpu golden steps
    json_str dev "$device"; json_str commit "$QK_COMMIT"; json_str gpu "$probe_gpu"; json_str golden "${QK_GOLDEN_DIR:-}"
    printf -v steps ',\n    %s' "${rec_json[@]}"
    printf '{\n  "mode": "lease",\n  "device": %s,\n  "commit": %s,\n  "budget_seconds": %s,\n  "elapsed_seconds": %s,\n  "finished": %s,\n  "exit_status": %s,\n  "gpu": %s,\n  "golden": %s,\n  "steps": [%s\n  ]\n}\n' \
        "$dev" "$commit" "$lease" "$(secs_since "$start_ms")" "$1" "${2:-null}" "$gpu" "$golden" "${steps#,}" > "$f.tmp" && mv "$f.tmp" "$f"
}

secs_since() {  # seconds since $1 (ms), one decimal
    local d=$(($(now_ms) - $1))
    printf '%d.%d' $((d / 1000)) $((d % 1000 / 100))
}
left_s() { echo $(((deadline_ms - $(now_ms)) / 1000)); }

closing_line() {  # the closing line of a log: a summary line where there is one, else the last line
    local line
    line=$(grep -v '^#' "$1" | grep -E 'test result:|passed, [0-9]+ failed|[0-9]+ passed|summary|skipped' | tail -n 1)
    [ -n "$line" ] || line=$(grep -v '^#' "$1" | grep -v '^[[:space:]]*$' | tail -n 1)
    line=${line#"${line%%[![:space:]]*}"}
    printf '%s' "${line:0:300}"
}

# Decompress bin/*.xz (a lease bundle ships its binaries compressed): xz when the machine has it,
# else Python's lzma module (in every Python that runs PyTorch).
unpack_bins() {
    local z out
    for z in "$here"/bin/*.xz; do
        [ -e "$z" ] || continue
        out=${z%.xz}
        if [ -x "$out" ] && [ "$out" -nt "$z" ]; then continue; fi
        if command -v xz >/dev/null 2>&1; then
            echo "unpack: $(basename "$z") with $(command -v xz)"
            xz -dc "$z" > "$out.part" || return 1
        elif command -v "$python" >/dev/null 2>&1; then
            echo "unpack: $(basename "$z") with $python's lzma module (no xz here)"
            "$python" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as i, open(sys.argv[2], "wb") as o:
    shutil.copyfileobj(i, o)' "$z" "$out.part" || return 1
        else
            echo "unpack: neither xz nor $python here to decompress $z"; return 1
        fi
        chmod +x "$out.part" && mv "$out.part" "$out"
    done
}

# The probe: prints what it finds into probe.log; sets probe_gpu, probe_ok (0: no usable device),
# probe_problems, torch_ok, torch_reason, transformers_ok.
lease_probe() {
    local smi info dev cuda_ver drv_major
    probe_ok=1 probe_problems=""
    if ! unpack_bins; then probe_ok=0 probe_problems+="the binaries could not be unpacked; "; fi
    echo "commit: $QK_COMMIT"
    echo "glibc: ${have:-unknown} here, the binaries need >= ${required:-unknown}"
    echo "python: $python ($(command -v "$python" >/dev/null 2>&1 && "$python" --version 2>&1 || echo 'not found'))"
    if [ "$device" = emulated ]; then
        echo "device mode: EMULATED: the software device (the kernels compiled for the host, run on the CPU) stands in"
        echo "  for the GPU; QK_REQUIRE_GPU is not set. A rehearsal of the run, not a hardware result."
    else
        echo "device mode: hardware (QK_REQUIRE_GPU=1: a step without a GPU fails)"
    fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        smi=$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)
        echo "nvidia-smi: $smi"
        drv_major=$(printf '%s' "$smi" | awk -F', *' '{print $2}' | cut -d. -f1)
        if [[ "$drv_major" =~ ^[0-9]+$ ]]; then
            if [ "$drv_major" -ge 580 ]; then
                echo "driver: $drv_major >= 580, what the fatbins' CUDA 13.0 needs: ok"
            else
                echo "driver: $drv_major, but the fatbins are built with CUDA 13.0 and need driver >= 580"
                [ "$device" = hardware ] && probe_ok=0 probe_problems+="driver $drv_major < 580; "
            fi
        fi
    else
        echo "nvidia-smi: not found"
    fi
    if [ -x "$here/bin/qwen-kernels" ]; then
        info=$(timeout -k 5 120 "$here/bin/qwen-kernels" info 2>&1)
        echo "qwen-kernels info:"
        printf '%s\n' "$info" | sed 's/^/  /'
        dev=$(printf '%s\n' "$info" | grep -m 1 '^device: ')
        dev=${dev#device: }
    else
        dev="none (bin/qwen-kernels missing)"
    fi
    probe_gpu=$dev
    if [ "$device" = hardware ]; then
        if [ -z "$dev" ] || [[ "$dev" == none* ]] || [[ "$dev" == "software device"* ]]; then
            probe_ok=0 probe_problems+="no GPU: ${dev:-qwen-kernels info reported no device}; "
        else
            cuda_ver=$(printf '%s' "$dev" | sed -n 's/.*driver \([0-9]*\).*/\1/p')
            if [ -n "$cuda_ver" ] && [ "$cuda_ver" -lt 13000 ]; then
                probe_ok=0 probe_problems+="the driver supports CUDA $cuda_ver < 13000 (13.0); "
            fi
        fi
        if printf '%s\n' "$info" | grep -q '^cuBLAS: '; then
            probe_problems+="$(printf '%s\n' "$info" | grep -m 1 '^cuBLAS: '); "
        fi
    elif [[ "$dev" != "software device"* ]]; then
        probe_ok=0 probe_problems+="the software device did not open: ${dev:-no device line}; "
    fi
    if [ "$device" = emulated ]; then
        echo "cuBLAS: the software device's own (the hardware one: ${cublas:-not found})"
    else
        echo "cuBLAS: ${cublas:-NOT found}"
    fi
    echo "golden data: ${QK_GOLDEN_DIR:-NOT found}"
    torch_ok=0 transformers_ok=0 torch_reason=""
    if [ "$device" = emulated ]; then
        torch_reason="the PyTorch peers measure a GPU; the software device has none to give them"
    elif ! command -v "$python" >/dev/null 2>&1; then
        torch_reason="$python not found"
    else
        local t
        t=$(timeout 120 "$python" -c 'import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available())
try:
    import transformers
    print("transformers", transformers.__version__)
except ImportError as e:
    print("transformers missing:", e)' 2>&1)
        echo "peers: $python: ${t//$'\n'/; }"
        if printf '%s' "$t" | grep -q 'cuda True'; then torch_ok=1; else torch_reason="torch with CUDA is not usable from $python: $(printf '%s\n' "$t" | tail -n 1)"; fi
        if printf '%s' "$t" | grep -q '^transformers [0-9]'; then transformers_ok=1; fi
    fi
    [ -n "$torch_reason" ] && echo "peers: skipped: $torch_reason"
    [ "$probe_ok" = 1 ]
}

lease_profile_ok=""  # whether this build has `qwen-kernels profile` (asked once)
lease_command() {  # lease_command ID: sets cmd (array) and skip (the reason not to run, or empty)
    local b="$here/bin"
    cmd=() skip=""
    case "$1" in
        gpu-tests) cmd=("$b/test-gpu") ;;
        check) cmd=("$b/qwen-kernels" check --backend cuda) ;;
        profile-*)
            local model batch
            case "$1" in
                profile-0.5b-b1) model=qwen2.5-0.5b batch=1 ;;
                profile-1.5b-b1) model=vibethinker-1.5b batch=1 ;;
                profile-1.5b-b32) model=vibethinker-1.5b batch=32 ;;
            esac
            cmd=("$b/qwen-kernels" profile --model "$model" --batch "$batch" --context 512 --svg "$results/$1.svg")
            if [ -z "$lease_profile_ok" ]; then
                if timeout 30 "$b/qwen-kernels" profile --help >/dev/null 2>&1; then lease_profile_ok=1; else lease_profile_ok=0; fi
            fi
            [ "$lease_profile_ok" = 1 ] || skip="not in this build (qwen-kernels profile --help failed)"
            ;;
        bench-*)
            cmd=("$b/$1" "${lease_criterion[@]}")
            [ -x "$b/$1" ] || skip="not in this bundle (bin/$1)"
            ;;
        peer-*)
            cmd=("$python" "$here/peers/${1#peer-}_torch.py")
            if [ ! -f "${cmd[1]}" ]; then skip="not in this bundle (peers/${1#peer-}_torch.py)"
            elif [ "$torch_ok" != 1 ]; then skip=$torch_reason
            elif [ "$1" = peer-model ] && [ "$transformers_ok" != 1 ]; then skip="transformers is not importable from $python (the model peer runs its Qwen2 model)"
            fi
            ;;
        sanitizer)
            local cs
            cs=$(find_sanitizer)
            # word-split on purpose: each word of the filter is a test name filter
            # shellcheck disable=SC2206
            cmd=("${cs:-compute-sanitizer}" --tool memcheck --error-exitcode 99 "$b/test-gpu" $lease_filter)
            if [ "$device" = emulated ]; then skip="compute-sanitizer checks hardware launches; the software device has its own checks (the GPU tests)"
            elif [ -z "$cs" ]; then skip="compute-sanitizer not found ($sanitizer_places)"
            fi
            ;;
    esac
}

lease_run() {
    local budget=$lease reserve box boxed grace limit i id name log t0 rc secs status reason closing left rest
    deadline_ms=$((start_ms + budget * 1000))
    # The last seconds are kept for results.json and for the results to travel back.
    reserve=$((budget / 20)); [ "$reserve" -gt 10 ] && reserve=10
    lease_filter=$filter; [ "$filter_given" = 1 ] || lease_filter="rmsnorm::random_inputs"
    results=${results:-$here/results}
    mkdir -p "$results" || { echo "run: cannot create the results folder $results" >&2; return 2; }
    results=$(cd "$results" && pwd)
    rm -f "$results"/*.log "$results/results.json"
    export CRITERION_HOME="$results/criterion"
    if [ "$device" = emulated ]; then
        export QK_DEVICE=emulated; unset QK_REQUIRE_GPU
    else
        export QK_REQUIRE_GPU=1; unset QK_DEVICE
    fi
    cd "$here" || return 2
    probe_gpu="" probe_ok=0
    echo; echo "=== lease: $budget s in all (the time left when run started), results in $results"
    echo "=== probe"
    t0=$(now_ms)
    lease_probe > "$results/00-probe.log" 2>&1
    local probe_rc=$?
    cat "$results/00-probe.log"
    if [ "$probe_rc" = 0 ] && [ -z "$probe_problems" ]; then status=passed; else status=failed; fi
    reason=${probe_problems%; }
    record probe "qwen-kernels info; nvidia-smi" "$status" "$reason" "" "$(secs_since "$t0")" "device: $probe_gpu" 00-probe.log
    write_results false

    # Steps that cannot run here (a missing command, no torch, the software device) are known
    # before the plan: they get no share, so their time goes to the others.
    declare -A known_skip=()
    rest=0
    for id in "${lease_ids[@]}"; do
        if [ "$probe_ok" = 1 ]; then lease_command "$id"; else skip="the probe found no usable device: ${probe_problems%; }"; fi
        known_skip[$id]=$skip
        [ -n "$skip" ] || rest=$((rest + lease_share[$id]))
    done
    # The plan: each step's box if every step before it used its whole box.
    left=$(($(left_s) - reserve))
    echo; echo "=== plan: $left s for the steps (${reserve} s kept at the end); a step that ends early passes its time on"
    local sim=$left sim_rest=$rest n=0
    for id in "${lease_ids[@]}"; do
        n=$((n + 1))
        if [ -n "${known_skip[$id]}" ]; then
            printf '  %2d. %-18s skipped: %s\n' "$n" "$id" "${known_skip[$id]}"
            continue
        fi
        box=$((sim * lease_share[$id] / sim_rest))
        printf '  %2d. %-18s box %4d s  (minimum %d s)\n' "$n" "$id" "$box" "${min_box:-${lease_min[$id]}}"
        sim=$((sim - box)) sim_rest=$((sim_rest - lease_share[$id]))
    done

    i=0
    for id in "${lease_ids[@]}"; do
        i=$((i + 1))
        name=$id
        log=$(printf '%02d-%s.log' "$i" "$id")
        left=$(($(left_s) - reserve))
        lease_command "$id"
        skip=${known_skip[$id]}
        if [ -n "$skip" ]; then
            box=0
        else
            box=$((left > 0 ? left * lease_share[$id] / rest : 0))
            rest=$((rest - lease_share[$id]))
        fi
        echo
        if [ -n "$skip" ]; then boxed="no box"; else boxed="box $box s"; fi
        echo "=== [$i/${#lease_ids[@]}] $name: $((left + reserve)) s left, $boxed: ${cmd[*]}"
        if [ -z "$skip" ] && [ "$box" -lt "${min_box:-${lease_min[$id]}}" ]; then
            skip="its box ($box s) is shorter than its minimum (${min_box:-${lease_min[$id]}} s)"
        fi
        if [ -n "$skip" ]; then
            echo "skipped: $skip"
            record "$name" "${cmd[*]}" skipped "$skip" "$box" 0 "" ""
            write_results false
            continue
        fi
        grace=5; [ "$box" -lt 30 ] && grace=1
        limit=$((box - grace))
        { echo "# $name: ${cmd[*]}"; echo "# box $box s: timeout $limit s, then KILL after $grace s; $((left + reserve)) s left before it"; } > "$results/$log"
        t0=$(now_ms)
        timeout -k "$grace" "$limit" "${cmd[@]}" < /dev/null 2>&1 | tee -a "$results/$log"
        rc=${PIPESTATUS[0]}
        secs=$(secs_since "$t0")
        closing=$(closing_line "$results/$log")
        reason=""
        if { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ $(($(now_ms) - t0)) -ge $((limit * 1000 - 500)) ]; then
            status=timed-out reason="cut by its time box ($box s) after $secs s"
            echo "### TIMED OUT: $reason" | tee -a "$results/$log"
        elif [ "$rc" = 0 ]; then
            status=passed
        else
            status=failed reason="exit status $rc"
        fi
        echo "--- $name: $status in $secs s${reason:+ ($reason)}"
        record "$name" "${cmd[*]}" "$status" "$reason" "$box" "$secs" "$closing" "$log"
        write_results false
    done

    local failed=0 cut=0 counts="" s line
    for s in "${rec_status[@]}"; do
        case "$s" in failed) failed=$((failed + 1)) ;; timed-out) cut=$((cut + 1)) ;; esac
    done
    for s in passed failed timed-out skipped; do
        counts+="$(printf '%s\n' "${rec_status[@]}" | grep -c "^$s\$") $s, "
    done
    echo; echo "=== summary (commit $QK_COMMIT, $device, $(secs_since "$start_ms") s of $budget s)"
    for ((i = 0; i < ${#rec_name[@]}; i++)); do
        line="${rec_reason[i]:+(${rec_reason[i]}) }${rec_closing[i]}"
        printf '%-10s %-18s %7s s  %s\n' "${rec_status[i]}" "${rec_name[i]}" "${rec_secs[i]}" "${line% }"
    done
    echo "${counts%, }; results: $results/results.json"
    [ "$device" = emulated ] && echo "(the software device stood in for the GPU: a rehearsal, not a hardware result)"
    local code=0
    if [ "$probe_ok" != 1 ] || [ "$failed" -gt 0 ]; then code=1; elif [ "$cut" -gt 0 ]; then code=4; fi
    write_results true "$code"
    return "$code"
}

# Golden data: --golden, $QK_GOLDEN_DIR, the bundle's golden/ (a full bundle carries it), else
# golden/data of the repository the bundle was carried in: the current directory (a lease bundle
# runs from the repository root) or the folder above the bundle.
if [ -n "$golden" ] && [ ! -d "$golden" ]; then
    echo "run: --golden $golden: no such directory" >&2; exit 2
fi
if [ -z "$golden" ]; then
    for d in "${QK_GOLDEN_DIR:-}" "$here/golden" "$PWD/golden/data" "$here/../golden/data"; do
        if [ -n "$d" ] && [ -d "$d" ]; then golden=$d; break; fi
    done
fi
if [ -n "$golden" ]; then
    golden=$(cd "$golden" && pwd)
    export QK_GOLDEN_DIR="$golden"
    echo "run: golden data from $golden"
else
    echo "run: golden data NOT found (--golden, \$QK_GOLDEN_DIR, $here/golden, $PWD/golden/data, $here/../golden/data): the golden tests and check fail; run from the repository root or pass --golden DIR"
fi

QK_COMMIT=$(cat "$here/COMMIT" 2>/dev/null || echo unknown)
export QK_COMMIT
if [ -n "$lease" ]; then
    lease_run
    exit $?
fi
[ "$require" = 1 ] && export QK_REQUIRE_GPU=1
cd "$here" || exit 2

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
    if [ "$rc" -eq 0 ]; then summary+=("ok      $name  ${last}"); else summary+=("FAILED  $name (exit $rc)  ${last}"); failed=1; fi
}

unpack_bins || { echo "run: the binaries could not be unpacked" >&2; exit 2; }
echo "run: commit $QK_COMMIT, $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
step "info" bin/qwen-kernels info
for t in bin/test-*; do
    case "$t" in *.xz|*.part) continue ;; esac
    step "$(basename "$t")" "$t"
done
check_args=(check); [ "$require" = 1 ] && check_args+=(--backend cuda)
step "check" bin/qwen-kernels "${check_args[@]}"

if [ -n "$sanitizers" ]; then
    cs=$(find_sanitizer)
    if [ -n "$cs" ]; then
        echo "run: compute-sanitizer $cs"
    else
        echo "run: compute-sanitizer not found ($sanitizer_places); the sanitizer steps are skipped. Install it with: $python -m pip install 'cuda-toolkit[sanitizer]==13.0.2', or bundle it: scripts/bundle.sh --sanitizer"
    fi
    for tool in $sanitizers; do
        if [ -z "$cs" ]; then
            summary+=("skipped compute-sanitizer $tool  skipped: compute-sanitizer not found"); continue
        fi
        # shellcheck disable=SC2086  # word-split: each word of the filter is a name filter
        step "compute-sanitizer $tool ($filter)" "$cs" --tool "$tool" --error-exitcode 99 bin/test-gpu $filter
    done
fi

if [ "$bench" = 1 ]; then
    for b in bin/bench-*; do
        case "$b" in *.xz|*.part) continue ;; esac
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
