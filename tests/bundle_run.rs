//! The GPU bundle's runner (scripts/bundle-run.sh, shipped as `run`) on a stand-in bundle whose
//! binaries are shell stubs: the glibc check, cuBLAS and compute-sanitizer discovery through
//! $PYTHON, $COMPUTE_SANITIZER and the bundle's tools/, a missing compute-sanitizer skipping
//! only the sanitizer steps, and `run --lease SECONDS` (the plan, time boxes that cut a step and
//! let the later ones run, results.json, a missing `profile` command, no GPU, compressed binaries).
//!
//! bash, python3 and coreutils' `timeout` are what the bundle itself needs, and every check here
//! needs them: a missing one fails the test that needs it (a panic naming it), never lets it pass
//! unchecked. No test here returns early.

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
    // Named outright and not there: reported, the sanitizer steps skipped, nothing else looked for.
    let missing = b.root.join("no/compute-sanitizer");
    let (code, out) = b.run(&["--no-bench", "--sanitizer", "memcheck,racecheck"], &[("PYTHON", &python3()), ("COMPUTE_SANITIZER", &missing)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("run: compute-sanitizer not found ($COMPUTE_SANITIZER={} is not an executable)", missing.display())), "{out}");
    for tool in ["memcheck", "racecheck"] {
        assert!(out.contains(&format!("skipped compute-sanitizer {tool}  skipped: compute-sanitizer not found")), "{out}");
    }
    assert!(out.contains("ok      test-gpu") && out.contains("ok      check"), "{out}");
    // Searched for: either none is found (the same skips) or this machine's own is found outside
    // the bundle and its steps run.
    let (code, out) = b.run(&["--no-bench", "--sanitizer", "memcheck"], &[("PYTHON", &python3())]);
    match out.lines().find(|l| l.starts_with("run: compute-sanitizer /")) {
        Some(line) => {
            assert!(!line.contains(&b.root.display().to_string()), "{out}");
            assert!(out.contains("compute-sanitizer memcheck (rmsnorm"), "{out}");
        }
        None => {
            assert_eq!(code, 0, "{out}");
            assert!(out.contains("run: compute-sanitizer not found (") && out.contains("/tools, PATH, /usr/local/cuda*/bin"), "{out}");
            assert!(out.contains("skipped compute-sanitizer memcheck  skipped: compute-sanitizer not found"), "{out}");
        }
    }
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
    // The wheel's cuBLAS is found, unless a real one (a CUDA 13 wheel in this Python's own
    // site-packages, e.g. beside torch) comes first in the search.
    let found = out.lines().find_map(|l| l.strip_prefix("run: cuBLAS from ")).unwrap_or_else(|| panic!("no cuBLAS found: {out}"));
    let fake = site.join("nvidia/cu13/lib");
    assert!(
        std::path::Path::new(found) == fake || (found.ends_with("/nvidia/cu13/lib") && std::path::Path::new(found).join("libcublas.so.13").metadata().is_ok_and(|m| m.len() > 0)),
        "{out}"
    );
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

// ---- run --lease SECONDS -------------------------------------------------------------------------

/// The steps of a lease, in order (the probe comes first in results.json).
const LEASE_STEPS: [&str; 14] = [
    "gpu-tests",
    "check",
    "profile-0.5b-b1",
    "profile-1.5b-b1",
    "profile-1.5b-b32",
    "bench-model",
    "peer-model",
    "bench-ops",
    "peer-ops",
    "bench-attention",
    "peer-attention",
    "bench-rmsnorm",
    "peer-rmsnorm",
    "sanitizer",
];

/// What the stub binaries of a lease bundle do.
struct LeaseStubs<'a> {
    /// The `device: ` line `qwen-kernels info` prints.
    device: &'a str,
    /// Whether `qwen-kernels profile` exists.
    profile: bool,
    /// bin/test-gpu's body, after it prints QK_REQUIRE_GPU and QK_DEVICE.
    test_gpu: &'a str,
}

impl Bundle {
    fn lease(tag: &str, stubs: LeaseStubs) -> Self {
        let b = Bundle::new(tag, "2.17");
        let profile = if stubs.profile { "profile) [ \"$2\" = --help ] && exit 0; echo \"$*\" ;;" } else { "profile) echo \"error: unrecognized subcommand 'profile'\" >&2; exit 2 ;;" };
        executable(
            &b.root.join("bin/qwen-kernels"),
            &format!("case \"$1\" in\n  info) echo 'kernels: built for sm_90'; echo '{}' ;;\n  check) echo '1 passed, 0 failed' ;;\n  {profile}\nesac", stubs.device),
        );
        executable(&b.root.join("bin/test-gpu"), &format!("echo \"QK_REQUIRE_GPU=${{QK_REQUIRE_GPU:-unset}} QK_DEVICE=${{QK_DEVICE:-unset}} args=$*\"\n{}", stubs.test_gpu));
        for bench in ["model", "ops", "attention", "rmsnorm"] {
            executable(&b.root.join(format!("bin/bench-{bench}")), &format!("echo \"{bench} summary: $*\""));
        }
        b
    }

    /// results.json of a lease run with `--results <root>/results`.
    fn results(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.root.join("results/results.json")).expect("results.json");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("results.json is not JSON ({e}):\n{text}"))
    }

    fn results_arg(&self) -> String {
        self.root.join("results").display().to_string()
    }
}

/// The record of step `name` in results.json.
fn step<'a>(results: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    results["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no step {name} in {results:#}"))
}

#[test]
fn a_lease_prints_its_plan_and_a_step_past_its_box_is_cut_while_the_later_ones_run() {
    let b = Bundle::lease(
        "lease-cut",
        LeaseStubs {
            device: "device: software device: the kernels compiled for the host, run on the CPU (stub), 1.0 GiB",
            profile: false,
            test_gpu: "echo 'test rmsnorm::a ... ok'\nsleep 120\necho 'software-gpu: 2 passed, 0 failed, 0 skipped'",
        },
    );
    let results = b.results_arg();
    let started = std::time::Instant::now();
    let (code, out) = b.run(&["--lease", "30", "--device", "emulated", "--min-box", "1", "--results", &results], &[("PYTHON", &python3())]);
    let took = started.elapsed().as_secs_f64();
    assert!(took < 30.0, "the lease of 30 s took {took:.1} s:\n{out}");
    assert_eq!(code, 4, "a cut step and no failure exit 4:\n{out}");
    assert!(out.contains("EMULATED: the software device") && out.contains("QK_REQUIRE_GPU is not set"), "{out}");
    assert!(out.contains("=== plan: "), "{out}");
    // Steps that cannot run here are known before the plan and get no share of the time.
    let known_skips = ["profile-0.5b-b1", "profile-1.5b-b1", "profile-1.5b-b32", "peer-model", "peer-ops", "peer-attention", "peer-rmsnorm", "sanitizer"];
    for (i, id) in LEASE_STEPS.iter().enumerate() {
        let planned = format!("{:>4}. {id:<18} {}", i + 1, if known_skips.contains(id) { "skipped: " } else { "box " });
        assert!(out.contains(&planned), "no plan line {planned:?}:\n{out}");
        let started = format!("=== [{}/14] {id}: ", i + 1);
        let line = out.lines().find(|l| l.starts_with(&started)).unwrap_or_else(|| panic!("no line {started:?}:\n{out}"));
        assert!(line.contains(if known_skips.contains(id) { " s left, no box: " } else { " s left, box " }), "{line}");
    }
    assert!(out.contains("QK_REQUIRE_GPU=unset QK_DEVICE=emulated args="), "{out}");

    let r = b.results();
    let names: Vec<&str> = r["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    let mut expected = vec!["probe"];
    expected.extend(LEASE_STEPS);
    assert_eq!(names, expected, "{r:#}");
    assert_eq!((r["mode"].as_str(), r["device"].as_str(), r["finished"].as_bool(), r["exit_status"].as_i64()), (Some("lease"), Some("emulated"), Some(true), Some(4)), "{r:#}");
    assert_eq!(step(&r, "probe")["status"], "passed", "{r:#}");
    let cut = step(&r, "gpu-tests");
    assert_eq!(cut["status"], "timed-out", "{r:#}");
    assert!(cut["reason"].as_str().unwrap().starts_with("cut by its time box ("), "{r:#}");
    assert_eq!(cut["closing_line"], "test rmsnorm::a ... ok", "{r:#}");
    assert!(cut["seconds"].as_f64().unwrap() < cut["box_seconds"].as_f64().unwrap() + 1.0, "{r:#}");
    let log = std::fs::read_to_string(b.root.join("results/01-gpu-tests.log")).unwrap();
    assert!(log.contains("### TIMED OUT: cut by its time box"), "{log}");
    // The steps after the cut one still ran.
    let check = step(&r, "check");
    assert_eq!((check["status"].as_str(), check["closing_line"].as_str()), (Some("passed"), Some("1 passed, 0 failed")), "{r:#}");
    assert_eq!(step(&r, "bench-rmsnorm")["status"], "passed", "{r:#}");
    assert_eq!(step(&r, "bench-model")["closing_line"], "model summary: --bench --warm-up-time 0.5 --measurement-time 1", "{r:#}");
    for id in ["profile-0.5b-b1", "profile-1.5b-b1", "profile-1.5b-b32"] {
        let s = step(&r, id);
        assert_eq!(s["status"], "skipped", "{r:#}");
        assert_eq!(s["reason"], "not in this build (qwen-kernels profile --help failed)", "{r:#}");
    }
    for id in ["peer-model", "peer-ops", "peer-attention", "peer-rmsnorm", "sanitizer"] {
        let s = step(&r, id);
        assert!(s["status"] == "skipped" && s["reason"].as_str().is_some_and(|r| !r.is_empty()), "{r:#}");
    }
    assert!(out.contains("skipped    profile-0.5b-b1") && out.contains("timed-out  gpu-tests"), "{out}");
}

#[test]
fn a_lease_on_hardware_requires_the_gpu_and_reports_each_failure() {
    let b = Bundle::lease(
        "lease-hw",
        LeaseStubs { device: "device: NVIDIA H200 (sm_90), driver 13000, device 0, 139.8 GiB", profile: true, test_gpu: "echo 'gpu: 3 passed, 0 failed, 0 skipped'" },
    );
    executable(&b.root.join("bin/bench-ops"), "echo 'ops bench: a panic'; exit 1");
    executable(&b.root.join("stubs/nvidia-smi"), "echo 'NVIDIA H200, 580.95.05, 143771 MiB'");
    let sanitizer = b.root.join("stubs/compute-sanitizer");
    fake_sanitizer(&sanitizer);
    let path = PathBuf::from(format!("{}:/usr/bin:/bin", b.root.join("stubs").display()));
    let results = b.results_arg();
    let (code, out) = b.run(&["--lease", "60", "--min-box", "1", "--results", &results], &[("PYTHON", &python3()), ("PATH", &path), ("COMPUTE_SANITIZER", &sanitizer)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nvidia-smi: NVIDIA H200, 580.95.05, 143771 MiB") && out.contains("driver: 580 >= 580"), "{out}");
    assert!(out.contains("QK_REQUIRE_GPU=1 QK_DEVICE=unset args="), "{out}");
    let r = b.results();
    assert_eq!(r["gpu"], "NVIDIA H200 (sm_90), driver 13000, device 0, 139.8 GiB", "{r:#}");
    assert_eq!(step(&r, "gpu-tests")["closing_line"], "gpu: 3 passed, 0 failed, 0 skipped", "{r:#}");
    let ops = step(&r, "bench-ops");
    assert_eq!((ops["status"].as_str(), ops["reason"].as_str()), (Some("failed"), Some("exit status 1")), "{r:#}");
    let profile = step(&r, "profile-1.5b-b32");
    assert_eq!(profile["status"], "passed", "{r:#}");
    let line = profile["closing_line"].as_str().unwrap_or_default();
    assert!(line.starts_with("profile --model vibethinker-1.5b --batch 32 --context 512 --svg ") && line.ends_with("/profile-1.5b-b32.svg"), "{r:#}");
    let cs = step(&r, "sanitizer");
    assert_eq!(cs["status"], "passed", "{r:#}");
    let want = format!("--tool memcheck --error-exitcode 99 {} rmsnorm::random_inputs", b.root.join("bin/test-gpu").display());
    assert!(cs["command"].as_str().unwrap().ends_with(&want), "{want:?} in {r:#}");
    // The stub bundle ships no peers: each is skipped with its reason, whatever torch is here.
    for id in ["peer-model", "peer-ops", "peer-attention", "peer-rmsnorm"] {
        assert_eq!(step(&r, id)["status"], "skipped", "{r:#}");
    }
    assert_eq!(r["exit_status"], 1, "{r:#}");
}

#[test]
fn a_lease_without_a_usable_gpu_fails_at_the_probe_and_runs_nothing() {
    for (tag, smi, device, why) in [
        ("lease-nogpu", None, "device: none (the NVIDIA driver library (libcuda.so) was not found)", "no GPU: none (the NVIDIA driver library"),
        ("lease-olddriver", Some("NVIDIA H200, 575.57.08, 143771 MiB"), "device: NVIDIA H200 (sm_90), driver 12090, device 0, 139.8 GiB", "driver 575 < 580"),
    ] {
        let b = Bundle::lease(tag, LeaseStubs { device, profile: true, test_gpu: "echo 'gpu: 1 passed, 0 failed, 0 skipped'" });
        let mut env: Vec<(&str, PathBuf)> = vec![("PYTHON", python3())];
        if let Some(smi) = smi {
            executable(&b.root.join("stubs/nvidia-smi"), &format!("echo '{smi}'"));
            env.push(("PATH", PathBuf::from(format!("{}:/usr/bin:/bin", b.root.join("stubs").display()))));
        }
        let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
        let results = b.results_arg();
        let (code, out) = b.run(&["--lease", "30", "--min-box", "1", "--results", &results], &env);
        assert_eq!(code, 1, "{out}");
        let r = b.results();
        let probe = step(&r, "probe");
        assert_eq!(probe["status"], "failed", "{r:#}");
        assert!(probe["reason"].as_str().unwrap().contains(why), "{why:?} in {r:#}");
        for id in LEASE_STEPS {
            let s = step(&r, id);
            assert_eq!(s["status"], "skipped", "{r:#}");
            assert!(s["reason"].as_str().unwrap().starts_with("the probe found no usable device: "), "{r:#}");
        }
        assert!(!out.contains("QK_REQUIRE_GPU=1 QK_DEVICE=unset"), "a step ran:\n{out}");
    }
}

#[test]
fn a_lease_skips_a_step_whose_box_is_below_its_minimum_and_unpacks_compressed_binaries() {
    let b = Bundle::lease(
        "lease-small",
        LeaseStubs { device: "device: software device: the kernels compiled for the host, run on the CPU (stub), 1.0 GiB", profile: true, test_gpu: "echo 'software-gpu: 1 passed, 0 failed, 0 skipped'" },
    );
    // bin/qwen-kernels as a lease bundle ships it: xz-compressed.
    let cli = b.root.join("bin/qwen-kernels");
    let status = Command::new(python3())
        .args(["-c", "import lzma, sys; open(sys.argv[1] + '.xz', 'wb').write(lzma.compress(open(sys.argv[1], 'rb').read()))"])
        .arg(&cli)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(&cli).unwrap();
    let results = b.results_arg();
    let (code, out) = b.run(&["--lease", "30", "--device", "emulated", "--results", &results], &[("PYTHON", &python3())]);
    assert_eq!(code, 0, "skips alone are no failure:\n{out}");
    assert!(out.contains("unpack: qwen-kernels.xz with "), "{out}");
    assert!(cli.is_file(), "{out}");
    let r = b.results();
    assert_eq!(step(&r, "probe")["status"], "passed", "{r:#}");
    let gpu = step(&r, "gpu-tests");
    assert_eq!(gpu["status"], "skipped", "{r:#}");
    let want = format!("its box ({} s) is shorter than its minimum (60 s)", gpu["box_seconds"]);
    assert_eq!(gpu["reason"], want.as_str(), "{r:#}");
    assert!(!out.contains("QK_REQUIRE_GPU="), "a step ran:\n{out}");
}
