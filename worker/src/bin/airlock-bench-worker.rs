//! Benchmark driver for `scripts/bench-worker`: runs the worker (unsandboxed,
//! or through the sandbox's spawn path) on a model, sends a warm-up request
//! then one request per prompt file, and prints one line of figures per prompt.
//!
//! Output lines: `mode=<m> prompt=<name> prompt_tokens=N prompt_tps=X
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
        bench(args, "sandboxed", &mut conn)?;
        let st = process.wait().map_err(|e| e.to_string())?;
        if st != airlock_sandbox::ExitStatus::Exited(0) {
            return Err(format!("sandboxed worker ended with {st}"));
        }
        return Ok(());
    }
    let mut w = spawn_local(&args.worker, &wargs, None).map_err(|e| e.to_string())?;
    bench(args, "unsandboxed", &mut w.conn)?;
    let st = w.child.wait().map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("worker exited with {st}"));
    }
    Ok(())
}

fn bench(args: &Args, mode: &str, conn: &mut std::os::unix::net::UnixStream) -> Result<(), String> {
    let w = conn;
    let load_ms = wait_ready(w).map_err(|e| e.to_string())?;
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
