//! The GPU bundle's runner (scripts/bundle-run.sh, shipped as `run`) on a stand-in bundle whose
//! binaries are shell stubs: the glibc check, cuBLAS and compute-sanitizer discovery through
//! $PYTHON, $COMPUTE_SANITIZER and the bundle's tools/, and a missing compute-sanitizer skipping
//! only the sanitizer steps. Needs bash and python3 (what the bundle itself needs).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Bundle {
    root: PathBuf,
}

impl Bundle {
    /// bin/qwen-kernels and bin/test-gpu as stubs that print what the real ones print when all pass.
    fn new(tag: &str, glibc_required: &str) -> Self {
        let root = std::env::temp_dir().join(format!("qwen-kernels-bundle-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(runner(), root.join("run")).unwrap();
        std::fs::write(root.join("COMMIT"), "stub\n").unwrap();
        std::fs::write(root.join("GLIBC_REQUIRED"), format!("{glibc_required}\n")).unwrap();
        executable(&root.join("bin/qwen-kernels"), "echo '1 passed, 0 failed'");
        executable(&root.join("bin/test-gpu"), "echo 'gpu: 0 passed, 0 failed, 1 skipped'");
        Bundle { root }
    }

    /// `run ARGS` with a clean environment: PATH of the system directories only, logs inside
    /// the bundle, and `env` on top. Returns (exit code, stdout + stderr).
    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> (i32, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(self.root.join("run")).args(args).env_clear().env("PATH", "/usr/bin:/bin").env("QK_LOG_DIR", self.root.join("logs"));
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn executable(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stub compute-sanitizer that reports a clean run.
fn fake_sanitizer(path: &Path) {
    executable(path, "echo \"stub sanitizer $*\"; echo '========= ERROR SUMMARY: 0 errors'");
}

/// scripts/bundle-run.sh in the source tree, or, inside a bundle, the `run` above bin/.
fn runner() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bundle-run.sh");
    if source.is_file() {
        return source;
    }
    std::env::current_exe().unwrap().parent().unwrap().with_file_name("run")
}

/// python3 on this process' PATH.
fn python3() -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 on PATH (the bundle's runner needs it)")
}

#[test]
fn a_missing_compute_sanitizer_skips_only_its_steps() {
    let b = Bundle::new("no-sanitizer", "2.17");
    let (code, out) = b.run(&["--no-bench", "--sanitizer", "memcheck,racecheck"], &[("PYTHON", &python3())]);
    if let Some(line) = out.lines().find(|l| l.starts_with("run: compute-sanitizer /")) {
        eprintln!("skipped: this machine has a compute-sanitizer ({line}); the absent case cannot be shown here");
        return;
    }
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("run: compute-sanitizer not found"), "{out}");
    for tool in ["memcheck", "racecheck"] {
        assert!(out.contains(&format!("skipped compute-sanitizer {tool}  skipped: compute-sanitizer not found")), "{out}");
    }
    assert!(out.contains("ok      test-gpu") && out.contains("ok      check"), "{out}");
}

#[test]
fn compute_sanitizer_is_found_by_env_in_the_bundle_and_in_site_packages() {
    let b = Bundle::new("sanitizer", "2.17");
    // $COMPUTE_SANITIZER
    let named = b.root.join("elsewhere/compute-sanitizer");
    fake_sanitizer(&named);
    let (code, out) = b.run(&["--no-bench", "--sanitizer", "memcheck"], &[("PYTHON", &python3()), ("COMPUTE_SANITIZER", &named)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("run: compute-sanitizer {}", named.display())), "{out}");
    assert!(out.contains("stub sanitizer --tool memcheck --error-exitcode 99 bin/test-gpu rmsnorm"), "{out}");
    assert!(out.contains("ok      compute-sanitizer memcheck"), "{out}");
    // A wheel's layout in $PYTHON's site-packages (here via PYTHONPATH), with cuBLAS beside it.
    let site = b.root.join("site");
    fake_sanitizer(&site.join("nvidia/cu13/bin/compute-sanitizer"));
    std::fs::create_dir_all(site.join("nvidia/cu13/lib")).unwrap();
    std::fs::write(site.join("nvidia/cu13/lib/libcublas.so.13"), "").unwrap();
    let (code, out) = b.run(&["--no-bench", "--sanitizer", "racecheck"], &[("PYTHON", &python3()), ("PYTHONPATH", &site)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("run: cuBLAS from {}", site.join("nvidia/cu13/lib").display())), "{out}");
    if !out.contains("run: compute-sanitizer /usr/local/cuda") && !out.contains("run: compute-sanitizer /usr/bin") {
        assert!(out.contains(&format!("run: compute-sanitizer {}", site.join("nvidia/cu13/bin/compute-sanitizer").display())), "{out}");
    }
    // The bundle's own tools/ (scripts/bundle.sh --sanitizer) come before PATH and site-packages.
    let shipped = b.root.join("tools/nvidia/cu13/bin/compute-sanitizer");
    fake_sanitizer(&shipped);
    let (_, out) = b.run(&["--no-bench", "--sanitizer", "memcheck"], &[("PYTHON", &python3()), ("PYTHONPATH", &site)]);
    assert!(out.contains(&format!("run: compute-sanitizer {}", shipped.display())), "{out}");
}

#[test]
fn python_and_cublas_discovery_say_what_they_found() {
    let b = Bundle::new("python", "2.17");
    let missing = b.root.join("no/python");
    let (code, out) = b.run(&["--no-bench"], &[("PYTHON", &missing)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("run: Python '{}' ($PYTHON, default python3) not found", missing.display())), "{out}");
    assert!(out.contains("run: cuBLAS NOT found") || out.contains("run: cuBLAS from /usr"), "{out}");
    let (_, out) = b.run(&["--no-bench"], &[("PYTHON", &python3())]);
    assert!(out.contains(&format!("run: Python {} (Python 3.", python3().display())) && out.contains("site-packages searched: "), "{out}");
}

#[test]
fn an_old_glibc_stops_the_run_before_anything_runs() {
    let b = Bundle::new("glibc", "99.0");
    let (code, out) = b.run(&["--no-bench"], &[("PYTHON", &python3())]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("but the binaries need glibc >= 99.0") && out.contains("(getconf GNU_LIBC_VERSION)"), "{out}");
    assert!(!out.contains("=== info"), "{out}");
    // The version this machine reports passes its own check.
    let have = String::from_utf8(Command::new("getconf").arg("GNU_LIBC_VERSION").output().unwrap().stdout).unwrap();
    let have = have.split_whitespace().nth(1).unwrap().to_string();
    let b = Bundle::new("glibc-same", &have);
    let (code, out) = b.run(&["--no-bench"], &[("PYTHON", &python3())]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("run: glibc {have} here, the binaries need >= {have}: ok")), "{out}");
}
