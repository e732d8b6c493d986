#!/usr/bin/env bash
# Build everything a GPU runner needs into one folder that runs without a Rust toolchain:
#   bin/test-*    release test binaries (bin/test-gpu holds every GPU test)
#   bin/bench-*   release criterion benches
#   bin/qwen-kernels, peers/ (PyTorch peer benchmarks), golden/ (golden data, when present)
#   run           the runner: ./run --help
# usage: scripts/bundle.sh [DIR]   (default: bundle/, which git ignores)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
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

rm -rf "$out"
mkdir -p "$out/bin"
{
    cargo test --release --no-run --message-format=json-render-diagnostics
    cargo bench --no-run --message-format=json-render-diagnostics
} | executables | while read -r name path; do
    case "$name" in
        bin-*) ;;  # the CLI is copied below under its own name
        *) cp "$path" "$out/bin/$name" ;;
    esac
done
cargo build --release --bin qwen-kernels
cp target/release/qwen-kernels "$out/bin/qwen-kernels"
# Debug info is for local profiling; the bundle travels.
strip "$out"/bin/* 2>/dev/null || true

cp -r benches/peers "$out/peers"
if [ -d golden/data ]; then cp -r golden/data "$out/golden"; fi
git rev-parse --short HEAD > "$out/COMMIT" 2>/dev/null || echo unknown > "$out/COMMIT"
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then echo "$(cat "$out/COMMIT")+dirty" > "$out/COMMIT"; fi
cp scripts/bundle-run.sh "$out/run"
chmod +x "$out/run"
du -sh "$out"
echo "bundle: $out (commit $(cat "$out/COMMIT")); on the GPU machine: $out/run --require-gpu"
