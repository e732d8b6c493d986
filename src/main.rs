//! The `qwen-kernels` command line (`qwen-kernels --help`, `qwen-kernels <command> --help`).
//!
//! ```text
//! qwen-kernels check [--backend cpu|cuda] [--device N] [--model M]   every check, one row each; exit 1 on any FAIL
//! qwen-kernels check --checkpoint DIR [--name NAME] [--goldens DIR]  a real checkpoint's whole-model golden
//! qwen-kernels diff  [--model M]                                     the whole model layer by layer (CPU reference)
//! qwen-kernels diff  --checkpoint DIR [--name NAME] [--goldens DIR]
//! qwen-kernels info  [--device N]                                    build targets, kernel resources, the device
//! ```
//! Exit status: 0 when everything passed, 1 on a FAIL or an error, 2 on a usage error.

use clap::{Args, Parser, Subcommand, ValueEnum};
use qwen_kernels::check::{self, Backend};
use qwen_kernels::diff::{self, Forward};
use qwen_kernels::model::{DecodePath, DeviceModel, ModelOptions, Qwen2Config};
use qwen_kernels::ops::sampling::SamplingParams;
use qwen_kernels::text::{Conversation, Tokenizer};
use qwen_kernels::{kernels, DType, DeviceKind, Error, Gpu};
use std::path::PathBuf;
use std::process::ExitCode;

/// Hand-written CUDA kernels for Qwen2 decoders, checked against PyTorch goldens.
#[derive(Parser)]
#[command(name = "qwen-kernels", version, about, propagate_version = true, subcommand_required = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every op against the PyTorch goldens of both models, one row each (exit 1 on any FAIL).
    ///
    /// Runs the CUDA kernels when a GPU is usable (plus each kernel against the CPU reference on
    /// hazard inputs), otherwise the CPU references (plus their hand-computed cases, the decoder
    /// layers stage by stage and the whole model). With --checkpoint, the whole-model golden of a
    /// real checkpoint on the CPU reference.
    Check {
        /// Where the ops run: cpu (the references), or cuda (the kernels: on a GPU when one is
        /// usable, else on the software device; QK_DEVICE=hardware|emulated chooses). Default cuda
        /// when either is there, else cpu.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// With --backend cuda: the decode step's kernels, fused (the default) or cublas.
        #[arg(long, default_value = "fused", value_name = "PATH", value_parser = parse_decode_path)]
        decode_path: DecodePath,
        /// The CUDA device ordinal.
        #[arg(long, default_value_t = 0, value_name = "N")]
        device: usize,
        #[command(flatten)]
        models: Models,
    },
    /// Report the whole model layer by layer on the CPU reference (exit 1 on any FAIL).
    ///
    /// Per layer: the teacher-forced tolerance used after attention and after the MLP, the first
    /// layer and position over it, the free-running error and its growth, PyTorch bf16's own error
    /// beside ours; then where the greedy streams part.
    Diff {
        /// Which forward: cpu (the CPU reference, f32) or cuda (the kernels, on a GPU when one is
        /// usable, else on the software device).
        #[arg(long, value_enum, default_value = "cpu")]
        backend: BackendArg,
        /// With --backend cuda: the storage dtype of the device forward.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeArg,
        /// With --backend cuda: the decode step's kernels, fused (the default) or cublas.
        #[arg(long, default_value = "fused", value_name = "PATH", value_parser = parse_decode_path)]
        decode_path: DecodePath,
        /// The CUDA device ordinal.
        #[arg(long, default_value_t = 0, value_name = "N")]
        device: usize,
        /// Also draw each model's per-layer error growth (ours and PyTorch's against the float64
        /// truth) as an SVG: FILE for one model, FILE with the model's name before `.svg` for each
        /// of several.
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
        #[command(flatten)]
        models: Models,
    },
    /// Generate text from a checkpoint with the kernels (greedy, or sampled), streaming it as it is decoded.
    ///
    /// Tokenizes the prompt with the checkpoint's tokenizer.json (applying its chat template with
    /// --chat, --system or --messages, as transformers' apply_chat_template with
    /// add_generation_prompt), prefills it, decodes until an EOS id of generation_config.json /
    /// config.json or --max-tokens, and ends with the prefill and decode tokens/s on stderr. Runs
    /// on a GPU when one is usable, else on the software device (slow: for trying tiny checkpoints).
    Generate {
        /// A Hugging Face checkpoint directory: config.json, bf16 safetensors, tokenizer.json.
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// The text to continue (with --chat or --system: the user's message).
        #[arg(long, required_unless_present = "messages", conflicts_with = "messages")]
        prompt: Option<String>,
        /// A conversation to continue, rendered by the checkpoint's chat template: a JSON list of
        /// messages as transformers takes them ([{"role": "user", "content": "..."}, ...], with
        /// assistant tool_calls and tool replies), or {"messages": [...], "tools": [...]} with
        /// tools as JSON schemas.
        #[arg(long, value_name = "FILE")]
        messages: Option<PathBuf>,
        /// The system message, in place of the chat template's default (implies --chat; with
        /// --messages it replaces the file's first message when that is a system message, else
        /// goes first).
        #[arg(long, value_name = "TEXT")]
        system: Option<String>,
        /// Most new tokens (fewer when the model's positions run out first).
        #[arg(long, default_value_t = 128, value_name = "N")]
        max_tokens: usize,
        /// Wrap the prompt in the checkpoint's chat template as a user message.
        #[arg(long)]
        chat: bool,
        /// Storage dtype of weights and activations.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: DTypeArg,
        /// The CUDA device ordinal.
        #[arg(long, default_value_t = 0, value_name = "N")]
        device: usize,
        /// Also print the prompt's and the generated token ids (stderr).
        #[arg(long)]
        show_ids: bool,
        /// Sample instead of taking the greedy token: divide the logits by T (0: greedy). Any
        /// of --temperature, --top-k, --top-p, --min-p turns sampling on (temperature 1 unless
        /// given); generation_config.json's sampling values are not read.
        #[arg(long, value_name = "T")]
        temperature: Option<f32>,
        /// Keep the K most likely tokens (ties at the K-th included; 0: off).
        #[arg(long, value_name = "K")]
        top_k: Option<u32>,
        /// Keep the most likely tokens whose probabilities add up to P (1: off).
        #[arg(long, value_name = "P")]
        top_p: Option<f32>,
        /// Drop tokens less likely than P times the most likely one (0: off).
        #[arg(long, value_name = "P")]
        min_p: Option<f32>,
        /// The sampling seed: the same prompt, flags and seed print the same text.
        #[arg(long, default_value_t = 0, value_name = "S")]
        seed: u64,
        /// N continuations of the prompt, sharing its KV pages (continuation i uses seed S + i),
        /// each printed when all are done.
        #[arg(long, default_value_t = 1, value_name = "N")]
        samples: usize,
        /// The decode step's kernels: fused (the GEMV kernels with their prologues and epilogues)
        /// or cublas (the unfused launches).
        #[arg(long, default_value = "fused", value_name = "PATH", value_parser = parse_decode_path)]
        decode_path: DecodePath,
    },
    /// Profile one decode step of a preset model, node by node (bf16, zero weights).
    ///
    /// On the software device: each node's traffic counted (bytes as requested, bytes a DRAM
    /// moves, the ideal of each byte once, their ratio, sectors per warp request, bank
    /// conflicts) and a modelled H200 time; these are counts and a model, not times. On a GPU:
    /// each node's measured time, and the whole step's from its graph. The last line is the
    /// summary: `step: N nodes (G in the graph), R bytes read, W bytes written, ideal I bytes, ratio
    /// X, modelled T us (H200)`.
    Profile {
        /// The preset model.
        #[arg(long, value_name = "M", value_parser = clap::builder::PossibleValuesParser::new(preset_names()))]
        model: String,
        /// Sequences decoded together.
        #[arg(long, default_value_t = 1, value_name = "B")]
        batch: usize,
        /// Positions already in each sequence's cache.
        #[arg(long, default_value_t = 512, value_name = "C")]
        context: usize,
        /// Only the nodes whose kernel name contains NAME (e.g. add_rmsnorm, attn_split, cublasGemmEx).
        #[arg(long, value_name = "NAME")]
        op: Option<String>,
        /// The decode step's kernels: fused (the GEMV kernels with their prologues and epilogues)
        /// or cublas (the unfused launches).
        #[arg(long, default_value = "fused", value_name = "PATH", value_parser = parse_decode_path)]
        decode_path: DecodePath,
        /// The CUDA device ordinal.
        #[arg(long, default_value_t = 0, value_name = "N")]
        device: usize,
        /// Also draw the step as a roofline SVG: each node's bytes moved against its time (the
        /// model's on the software device), with the copy bandwidth's line and the per-node floor.
        #[arg(long, value_name = "FILE")]
        svg: Option<std::path::PathBuf>,
    },
    /// Print the build targets, each kernel's registers and spills, and the device.
    Info {
        /// The CUDA device ordinal.
        #[arg(long, default_value_t = 0, value_name = "N")]
        device: usize,
    },
}

/// Which models: the presets (all, or one), or a real checkpoint.
#[derive(Args)]
struct Models {
    /// Keep one preset model (default: every preset).
    #[arg(long, value_name = "M", value_parser = clap::builder::PossibleValuesParser::new(preset_names()))]
    model: Option<String>,
    /// A Hugging Face checkpoint directory (config.json, bf16 safetensors) whose goldens
    /// `python3 golden/gen.py --checkpoint DIR --name NAME` wrote.
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
    /// With --checkpoint: the name its goldens are filed under (default: the directory's name).
    #[arg(long, value_name = "NAME", requires = "checkpoint")]
    name: Option<String>,
    /// With --checkpoint: the directory holding NAME/model.safetensors (gen.py's --out). Default:
    /// beside a checkpoint committed under the golden data, else $QK_CHECKPOINT_GOLDEN_DIR, else
    /// $XDG_CACHE_HOME/qwen-kernels/goldens, else ~/.cache/qwen-kernels/goldens.
    #[arg(long, value_name = "DIR", requires = "checkpoint")]
    goldens: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum DTypeArg {
    F32,
    F16,
    Bf16,
}

impl DTypeArg {
    fn dtype(self) -> DType {
        match self {
            DTypeArg::F32 => DType::F32,
            DTypeArg::F16 => DType::F16,
            DTypeArg::Bf16 => DType::BF16,
        }
    }
}

/// The whole-model forwards `check` runs on a device: f32 (held to the error model, greedy tokens
/// exact) and bf16 (what engines run: held to PyTorch bf16's own error).
const DEVICE_MODEL_DTYPES: [DType; 2] = [DType::F32, DType::BF16];

fn preset_names() -> Vec<&'static str> {
    Qwen2Config::presets().iter().map(|c| c.name).collect()
}

impl Models {
    /// The presets selected (all without --model).
    fn presets(&self) -> Result<Vec<Qwen2Config>, Error> {
        match &self.model {
            None => Ok(Qwen2Config::presets()),
            Some(name) => Qwen2Config::preset(name)
                .map(|c| vec![c])
                .ok_or_else(|| Error::InvalidArgument { op: "--model", detail: format!("{name} is not one of {:?}", preset_names()) }),
        }
    }

    /// --checkpoint's report on `forward`: the directory and the name its goldens are filed under.
    fn checkpoint_report(&self, forward: Forward) -> Option<Result<diff::ModelReport, Error>> {
        let dir = self.checkpoint.as_ref()?;
        let name = self.name.clone().unwrap_or_else(|| {
            dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_default()
        });
        println!("checkpoint {} (goldens: {name})", dir.display());
        Some(diff::analyse_checkpoint_on(dir, &name, self.goldens.as_deref(), forward))
    }
}

/// The device of `--backend cuda` (hardware when usable, else the software device: Gpu::any;
/// QK_DEVICE and QK_REQUIRE_GPU=1 choose explicitly), and the backend column it reports.
fn open_device(device: usize) -> Result<(Gpu, Backend), Error> {
    let gpu = Gpu::any(device)?;
    let backend = if gpu.info().kind == DeviceKind::Software { Backend::SoftGpu } else { Backend::Cuda };
    Ok((gpu, backend))
}

fn run_check(backend: Option<BackendArg>, path: DecodePath, device: usize, models: &Models) -> Result<ExitCode, Error> {
    if models.checkpoint.is_some() {
        let (gpu, backend) = match backend {
            Some(BackendArg::Cuda) => {
                let (gpu, backend) = open_device(device)?;
                (Some(gpu), backend)
            }
            _ => (None, Backend::Cpu),
        };
        let forwards: Vec<Forward> = match &gpu {
            Some(gpu) => DEVICE_MODEL_DTYPES.iter().map(|&dtype| Forward::Device { gpu, dtype, path }).collect(),
            None => vec![Forward::Cpu],
        };
        let (mut rows, mut notes) = (Vec::new(), Vec::new());
        for forward in forwards {
            let report = models.checkpoint_report(forward).expect("a checkpoint")?;
            // A checkpoint's bf16 forward is reported beside PyTorch bf16's, not judged: the
            // paired excess test needs the many independent roundings of a real-size model, and
            // a small checkpoint's few thousand correlated elements move the ratio by chance (see
            // diff::rows). The preset goldens are judged in bf16.
            if report.dtype == DType::F32 {
                rows.extend(diff::rows(&report));
            } else {
                notes.push(diff::free_note(&report));
            }
            notes.push(diff::greedy_note(&report));
        }
        let failed = check::print_table(backend, &rows);
        for note in notes.iter().filter(|_| gpu.is_some()) {
            println!("{note}");
        }
        println!("{} passed, {} failed", rows.len() - failed, failed);
        return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let presets = models.presets()?;
    // cuda: hardware when a GPU is usable, else the software device (Gpu::any; QK_DEVICE and
    // QK_REQUIRE_GPU=1 choose explicitly).
    let gpu = match backend {
        Some(BackendArg::Cpu) => None,
        Some(BackendArg::Cuda) => Some(Gpu::any(device)?),
        None => match Gpu::any(device) {
            Ok(gpu) => Some(gpu),
            Err(e) => {
                println!("backend: cpu (no CUDA device, hardware or software: {e})");
                None
            }
        },
    };
    let backend = match &gpu {
        None => Backend::Cpu,
        Some(g) if g.info().kind == DeviceKind::Software => Backend::SoftGpu,
        Some(_) => Backend::Cuda,
    };
    let mut notes = Vec::new();
    let mut rows = match &gpu {
        Some(gpu) => {
            println!("backend: {} on {}", backend.name(), gpu.describe());
            let mut rows = check::golden_rows(Some(gpu))?;
            rows.extend(check::cuda_rows(gpu)?);
            // The whole model from the kernels, in f32 and bf16.
            for cfg in &presets {
                for dtype in DEVICE_MODEL_DTYPES {
                    let report = diff::analyse_on(cfg, Forward::Device { gpu, dtype, path })?;
                    rows.extend(diff::rows(&report));
                    notes.push(diff::greedy_note(&report));
                }
            }
            rows
        }
        None => {
            let mut rows = check::golden_rows(None)?;
            rows.extend(check::layer_rows()?);
            rows.extend(check::cpu_rows()?);
            for cfg in &presets {
                rows.extend(diff::rows(&diff::analyse(cfg)?));
            }
            rows
        }
    };
    if models.model.is_some() {
        rows.retain(|r| presets.iter().any(|m| r.case == m.name));
    }
    let failed = check::print_table(backend, &rows);
    for note in &notes {
        println!("{note}");
    }
    println!("{} passed, {} failed", rows.len() - failed, failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `--svg FILE` for the report of `model`, one of `count`: FILE itself for one report, else FILE
/// with `-<model>` before its extension.
fn svg_path(file: &std::path::Path, model: &str, count: usize) -> std::path::PathBuf {
    if count <= 1 {
        return file.to_path_buf();
    }
    let stem = file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let ext = file.extension().map_or_else(|| "svg".to_string(), |e| e.to_string_lossy().into_owned());
    file.with_file_name(format!("{stem}-{model}.{ext}"))
}

fn run_diff(backend: BackendArg, dtype: DTypeArg, path: DecodePath, device: usize, svg: Option<&std::path::Path>, models: &Models) -> Result<ExitCode, Error> {
    let gpu = match backend {
        BackendArg::Cpu if !matches!(dtype, DTypeArg::F32) => {
            return Err(Error::InvalidArgument { op: "--dtype", detail: "the CPU reference runs in f32 only; use --backend cuda".into() });
        }
        BackendArg::Cpu => None,
        BackendArg::Cuda => Some(open_device(device)?.0),
    };
    let forward = match &gpu {
        Some(gpu) => Forward::Device { gpu, dtype: dtype.dtype(), path },
        None => Forward::Cpu,
    };
    let mut failed = false;
    let reports: Vec<Result<diff::ModelReport, Error>> = match models.checkpoint_report(forward) {
        Some(report) => vec![report],
        None => models.presets()?.iter().map(|cfg| diff::analyse_on(cfg, forward)).collect(),
    };
    let count = reports.len();
    for report in reports {
        let report = report?;
        diff::print(&report);
        if let Some(file) = svg {
            let file = svg_path(file, &report.model, count);
            qwen_kernels::plot::write(&file, &qwen_kernels::plot::error_growth(&report)?)?;
            eprintln!("error growth: {}", file.display());
        }
        failed |= diff::rows(&report).iter().any(|r| !r.comparison.passed());
        println!();
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

struct GenerateArgs<'a> {
    checkpoint: &'a std::path::Path,
    prompt: Option<&'a str>,
    messages: Option<&'a std::path::Path>,
    system: Option<&'a str>,
    max_tokens: usize,
    chat: bool,
    dtype: DType,
    device: usize,
    show_ids: bool,
    sampling: SamplingParams,
    samples: usize,
    decode_path: DecodePath,
}

fn run_generate(a: GenerateArgs) -> Result<ExitCode, Error> {
    use std::io::Write as _;
    let tokenizer = Tokenizer::from_checkpoint(a.checkpoint)?;
    // A conversation (--messages, or the prompt as a user message with --chat or --system) is
    // rendered by the chat template; a plain prompt is the text itself.
    let conversation = match (a.messages, a.prompt) {
        (Some(file), _) => Some(Conversation::from_file(file)?),
        (None, Some(prompt)) if a.chat || a.system.is_some() => Some(Conversation::user(prompt)),
        _ => None,
    };
    let text = match conversation {
        Some(mut c) => {
            if let Some(system) = a.system {
                c.set_system(system);
            }
            tokenizer.render_chat(&c.messages, c.tools.as_ref(), true)?
        }
        None => a.prompt.unwrap_or_default().to_string(),
    };
    let prompt = tokenizer.encode(&text)?;
    let config_text = std::fs::read_to_string(a.checkpoint.join("config.json"))
        .map_err(|e| Error::InvalidArgument { op: "checkpoint", detail: format!("cannot read {}/config.json: {e}", a.checkpoint.display()) })?;
    let config = Qwen2Config::from_hf_json("checkpoint", &config_text)?;
    if prompt.is_empty() || prompt.len() >= config.max_position_embeddings {
        return Err(Error::InvalidArgument { op: "generate", detail: format!("a prompt of {} tokens: it must be 1..{} (max_position_embeddings)", prompt.len(), config.max_position_embeddings) });
    }
    let (gpu, _) = open_device(a.device)?;
    let max_new = a.max_tokens.min(config.max_position_embeddings - prompt.len());
    if a.samples == 0 {
        return Err(Error::InvalidArgument { op: "generate", detail: "--samples 0: at least one continuation".into() });
    }
    a.sampling.validate()?;
    let options = ModelOptions { prefill_chunk: prompt.len().clamp(1, 512), decode_path: a.decode_path, ..ModelOptions::new(a.dtype, a.samples, prompt.len() + max_new.max(1)) };
    let mut model = DeviceModel::from_checkpoint(&gpu, a.checkpoint, options)?;
    let mem = model.memory();
    eprintln!(
        "{} on {}, {}: a prompt of {} tokens; {} of weights, {} of KV cache, {} of workspace",
        a.checkpoint.display(),
        gpu.describe(),
        a.dtype,
        prompt.len(),
        human_bytes(mem.weights),
        human_bytes(mem.kv_cache),
        human_bytes(mem.workspace)
    );
    if a.show_ids {
        eprintln!("prompt ids: {prompt:?}");
    }
    let mut stream = tokenizer.stream_decoder();
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock, piece: &str| {
        out.write_all(piece.as_bytes()).and_then(|_| out.flush()).map_err(|e| Error::InvalidArgument { op: "generate", detail: format!("cannot write to stdout: {e}") })
    };
    if a.samples > 1 {
        let gs = model.generate_samples(&gpu, &prompt, a.samples, max_new, tokenizer.eos_ids(), a.sampling, |_, _| Ok(()))?;
        for (i, g) in gs.iter().enumerate() {
            let mut stream = tokenizer.stream_decoder();
            write(&mut out, &format!("--- sample {i} (seed {}) ---\n", a.sampling.seed.wrapping_add(i as u64)))?;
            for &id in &g.tokens {
                write(&mut out, &stream.push(id)?)?;
            }
            write(&mut out, &stream.finish()?)?;
            write(&mut out, "\n")?;
            if a.show_ids {
                eprintln!("sample {i} ids: {:?}", g.tokens);
            }
        }
        let tokens: usize = gs.iter().map(|g| g.tokens.len()).sum();
        eprintln!("{} continuations, {tokens} tokens in {:.1} ms after a prefill of {:.1} ms", gs.len(), gs[0].decode_seconds * 1e3, gs[0].prefill_seconds * 1e3);
        return Ok(ExitCode::SUCCESS);
    }
    let g = model.generate_sampled(&gpu, 0, &prompt, max_new, tokenizer.eos_ids(), a.sampling, |id| write(&mut out, &stream.push(id)?))?;
    write(&mut out, &stream.finish()?)?;
    write(&mut out, "\n")?;
    if a.show_ids {
        eprintln!("generated ids: {:?}", g.tokens);
    }
    let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    eprintln!(
        "{}; prefill: {} tokens in {:.1} ms ({:.1} tokens/s); decode: {} tokens in {:.1} ms ({:.1} tokens/s)",
        if g.stopped_at_eos { "stopped at EOS" } else { "stopped at the token limit" },
        prompt.len(),
        g.prefill_seconds * 1e3,
        rate(prompt.len(), g.prefill_seconds),
        g.decode_steps(),
        g.decode_seconds * 1e3,
        rate(g.decode_steps(), g.decode_seconds)
    );
    Ok(ExitCode::SUCCESS)
}

/// 1536 -> "1.5 KiB".
fn human_bytes(n: usize) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", units[u]) }
}

fn parse_decode_path(s: &str) -> Result<DecodePath, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn run_profile(model: &str, batch: usize, context: usize, op: Option<&str>, decode_path: DecodePath, device: usize, svg: Option<&std::path::Path>) -> Result<ExitCode, Error> {
    let cfg = Qwen2Config::preset(model)
        .ok_or_else(|| Error::InvalidArgument { op: "--model", detail: format!("{model} is not one of {:?}", preset_names()) })?;
    let gpu = Gpu::any(device)?;
    let profile = qwen_kernels::profile::decode_step(&gpu, &cfg, batch, context, decode_path)?;
    let profile = match op {
        Some(op) => profile.only(op),
        None => profile,
    };
    print!("{}", profile.report());
    if let Some(file) = svg {
        qwen_kernels::plot::write(file, &qwen_kernels::plot::roofline(&profile.roofline())?)?;
        eprintln!("roofline: {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn run_info(device: usize) -> ExitCode {
    match kernels::TARGETS {
        Some(t) => match kernels::COMPUTE_CAP {
            Some(cap) => println!("kernels: built for {t} (CUDA_COMPUTE_CAP={cap} at build time)"),
            None => println!("kernels: built for {t}"),
        },
        None => println!("kernels: NOT built ({})", Error::KernelsNotBuilt),
    }
    for r in kernels::resources() {
        println!(
            "  {:<28} {:<6} {:>3} registers, {:>4} B stack, {:>4} B spill stores, {:>4} B spill loads",
            r.kernel, r.target, r.registers, r.stack_frame_bytes, r.spill_store_bytes, r.spill_load_bytes
        );
    }
    match Gpu::any(device) {
        Ok(gpu) => {
            let i = gpu.info();
            println!("device: {}, {:.1} GiB", gpu.describe(), i.total_memory_bytes as f64 / (1u64 << 30) as f64);
            match qwen_kernels::telemetry::read(&gpu) {
                Ok(t) => println!("  telemetry: {t}"),
                Err(why) => println!("  telemetry: none ({why})"),
            }
            if let Ok((custom, ucontext)) = gpu.software_switch_ns() {
                println!("  fiber switch: {custom:.1} ns (hand-written), {ucontext:.1} ns (ucontext) on this CPU");
            }
            if let Err(e) = gpu.blas() {
                println!("cuBLAS: {e}");
            }
        }
        Err(e) => println!("device: none ({e})"),
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (what, result) = match &cli.command {
        Command::Check { backend, decode_path, device, models } => ("check", run_check(*backend, *decode_path, *device, models)),
        Command::Diff { backend, dtype, decode_path, device, svg, models } => ("diff", run_diff(*backend, *dtype, *decode_path, *device, svg.as_deref(), models)),
        Command::Generate { checkpoint, prompt, messages, system, max_tokens, chat, dtype, device, show_ids, temperature, top_k, top_p, min_p, seed, samples, decode_path } => (
            "generate",
            run_generate(GenerateArgs {
                sampling: if temperature.is_none() && top_k.is_none() && top_p.is_none() && min_p.is_none() {
                    SamplingParams::greedy()
                } else {
                    SamplingParams { temperature: temperature.unwrap_or(1.0), top_k: top_k.unwrap_or(0), top_p: top_p.unwrap_or(1.0), min_p: min_p.unwrap_or(0.0), seed: *seed }
                },
                samples: *samples,
                decode_path: *decode_path,
                checkpoint,
                prompt: prompt.as_deref(),
                messages: messages.as_deref(),
                system: system.as_deref(),
                max_tokens: *max_tokens,
                chat: *chat,
                dtype: dtype.dtype(),
                device: *device,
                show_ids: *show_ids,
            }),
        ),
        Command::Profile { model, batch, context, op, decode_path, device, svg } => {
            ("profile", run_profile(model, *batch, *context, op.as_deref(), *decode_path, *device, svg.as_deref()))
        }
        Command::Info { device } => return run_info(*device),
    };
    result.unwrap_or_else(|e| {
        eprintln!("qwen-kernels {what}: {e}");
        ExitCode::FAILURE
    })
}
