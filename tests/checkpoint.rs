//! Real checkpoints and their goldens, on the CPU: where `golden/gen.py --checkpoint` writes the
//! goldens and `qwen-kernels check --checkpoint` reads them, what a golden error tells the user to
//! run, which safetensors files a checkpoint's weights come from, and which config.json values
//! are refused.

use qwen_kernels::diff;
use qwen_kernels::golden::file::{data_dir, resolve_checkpoint_golden_dir};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("qwen-kernels-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The committed tiny save_pretrained checkpoint and its golden.
fn tiny_checkpoint() -> PathBuf {
    data_dir().join("tiny-qwen2/checkpoint")
}

fn tiny_golden() -> PathBuf {
    data_dir().join("tiny-qwen2/model.safetensors")
}

/// A copy of the tiny checkpoint outside the data directory (at `<tmp>/ckpt`), and a goldens
/// directory holding its golden under `tiny-qwen2` (at `<tmp>/goldens`).
fn copied_checkpoint(tmp: &TempDir) -> (PathBuf, PathBuf) {
    let ckpt = tmp.path().join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_checkpoint().join(f), ckpt.join(f)).unwrap();
    }
    let goldens = tmp.path().join("goldens");
    std::fs::create_dir_all(goldens.join("tiny-qwen2")).unwrap();
    std::fs::copy(tiny_golden(), goldens.join("tiny-qwen2/model.safetensors")).unwrap();
    (ckpt, goldens)
}

/// The environment cases both sides are asked about: (QK_CHECKPOINT_GOLDEN_DIR, XDG_CACHE_HOME, HOME).
const ENV_CASES: [[Option<&str>; 3]; 5] = [
    [Some("/srv/goldens"), Some("/xdg"), Some("/home/u")],
    [None, Some("/xdg"), Some("/home/u")],
    [None, Some("relative/cache"), Some("/home/u")],
    [None, None, Some("/home/u")],
    [Some(""), Some(""), Some("/home/u")],
];

fn env_of<'a>(case: &'a [Option<&'a str>; 3]) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |k| {
        let i = ["QK_CHECKPOINT_GOLDEN_DIR", "XDG_CACHE_HOME", "HOME"].iter().position(|&n| n == k)?;
        case[i].map(OsString::from)
    }
}

#[test]
fn checkpoint_goldens_default_to_the_user_directory() {
    let tmp = TempDir::new("locations");
    let (ckpt, _) = copied_checkpoint(&tmp);
    let committed = data_dir();
    let expected = [
        "/srv/goldens",
        "/xdg/qwen-kernels/goldens",
        "/home/u/.cache/qwen-kernels/goldens",
        "/home/u/.cache/qwen-kernels/goldens",
        "/home/u/.cache/qwen-kernels/goldens",
    ];
    for (case, want) in ENV_CASES.iter().zip(expected) {
        let got = resolve_checkpoint_golden_dir(&ckpt, &committed, env_of(case)).unwrap();
        assert_eq!(got, Path::new(want), "{case:?}");
        // A checkpoint that does not exist (yet) is not under the data directory either.
        let got = resolve_checkpoint_golden_dir(&tmp.path().join("absent"), &committed, env_of(case)).unwrap();
        assert_eq!(got, Path::new(want), "{case:?}");
        // The committed fixture keeps its goldens beside it, whatever the environment.
        assert_eq!(resolve_checkpoint_golden_dir(&tiny_checkpoint(), &committed, env_of(case)).unwrap(), committed);
    }
    let e = resolve_checkpoint_golden_dir(&ckpt, &committed, |_| None).unwrap_err();
    assert!(e.to_string().contains("HOME") && e.to_string().contains("QK_CHECKPOINT_GOLDEN_DIR"), "{e}");
}

/// golden/locations.py (what gen.py writes to) and the Rust rule (what check reads from) agree on
/// every case. Needs python3 (setup-cuda.sh and CI have it); without it the test says so and
/// checks nothing.
#[test]
fn gen_py_writes_checkpoint_goldens_where_qwen_kernels_reads_them() {
    let tmp = TempDir::new("gen-py");
    let (ckpt, _) = copied_checkpoint(&tmp);
    let committed = data_dir();
    let golden_py = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let checkpoints = [ckpt.clone(), tmp.path().join("absent"), tiny_checkpoint()];
    for case in &ENV_CASES {
        for checkpoint in &checkpoints {
            let mut cmd = std::process::Command::new("python3");
            cmd.arg("-c")
                .arg("import sys, locations; print(locations.checkpoint_out_dir(sys.argv[1], sys.argv[2]))")
                .arg(checkpoint)
                .arg(&committed)
                .current_dir(&golden_py)
                .env_remove("QK_CHECKPOINT_GOLDEN_DIR")
                .env_remove("XDG_CACHE_HOME")
                .env_remove("HOME");
            for (k, v) in ["QK_CHECKPOINT_GOLDEN_DIR", "XDG_CACHE_HOME", "HOME"].iter().zip(case) {
                if let Some(v) = v {
                    cmd.env(k, v);
                }
            }
            let out = match cmd.output() {
                Ok(out) => out,
                Err(e) => {
                    eprintln!("skipped: python3 cannot be run ({e})");
                    return;
                }
            };
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let python = String::from_utf8(out.stdout).unwrap();
            let rust = resolve_checkpoint_golden_dir(checkpoint, &committed, env_of(case)).unwrap();
            assert_eq!(python.trim_end(), rust.to_str().unwrap(), "{} {case:?}", checkpoint.display());
        }
    }
}

/// A checkpoint outside the data directory with its goldens in a directory of the user's: found
/// there, and the whole model passes.
#[test]
fn a_checkpoints_goldens_are_read_from_the_given_directory() {
    let tmp = TempDir::new("given");
    let (ckpt, goldens) = copied_checkpoint(&tmp);
    let report = diff::analyse_checkpoint(&ckpt, "tiny-qwen2", Some(&goldens)).unwrap();
    for r in diff::rows(&report) {
        assert!(r.comparison.passed(), "{} {}: {}", r.op, r.case, r.comparison);
    }
    // The committed fixture, by its default location (beside it in the data directory).
    assert!(diff::analyse_checkpoint(&tiny_checkpoint(), "tiny-qwen2", None).is_ok());
}

/// Every golden error about a checkpoint's goldens says the command that writes them:
/// `--checkpoint DIR --name NAME` (and `--out` when the goldens were looked for elsewhere).
#[test]
fn checkpoint_golden_errors_name_the_checkpoint_command() {
    let tmp = TempDir::new("hint");
    let (ckpt, goldens) = copied_checkpoint(&tmp);
    let want = |name: &str, out: Option<&Path>| {
        let mut c = format!("python3 golden/gen.py --checkpoint {} --name {name}", ckpt.display());
        if let Some(o) = out {
            c.push_str(&format!(" --out {}", o.display()));
        }
        c
    };
    // Missing, in a given directory.
    let e = diff::analyse_checkpoint(&ckpt, "mine", Some(&goldens)).unwrap_err().to_string();
    assert!(e.contains(&format!("(regenerate: {})", want("mine", Some(&goldens)))), "{e}");
    assert!(!e.contains("--model"), "{e}");
    // Missing, in the default (user) directory: a name nobody has.
    let name = format!("qk-test-missing-{}", std::process::id());
    let e = diff::analyse_checkpoint(&ckpt, &name, None).unwrap_err().to_string();
    assert!(e.contains(&format!("(regenerate: {})", want(&name, None))), "{e}");
    // Made from another config.json.
    let text = std::fs::read_to_string(ckpt.join("config.json")).unwrap();
    std::fs::write(ckpt.join("config.json"), text.replace("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 1e-6")).unwrap();
    let e = diff::analyse_checkpoint(&ckpt, "tiny-qwen2", Some(&goldens)).unwrap_err().to_string();
    assert!(e.contains("made from another config.json"), "{e}");
    assert!(e.contains(&format!("(regenerate: {})", want("tiny-qwen2", Some(&goldens)))), "{e}");
    std::fs::write(ckpt.join("config.json"), &text).unwrap();
    // Truncated.
    let golden = goldens.join("tiny-qwen2/model.safetensors");
    let bytes = std::fs::read(&golden).unwrap();
    std::fs::write(&golden, &bytes[..bytes.len() / 2]).unwrap();
    let e = diff::analyse_checkpoint(&ckpt, "tiny-qwen2", Some(&goldens)).unwrap_err().to_string();
    assert!(e.contains(&format!("(regenerate: {})", want("tiny-qwen2", Some(&goldens)))), "{e}");
}
