//! Benchmark driver for `scripts/bench-worker`: runs the worker (unsandboxed,
//! or through the sandbox's spawn path) on a model, sends a warm-up request
//! then one request per prompt file, and prints one line of figures per prompt.
//!
//! Output lines: `status mode=<m> Seccomp=".." ...` once, then `mode=<m> prompt=<name> prompt_tokens=N prompt_tps=X
//! decode_tokens=N decode_tps=X peak_rss_kib=N load_ms=N`

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_formats::protocol::{send, GenerateRequest, Message, Request, Role};
use airlock_worker::client::{generate, spawn_local, spawn_sandboxed, wait_ready};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Worker binary.
    #[arg(long)]
    worker: PathBuf,
    /// Model file.
    #[arg(long)]
    model: PathBuf,
    /// Compute threads.
    #[arg(long)]
    threads: usize,
    /// Tokens to generate per prompt.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Prompt files (name = file stem).
    #[arg(long = "prompt", required = true)]
    prompts: Vec<PathBuf>,
    /// Run through the sandbox spawn path.
    #[arg(long)]
    sandboxed: bool,
    /// Label printed as `mode=` instead of `unsandboxed`/`sandboxed` (lever runs).
    #[arg(long)]
    label: Option<String>,
    /// Extra worker arguments (levers), e.g. `--extra=--prefix-cache`.
    #[arg(long = "extra", allow_hyphen_values = true)]
    extra: Vec<String>,
}

fn request(text: String, max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message {
            role: Role::User,
            content: text,
        }],
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock-bench-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let mut wargs = vec![
        "--model".to_string(),
        args.model.display().to_string(),
        "--threads".to_string(),
        args.threads.to_string(),
    ];
    wargs.extend(args.extra.iter().cloned());
    if args.sandboxed {
        let w = spawn_sandboxed(
            &args.worker,
            &args.model,
            &wargs[2..],
            airlock_sandbox::Limits::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut process = w.process;
        let mut conn = w.conn;
        let mode = args.label.as_deref().unwrap_or("sandboxed");
        bench(args, mode, process.pid(), &mut conn)?;
        let st = process.wait().map_err(|e| e.to_string())?;
        if st != airlock_sandbox::ExitStatus::Exited(0) {
            return Err(format!("sandboxed worker ended with {st}"));
        }
        return Ok(());
    }
    let mut w = spawn_local(&args.worker, &wargs, None).map_err(|e| e.to_string())?;
    let pid = i32::try_from(w.child.id()).map_err(|e| e.to_string())?;
    let mode = args.label.as_deref().unwrap_or("unsandboxed");
    bench(args, mode, pid, &mut w.conn)?;
    let st = w.child.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("worker exited with {st}"));
    }
    Ok(())
}

/// Fields of `/proc/PID/status` that can make a sandboxed run slower than an
/// unsandboxed one (seccomp mode, speculation mitigations, CPU affinity).
const STATUS_FIELDS: [&str; 4] = [
    "Seccomp",
    "Speculation_Store_Bypass",
    "SpeculationIndirectBranch",
    "Cpus_allowed_list",
];

fn print_status(mode: &str, pid: i32) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        println!("status mode={mode} unreadable");
        return;
    };
    let fields: Vec<String> = status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| STATUS_FIELDS.contains(k))
        .map(|(k, v)| format!("{k}=\"{}\"", v.trim()))
        .collect();
    println!("status mode={mode} {}", fields.join(" "));
}

fn bench(
    args: &Args,
    mode: &str,
    pid: i32,
    conn: &mut std::os::unix::net::UnixStream,
) -> Result<(), String> {
    let w = conn;
    let load_ms = wait_ready(w).map_err(|e| e.to_string())?;
    print_status(mode, pid);
    // Warm-up: first-use costs (allocator arenas, thread pools) are not measured.
    generate(w, &request("Warm up.".into(), 4)).map_err(|e| e.to_string())?;
    for p in &args.prompts {
        let text =
            std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        let (_, s) = generate(w, &request(text, args.max_tokens)).map_err(|e| e.to_string())?;
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or("prompt");
        println!(
            "mode={mode} prompt={name} prompt_tokens={} prompt_tps={:.2} decode_tokens={} decode_tps={:.2} peak_rss_kib={} load_ms={load_ms}",
            s.prompt_tokens, s.prompt_tok_per_s, s.decode_tokens, s.decode_tok_per_s, s.peak_rss_kib
        );
    }
    send(w, &Request::Shutdown).map_err(|e| e.to_string())
}
