"""Where golden/gen.py writes a real checkpoint's goldens: the same rule by which qwen-kernels reads
them (src/golden/file.rs, resolve_checkpoint_golden_dir; tests/checkpoint.rs runs both on the same
cases). Needs no torch.

A checkpoint's goldens are its user's, not the project's: <dir>/<NAME>/model.safetensors with <dir>
  $QK_CHECKPOINT_GOLDEN_DIR, else $XDG_CACHE_HOME/qwen-kernels/goldens (an absolute XDG_CACHE_HOME
  only), else ~/.cache/qwen-kernels/goldens.
A checkpoint committed under golden/data (the tiny save_pretrained fixture) keeps its goldens beside
it in golden/data, the only case that rewrites golden/data/MANIFEST.json and counts against the
committed budget.

Also here, so scripts without torch can call it (golden/gen_chat.py): write_manifest, which lists
golden/data in its MANIFEST.json.
"""
import hashlib
import json
import os

COMMITTED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def is_inside(path, directory):
    """Whether `path` is `directory` or lies under it (both must exist; symlinks resolved)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def checkpoint_out_dir(checkpoint, committed=COMMITTED, env=None):
    """The directory that holds <NAME>/model.safetensors for `checkpoint`."""
    env = os.environ if env is None else env
    if os.path.exists(checkpoint) and os.path.exists(committed) and is_inside(checkpoint, committed):
        return committed
    if env.get("QK_CHECKPOINT_GOLDEN_DIR"):
        return env["QK_CHECKPOINT_GOLDEN_DIR"]
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        cache = xdg
    elif env.get("HOME"):
        cache = os.path.join(env["HOME"], ".cache")
    else:
        raise SystemExit(f"no directory for the goldens of {checkpoint}: HOME, XDG_CACHE_HOME and "
                         "QK_CHECKPOINT_GOLDEN_DIR are all unset (or pass --out DIR)")
    return os.path.join(cache, "qwen-kernels", "goldens")


def is_committed(out_dir, committed=COMMITTED):
    """Whether `out_dir` is the committed golden/data (whose MANIFEST.json and budget apply)."""
    return os.path.exists(out_dir) and os.path.realpath(out_dir) == os.path.realpath(committed)


BUDGET_BYTES = 25 * 1000 * 1000


def write_manifest(out_dir):
    """golden/data/MANIFEST.json: every golden file with its size, SHA-256 and the command that
    makes it; the total must stay within BUDGET_BYTES (tests/golden.rs checks the sizes)."""
    files = {}
    for root, _, names in os.walk(out_dir):
        for n in sorted(names):
            path = os.path.join(root, n)
            rel = os.path.relpath(path, out_dir)
            if rel == "MANIFEST.json":
                continue
            with open(path, "rb") as f:
                data = f.read()
            entry = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            if n.endswith(".safetensors") and "checkpoint" not in rel.split(os.sep):
                header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
                entry["command"] = header.get("__metadata__", {}).get("command", "")
            files[rel] = entry
    total = sum(e["bytes"] for e in files.values())
    assert total <= BUDGET_BYTES, f"goldens take {total} bytes, over the {BUDGET_BYTES} budget"
    with open(os.path.join(out_dir, "MANIFEST.json"), "w") as f:
        json.dump({"budget_bytes": BUDGET_BYTES, "total_bytes": total, "files": dict(sorted(files.items()))}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{out_dir}/MANIFEST.json: {len(files)} files, {total} bytes")
