//! The supervisor's worker driver (`infer.rs`) on the real release `airlock-worker`, spawned
//! through every sandbox layer on a generated tiny GGUF: start, count, generate, shutdown;
//! a worker that runs out of memory or is killed is reported with its reason; dropping the
//! driver leaves no process.
//!
//! Needs root (the sandbox) and the release `airlock-worker` and `airlock-modelgen` next to
//! `airlock-init` (built by `cargo build --release --workspace --bins`), or their paths in
//! `AIRLOCK_WORKER` / `AIRLOCK_MODELGEN`; without them each test says why and passes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_formats::protocol::GenerateRequest;
use airlock_sandbox::{Limits, Spec};
use airlock_supervisor::infer::{chat_messages, InferError, Worker};

const READY_WITHIN: Duration = Duration::from_secs(60);

fn sibling(env: &str, name: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_airlock-init")).with_file_name(name))
}

/// A tiny model in a temporary directory and the worker binary, or why the test cannot run.
struct Fixture {
    dir: tempfile::TempDir,
    worker: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        Fixture::with_preset(test, "tiny")
    }

    /// `preset`: `tiny` (294 KB) or `bench` (120 MB, about a second to write).
    fn with_preset(test: &str, preset: &str) -> Option<Fixture> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("{test}: skipped: the sandbox needs root");
            return None;
        }
        let worker = sibling("AIRLOCK_WORKER", "airlock-worker");
        let modelgen = sibling("AIRLOCK_MODELGEN", "airlock-modelgen");
        for bin in [&worker, &modelgen] {
            if !bin.is_file() {
                eprintln!(
                    "{test}: skipped: {} is missing (cargo build --release --workspace --bins)",
                    bin.display()
                );
                return None;
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(&modelgen)
            .args(["--preset", preset, "--seed", "1", "--out"])
            .arg(dir.path().join("model.gguf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Fixture { dir, worker })
    }

    /// The spec `model_check::worker_spec` builds, on this model directory.
    fn spec(&self, address_space: Option<u64>) -> Spec {
        let mut spec = Spec::new(&self.worker);
        spec.model_dir = Some(self.dir.path().to_path_buf());
        spec.limits = Limits {
            address_space,
            ..Limits::default()
        };
        spec
    }

    fn start(&self, address_space: Option<u64>) -> Result<Worker, InferError> {
        Worker::start(
            self.spec(address_space),
            "model.gguf",
            &["--threads".into(), "1".into()],
            READY_WITHIN,
        )
    }
}

fn request(max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: chat_messages(
            "Answer briefly.",
            "Document:\nThe audit found two issues.\n\nQuestion: what did the audit find?",
        ),
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 1,
        stop: vec![],
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn start_count_generate_and_finish_through_the_sandbox() {
    let Some(fx) = Fixture::new("start_count_generate_and_finish_through_the_sandbox") else {
        return;
    };
    let mut w = fx.start(Limits::default().address_space).unwrap();
    assert_eq!(w.model(), "model.gguf");
    assert_eq!(w.context_length(), Some(2048), "the tiny preset's context");

    let short = "The audit found two issues.";
    let n_short = w.count(short).unwrap();
    assert!(n_short > 0);
    let long = short.repeat(20_000); // 540 KB
    for (text, check) in [
        ("", &(|n: usize| n == 0) as &dyn Fn(usize) -> bool),
        (short, &|n| n == n_short),
        (&long, &|n| n > n_short * 10_000),
    ] {
        let n = w.count(text).unwrap();
        assert!(check(n), "{} bytes: {n} tokens", text.len());
    }

    let mut pieces = Vec::new();
    let (text, stats) = w
        .generate(&request(12), &mut |t| pieces.push(t.to_string()))
        .unwrap();
    assert!(!pieces.is_empty());
    assert_eq!(text.as_str(), pieces.concat());
    assert!(stats.prompt_tokens > n_short as u64, "{stats:?}");
    assert!((1..=12).contains(&stats.decode_tokens), "{stats:?}");
    // The worker keeps serving after a generation.
    assert_eq!(w.count(short).unwrap(), n_short);
    let pid = w.pid();
    w.finish().unwrap();
    assert!(!alive(pid), "worker {pid} still there after finish");
}

/// The 120 MB bench model passes the worker's own check (file smaller than the limit) but
/// its tensors, the 78 MB static binary and the runtime do not fit in 240 MiB: Rust's
/// allocator aborts the worker ("memory allocation of 98304000 bytes failed") while it
/// loads, which its SIGABRT handler turns into exit status 134 (a PID 1 cannot deliver
/// SIGABRT to itself; without the handler the abort ends as SIGSEGV). Measured: the same
/// reason for every limit from 180 to 400 MiB.
#[test]
fn an_address_space_too_small_for_the_model_is_out_of_memory() {
    let test = "an_address_space_too_small_for_the_model_is_out_of_memory";
    let Some(fx) = Fixture::with_preset(test, "bench") else {
        return;
    };
    const LIMIT_MIB: u64 = 240;
    match fx.start(Some(LIMIT_MIB << 20)) {
        Err(e) => assert_eq!(
            e.to_string(),
            format!("loading the model: the worker ran out of memory (address-space limit {LIMIT_MIB} MiB)")
        ),
        Ok(_) => panic!("the model loaded in {LIMIT_MIB} MiB"),
    }
}

/// Killed in the middle of a generation (no address-space limit, so SIGKILL is not read as
/// the kernel's out-of-memory kill): a crash with its signal; the pid is gone.
#[test]
fn a_worker_killed_mid_generation_is_a_crash() {
    let Some(fx) = Fixture::new("a_worker_killed_mid_generation_is_a_crash") else {
        return;
    };
    let mut w = fx.start(None).unwrap();
    let pid = w.pid();
    let mut tokens = 0;
    let r = w.generate(&request(2000), &mut |_| {
        tokens += 1;
        if tokens == 1 {
            // SAFETY: kill(2) on the worker's host pid; it is alive (it just sent a token)
            // and not yet reaped, so the pid cannot have been recycled.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        }
    });
    match r {
        Err(e) => assert_eq!(
            e.to_string(),
            "generating: the worker crashed (signal 9, SIGKILL)"
        ),
        Ok((_, stats)) => panic!("generation survived the kill: {stats:?}"),
    }
    assert!(!alive(pid));
    // Later calls fail at once and say so.
    match w.count("x") {
        Err(e) => assert_eq!(
            e.to_string(),
            "counting tokens: the worker is no longer running"
        ),
        Ok(n) => panic!("a dead worker counted {n}"),
    }
    w.finish().unwrap();
}

/// Dropping the driver, idle or with a request half read, ends and reaps the worker.
#[test]
fn drop_leaves_no_process() {
    let Some(fx) = Fixture::new("drop_leaves_no_process") else {
        return;
    };
    for midway in [false, true] {
        let mut w = fx.start(Limits::default().address_space).unwrap();
        let pid = w.pid();
        assert!(alive(pid));
        if midway {
            // A refused request (max_tokens 0) leaves the worker serving.
            let e = w.generate(&request(0), &mut |_| {}).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("generating: the worker refused: invalid request: max_tokens 0"),
                "{e}"
            );
        }
        drop(w);
        assert!(!alive(pid), "worker {pid} left behind (midway {midway})");
    }
}
