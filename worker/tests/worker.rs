//! The real worker binary on a generated tiny model: generation, seeded
//! determinism, protocol rejections, model-path refusals, crash handling.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use airlock_formats::protocol::{
    send, write_frame, ErrorKind, FinishReason, GenerateRequest, Message, Request, Response, Role,
    MAX_FRAME_LEN,
};
use airlock_worker::client::{
    count, generate, receive, spawn_local, wait_ready, wait_ready_info, ClientError,
};
use airlock_worker::modelgen::{write_model, Preset, Quant};

const WORKER: &str = env!("CARGO_BIN_EXE_airlock-worker");

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut f = std::fs::File::create(dir.path().join("tiny.gguf")).unwrap();
        write_model(&mut f, "tiny", Preset::Tiny.shape(), Quant::Q8_0, 1).unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Fixture { dir }
    }
    fn model(&self) -> PathBuf {
        self.dir.path().join("tiny.gguf")
    }
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    fn args(&self, model: &Path) -> Vec<String> {
        vec![
            "--model".into(),
            model.display().to_string(),
            "--threads".into(),
            "1".into(),
        ]
    }
}

fn request(seed: u64, temperature: f32) -> GenerateRequest {
    GenerateRequest {
        messages: vec![
            Message {
                role: Role::System,
                content: "You are terse.".into(),
            },
            Message {
                role: Role::User,
                content: "Summarise the quarterly report in one line.".into(),
            },
        ],
        max_tokens: 12,
        temperature,
        top_p: 0.95,
        seed,
        stop: vec![],
    }
}

/// Waits for the child with a deadline: a hang is a test failure, not a hang.
fn wait(child: &mut std::process::Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("worker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(fx: &Fixture) -> airlock_worker::client::WorkerProcess {
    let mut w = spawn_local(Path::new(WORKER), fx.args(&fx.model()), None).unwrap();
    wait_ready(&mut w.conn).unwrap();
    w
}

#[test]
fn loads_tiny_model_generates_and_shuts_down() {
    let fx = Fixture::new();
    let mut w = start(&fx);
    let (text, stats) = generate(&mut w.conn, &request(1, 0.0)).unwrap();
    assert!(stats.prompt_tokens > 10, "{stats:?}");
    assert!((1..=12).contains(&stats.decode_tokens), "{stats:?}");
    assert!(stats.decode_tok_per_s > 0.0 && stats.prompt_tok_per_s > 0.0);
    assert!(stats.peak_rss_kib > 1000);
    if stats.decode_tokens == 12 {
        assert_eq!(stats.finish_reason, FinishReason::Length);
    }
    assert!(!text.is_empty() || stats.decode_tokens < 12);
    send(&mut w.conn, &Request::Shutdown).unwrap();
    assert!(wait(&mut w.child, Duration::from_secs(30)).success());
}

/// `Count` gives the tokenizer's count (the same ids `--tokenize` prints), no template, no
/// BOS; the worker keeps serving after it, and `Ready` carries the GGUF's context length.
#[test]
fn count_gives_the_tokenizers_count_and_ready_the_context_length() {
    let fx = Fixture::new();
    let mut w = spawn_local(Path::new(WORKER), fx.args(&fx.model()), None).unwrap();
    let (_, ctx) = wait_ready_info(&mut w.conn).unwrap();
    assert_eq!(ctx, Some(2048), "the tiny preset's llama.context_length");
    let long = "The quarterly report, page 12: revenue rose. ".repeat(2000);
    for text in [
        "",
        "Summarise the quarterly report in one line.",
        long.as_str(),
    ] {
        let out = Command::new(WORKER)
            .args(fx.args(&fx.model()))
            .arg("--tokenize")
            .arg(text)
            .output()
            .unwrap();
        assert!(out.status.success());
        let ids: Vec<u32> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            count(&mut w.conn, text).unwrap(),
            ids.len() as u64,
            "{}",
            text.len()
        );
    }
    assert_eq!(count(&mut w.conn, "").unwrap(), 0);
    let (_, stats) = generate(&mut w.conn, &request(1, 0.0)).unwrap();
    assert!(stats.decode_tokens > 0);
    send(&mut w.conn, &Request::Shutdown).unwrap();
    assert!(wait(&mut w.child, Duration::from_secs(30)).success());
}

#[test]
fn same_seed_same_tokens_across_processes_and_requests() {
    let fx = Fixture::new();
    let run = |seed| {
        let mut w = start(&fx);
        let a = generate(&mut w.conn, &request(seed, 0.9)).unwrap().0;
        let b = generate(&mut w.conn, &request(seed, 0.9)).unwrap().0;
        drop(w.conn);
        assert!(wait(&mut w.child, Duration::from_secs(30)).success());
        assert_eq!(a, b, "same process, same seed");
        a
    };
    let first = run(7);
    assert!(!first.is_empty());
    assert_eq!(first, run(7), "fresh process, same seed");
    assert_ne!(first, run(8), "other seed");
}

#[test]
fn greedy_is_deterministic() {
    let fx = Fixture::new();
    let mut w = start(&fx);
    let a = generate(&mut w.conn, &request(1, 0.0)).unwrap().0;
    let b = generate(&mut w.conn, &request(99, 0.0)).unwrap().0;
    assert_eq!(a, b, "temperature 0 ignores the seed");
}

fn expect_error(w: &mut airlock_worker::client::WorkerProcess, kind: ErrorKind, needle: &str) {
    match receive(&mut w.conn).unwrap() {
        Response::Error { kind: k, reason } => {
            assert_eq!(k, kind, "{reason}");
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        other => panic!("expected error, got {other:?}"),
    }
}

#[test]
fn protocol_errors_get_error_replies_and_the_worker_keeps_serving() {
    let fx = Fixture::new();
    let mut w = start(&fx);

    write_frame(&mut w.conn, br#"{"v":9,"msg":"shutdown"}"#).unwrap();
    expect_error(
        &mut w,
        ErrorKind::UnsupportedVersion,
        "unsupported protocol version 9",
    );

    write_frame(&mut w.conn, b"\x00garbage").unwrap();
    expect_error(&mut w, ErrorKind::MalformedFrame, "malformed frame");

    w.conn.write_all(&0u32.to_le_bytes()).unwrap();
    expect_error(&mut w, ErrorKind::MalformedFrame, "length is zero");

    let big = MAX_FRAME_LEN + 1;
    w.conn.write_all(&big.to_le_bytes()).unwrap();
    w.conn.write_all(&vec![b' '; big as usize]).unwrap();
    expect_error(
        &mut w,
        ErrorKind::FrameTooLarge,
        "frame too large: 4194305 bytes",
    );

    let mut bad = request(1, 0.5);
    bad.max_tokens = 0;
    send(&mut w.conn, &Request::Generate(bad)).unwrap();
    expect_error(&mut w, ErrorKind::InvalidRequest, "max_tokens 0");

    // Still serving.
    let (_, stats) = generate(&mut w.conn, &request(1, 0.0)).unwrap();
    assert!(stats.decode_tokens > 0);
    send(&mut w.conn, &Request::Shutdown).unwrap();
    assert!(wait(&mut w.child, Duration::from_secs(30)).success());
}

#[test]
fn truncated_frame_ends_the_worker_with_a_status_not_a_hang() {
    let fx = Fixture::new();
    let mut w = start(&fx);
    w.conn.write_all(&100u32.to_le_bytes()).unwrap();
    w.conn.write_all(b"{\"v\":1").unwrap();
    drop(w.conn);
    let st = wait(&mut w.child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(3));
}

#[test]
fn crash_mid_generation_reaches_the_spawner_as_exit_status() {
    let fx = Fixture::new();
    let mut w = start(&fx);
    let mut req = request(1, 0.0);
    req.max_tokens = 2000;
    send(&mut w.conn, &Request::Generate(req)).unwrap();
    // First token arrives, then the worker "crashes".
    assert!(matches!(
        receive(&mut w.conn).unwrap(),
        Response::Token { .. }
    ));
    // SIGABRT, as from a failed allocation or an abort (a SIGSEGV sent with
    // kill(2) would be caught and ignored by Rust's stack-overflow handler); the
    // worker's handler ends it with exit status 134 (see cli::EXIT_ABORT).
    let pid = w.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-ABRT", &pid])
        .status()
        .unwrap()
        .success());
    let st = wait(&mut w.child, Duration::from_secs(30));
    assert_eq!(st.code(), Some(airlock_worker::cli::EXIT_ABORT), "{st:?}");
    // The connection reports the end instead of blocking.
    loop {
        match receive(&mut w.conn) {
            Ok(Response::Token { .. }) => continue,
            Err(ClientError::Closed) | Err(ClientError::Receive(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn load_failure(fx: &Fixture, model: &Path, rlimit_as: Option<u64>) -> (String, ExitStatus) {
    let mut cmd_args = fx.args(model);
    cmd_args.push("--max-seqs".into());
    cmd_args.push("1".into());
    let mut w = spawn_local(Path::new(WORKER), cmd_args, rlimit_as).unwrap();
    let reason = match wait_ready(&mut w.conn) {
        Err(ClientError::Worker {
            kind: ErrorKind::ModelLoad,
            reason,
        }) => reason,
        other => panic!("expected a model-load error, got {other:?}"),
    };
    (reason, wait(&mut w.child, Duration::from_secs(30)))
}

#[test]
fn missing_model_path_is_refused_before_mistralrs() {
    let fx = Fixture::new();
    // Looks like a Hub id: mistral.rs would try to download it.
    let (reason, st) = load_failure(&fx, Path::new("TheBloke/Llama-2-7B-GGUF/llama.gguf"), None);
    assert_eq!(
        reason,
        "model TheBloke/Llama-2-7B-GGUF/llama.gguf: cannot resolve path: No such file or directory (os error 2)"
    );
    assert_eq!(st.code(), Some(2));
}

#[test]
fn missing_model_never_opens_a_network_socket() {
    let fx = Fixture::new();
    let trace = fx.dir.path().join("strace.txt");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=socket,connect", "-o"])
        .arg(&trace)
        .arg(WORKER)
        .args(fx.args(Path::new("TheBloke/Llama-2-7B-GGUF/llama.gguf")))
        .args(["--oneshot", "hi"])
        .env("HOME", fx.home())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot resolve path"));
    let t = std::fs::read_to_string(&trace).unwrap();
    assert!(!t.contains("socket("), "{t}");
    assert!(!t.contains("connect("), "{t}");
}

#[test]
fn generation_opens_no_network_socket() {
    let fx = Fixture::new();
    let trace = fx.dir.path().join("strace.txt");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=socket,socketpair,connect,bind",
            "-o",
        ])
        .arg(&trace)
        .arg(WORKER)
        .args(fx.args(&fx.model()))
        .args(["--oneshot", "hello", "--max-tokens", "4"])
        .env("HOME", fx.home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = std::fs::read_to_string(&trace).unwrap();
    for family in ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"] {
        assert!(!t.contains(family), "{family} in:\n{t}");
    }
    assert!(!t.contains("connect("), "{t}");
}

#[test]
fn non_gguf_file_is_refused_cleanly() {
    let fx = Fixture::new();
    let p = fx.dir.path().join("notes.gguf");
    std::fs::write(&p, b"This is a text file, not a model.\n").unwrap();
    let (reason, st) = load_failure(&fx, &p, None);
    assert!(
        reason.ends_with("notes.gguf: not a GGUF file (bad magic)"),
        "{reason}"
    );
    assert_eq!(st.code(), Some(2));

    let d = fx.dir.path().join("adir");
    std::fs::create_dir(&d).unwrap();
    let (reason, _) = load_failure(&fx, &d, None);
    assert!(reason.ends_with("adir: not a regular file"), "{reason}");
}

#[test]
fn truncated_gguf_is_refused_cleanly() {
    let fx = Fixture::new();
    let full = std::fs::read(fx.model()).unwrap();
    let p = fx.dir.path().join("cut.gguf");
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    let (reason, st) = load_failure(&fx, &p, None);
    assert!(reason.starts_with("loading model cut.gguf: "), "{reason}");
    assert_eq!(st.code(), Some(2));
}

#[test]
fn model_larger_than_the_memory_bound_is_refused_with_reason() {
    let fx = Fixture::new();
    let p = fx.dir.path().join("huge.gguf");
    let f = std::fs::File::create(&p).unwrap();
    (&f).write_all(b"GGUF").unwrap();
    f.set_len(8 << 30).unwrap(); // sparse: no disk used
    let (reason, st) = load_failure(&fx, &p, Some(2 << 30));
    assert!(
        reason.ends_with(
            "huge.gguf: file is 8589934592 bytes, larger than the worker's memory limit of 2147483648 bytes"
        ),
        "{reason}"
    );
    assert_eq!(st.code(), Some(2));
}

#[test]
fn modelgen_binary_is_deterministic() {
    let fx = Fixture::new();
    let gen = env!("CARGO_BIN_EXE_airlock-modelgen");
    let out = |name: &str, seed: &str| {
        let p = fx.dir.path().join(name);
        let st = Command::new(gen)
            .args(["--preset", "tiny", "--seed", seed, "--out"])
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(p).unwrap()
    };
    let a = out("a.gguf", "3");
    assert_eq!(a, out("b.gguf", "3"));
    assert_ne!(a, out("c.gguf", "4"));
    // The library and the binary agree.
    let mut c = std::io::Cursor::new(Vec::new());
    write_model(
        &mut c,
        "airlock-test-tiny",
        Preset::Tiny.shape(),
        Quant::Q8_0,
        3,
    )
    .unwrap();
    assert_eq!(a, c.into_inner());
}
