"""Where golden/gen.py writes a real checkpoint's goldens: the same rule by which qwen-kernels reads
them (src/golden/file.rs, resolve_checkpoint_golden_dir; tests/checkpoint.rs runs both on the same
cases). Needs no torch.

A checkpoint's goldens are its user's, not the project's: <dir>/<NAME>/model.safetensors with <dir>
  $QK_CHECKPOINT_GOLDEN_DIR, else $XDG_CACHE_HOME/qwen-kernels/goldens (an absolute XDG_CACHE_HOME
  only), else ~/.cache/qwen-kernels/goldens.
A checkpoint committed under golden/data (the tiny save_pretrained fixture) keeps its goldens beside
it in golden/data, the only case that rewrites golden/data/MANIFEST.json and counts against the
committed budget.
"""
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
