//! The worker's command line and start-up order (shared by the shipped
//! `airlock-worker` binary and the benchmark's system-allocator variant).
//!
//! `airlock-worker --model /model/<file>.gguf [--threads N] [--fd 3] [--sandboxed]`
//! serves the frame protocol of `airlock_formats::protocol` on the inherited
//! descriptor; `--oneshot PROMPT` runs one request and prints the text to
//! stdout and the stats frame to stderr (for strace and the benchmark);
//! `--tokenize TEXT` prints the token ids of TEXT (tokenizer check).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use airlock_formats::escape;
use airlock_formats::protocol::{
    encode_payload, send, ErrorKind, GenerateRequest, Message, Response, Role,
};
use clap::Parser;

use crate::engine::{Engine, EngineOptions};
use crate::{bpe_tokenizer, fd, kernels_glue, model_file, session};

/// Exit status: the model could not be resolved or loaded.
const EXIT_MODEL: u8 = 2;
/// Exit status: the protocol connection failed.
const EXIT_PROTOCOL: u8 = 3;
/// Exit status: the sandbox's seccomp allowlist could not be installed.
const EXIT_SECCOMP: u8 = 4;
/// Exit status: generation failed in one-shot mode.
const EXIT_GENERATE: u8 = 5;
/// Exit status: the process aborted (128 + SIGABRT, as a shell reports it); chiefly Rust's
/// allocator when the address-space limit is reached ("memory allocation of N bytes failed").
pub const EXIT_ABORT: i32 = 134;

extern "C" fn exit_on_abort(_: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process at once.
    unsafe { libc::_exit(EXIT_ABORT) }
}

/// Makes `abort()` end the process with [`EXIT_ABORT`]. In the sandbox the worker is PID 1
/// of its namespace, and the kernel drops a signal it sends itself unless it has a handler:
/// glibc's `raise(SIGABRT)` would be ignored and `abort()` would end in its last resort, a
/// faulting instruction (SIGSEGV), indistinguishable from a crash. With this handler an
/// allocation failure reaches the supervisor as exit status 134.
fn exit_on_abort_signal() -> Result<(), String> {
    // SAFETY: sigaction is plain data; all-zero is a valid value (empty mask, no flags).
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = exit_on_abort as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that only calls the async-signal-safe _exit; `sa` is a
    // valid, initialised sigaction and the old action is not asked for.
    let rc = unsafe { libc::sigaction(libc::SIGABRT, &sa, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

#[derive(Parser, Debug)]
#[command(
    name = "airlock-worker",
    about = "Airlock inference worker (mistral.rs)"
)]
struct Args {
    /// Local GGUF model file (never fetched from anywhere).
    #[arg(long)]
    model: PathBuf,
    /// Compute threads (candle/rayon); default: all CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Inherited socketpair end carrying the protocol.
    #[arg(long, default_value_t = 3)]
    fd: i32,
    /// Install the strict seccomp allowlist before anything else runs.
    #[arg(long)]
    sandboxed: bool,
    /// Run one request with this user prompt instead of serving the protocol.
    #[arg(long)]
    oneshot: Option<String>,
    /// Print the token ids of this text (JSON array on stdout) and exit: the
    /// model's tokenizer as mistral.rs builds it, no chat template, no BOS.
    #[arg(long, conflicts_with = "oneshot")]
    tokenize: Option<String>,
    /// System prompt of the one-shot request.
    #[arg(long)]
    system: Option<String>,
    /// One-shot: most tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_tokens: u32,
    /// One-shot: temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// One-shot: nucleus mass.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// One-shot: sampler seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lever: keep mistral.rs's prefix cache.
    #[arg(long)]
    prefix_cache: bool,
    /// Lever: scheduler's maximum of concurrent sequences.
    #[arg(long, default_value_t = 1)]
    max_seqs: usize,
    /// Lever: paged attention.
    #[arg(long)]
    paged_attn: bool,
    /// Lever: tokio worker threads driving the engine.
    #[arg(long, default_value_t = 1)]
    tokio_threads: usize,
}

/// Installs the sandbox's strict allowlist (stage 2 of DESIGN.md's seccomp).
fn install_allowlist() -> Result<(), String> {
    airlock_sandbox::seccomp::install_worker_allowlist().map_err(|e| e.to_string())
}

/// Runs the worker with the process's command line; returns its exit status.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = exit_on_abort_signal() {
        eprintln!("airlock-worker: installing the SIGABRT handler: {e}");
        return ExitCode::from(EXIT_SECCOMP);
    }
    // Our CPU kernels, hooked into candle/mistral.rs before the model loads.
    match kernels_glue::Selection::parse(std::env::var(kernels_glue::ENV).ok().as_deref()) {
        Ok(sel) => kernels_glue::install(sel),
        Err(e) => {
            eprintln!("airlock-worker: {}", escape::text(&e));
            return ExitCode::from(EXIT_PROTOCOL);
        }
    }
    // Still single-threaded here: the environment can be changed safely.
    if let Some(n) = args.threads {
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    let conn = if args.oneshot.is_none() && args.tokenize.is_none() {
        match fd::take_inherited(args.fd) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("airlock-worker: {}", escape::text(&e.to_string()));
                return ExitCode::from(EXIT_PROTOCOL);
            }
        }
    } else {
        None
    };
    if args.sandboxed {
        // Before any tokio/rayon thread exists and before any request is read.
        if let Err(e) = install_allowlist() {
            eprintln!("airlock-worker: installing seccomp allowlist: {e}");
            return ExitCode::from(EXIT_SECCOMP);
        }
    }
    let opts = EngineOptions {
        prefix_cache: args.prefix_cache,
        max_seqs: args.max_seqs,
        paged_attn: args.paged_attn,
        tokio_threads: args.tokio_threads,
    };
    match (conn, &args.tokenize) {
        (Some(conn), _) => serve(&args, &opts, conn),
        (None, Some(text)) => tokenize(&args, &opts, text),
        (None, None) => oneshot(&args, &opts),
    }
}

fn load(args: &Args, opts: &EngineOptions) -> Result<(Engine, String, u64), String> {
    let t0 = Instant::now();
    let file = model_file::resolve(&args.model).map_err(|e| e.to_string())?;
    // The tokenizer files go to TMPDIR (the sandbox's /scratch, a tmpfs that
    // dies with the job, where the allowlist has no unlink); outside the
    // sandbox they are removed once the model is loaded.
    let tokenizer_dir =
        bpe_tokenizer::prepare(&file.path, &std::env::temp_dir()).map_err(|e| e.to_string())?;
    let engine = Engine::load(&file, opts, tokenizer_dir.as_deref());
    if let (Some(dir), false) = (&tokenizer_dir, args.sandboxed) {
        let _ = std::fs::remove_dir_all(dir);
    }
    let engine = engine.map_err(|e| e.to_string())?;
    let ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((engine, file.file_name, ms))
}

fn serve(args: &Args, opts: &EngineOptions, mut conn: std::fs::File) -> ExitCode {
    let (engine, model, load_ms) = match load(args, opts) {
        Ok(x) => x,
        Err(reason) => {
            eprintln!("airlock-worker: {}", escape::text(&reason));
            let _ = send(
                &mut conn,
                &Response::Error {
                    kind: ErrorKind::ModelLoad,
                    reason,
                },
            );
            return ExitCode::from(EXIT_MODEL);
        }
    };
    let ready = Response::Ready {
        model,
        load_ms,
        context_length: engine.context_length(),
    };
    if let Err(e) = send(&mut conn, &ready) {
        eprintln!("airlock-worker: {}", escape::text(&e.to_string()));
        return ExitCode::from(EXIT_PROTOCOL);
    }
    match session::serve(&mut conn, &engine) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock-worker: {}", escape::text(&e.to_string()));
            ExitCode::from(EXIT_PROTOCOL)
        }
    }
}

fn tokenize(args: &Args, opts: &EngineOptions, text: &str) -> ExitCode {
    let (engine, _, _) = match load(args, opts) {
        Ok(x) => x,
        Err(reason) => {
            eprintln!("airlock-worker: {}", escape::text(&reason));
            return ExitCode::from(EXIT_MODEL);
        }
    };
    match engine.tokenize(text) {
        Ok(ids) => {
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            println!("[{}]", list.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlock-worker: {}", escape::text(&e.to_string()));
            ExitCode::from(EXIT_GENERATE)
        }
    }
}

fn oneshot(args: &Args, opts: &EngineOptions) -> ExitCode {
    let (engine, model, load_ms) = match load(args, opts) {
        Ok(x) => x,
        Err(reason) => {
            eprintln!("airlock-worker: {}", escape::text(&reason));
            return ExitCode::from(EXIT_MODEL);
        }
    };
    eprintln!(
        "airlock-worker: loaded {} in {load_ms} ms",
        escape::text(&model)
    );
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message {
            role: Role::System,
            content: s.clone(),
        });
    }
    messages.push(Message {
        role: Role::User,
        content: args.oneshot.clone().unwrap_or_default(),
    });
    let req = GenerateRequest {
        messages,
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        stop: Vec::new(),
    };
    if let Err(reason) = req.validate() {
        eprintln!("airlock-worker: invalid request: {}", escape::text(&reason));
        return ExitCode::from(EXIT_GENERATE);
    }
    let mut out = std::io::stdout().lock();
    // Model text reaches a terminal here: controls, C1 and bidi overrides are shown escaped.
    let printed = |t: &str| out.write_all(escape::multiline(t).as_bytes()).is_ok();
    match engine.generate(&req, printed) {
        Ok(stats) => {
            let _ = writeln!(out);
            let line = encode_payload(&Response::Done(stats)).unwrap_or_default();
            eprintln!("{}", String::from_utf8_lossy(&line));
            let (attention, qmatmul) = kernels_glue::calls();
            eprintln!("airlock-worker: kernel calls: attention {attention}, qmatmul {qmatmul}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("airlock-worker: {}", escape::text(&e.to_string()));
            ExitCode::from(EXIT_GENERATE)
        }
    }
}
